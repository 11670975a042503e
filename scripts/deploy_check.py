#!/usr/bin/env python3
"""Offline checks of the deployment files; called by scripts/validate-deploy.sh.

    deploy_check.py validate      render + schema-check the chart and k8s/
    deploy_check.py render-k8s    rewrite k8s/base/jyt.yaml from the chart

Needs the packages pinned in scripts/deploy-requirements.txt; run with a
Python that lacks them, it re-runs itself in .venv-deploy/ (which
scripts/validate-deploy.sh creates).

Rendering uses helm-python-sdk (Helm's own Go library through ctypes, no helm
binary, no cluster). Every rendered object is checked against the Kubernetes
OpenAPI schemas bundled in kubernetes-validate (strict: unknown fields are
errors); the ServiceMonitor and PrometheusRule CRDs, which those schemas
lack, against small local schemas in deploy/schemas/. Then cross-references
the API server would not catch (a Deployment naming a ConfigMap that is not
rendered, a selector matching no pod, a hospital missing from the gateway's
registry, an Ingress backend that is not rendered, gateway-search not
running the gateway's config, a pod given the internal master secret or
another service's key, an Ingress publishing /metrics or /readyz, a probe
or scrape off the ops port, the monitoring namespace admitted to an API
port, `helm test` signing with an app the gateway does not have).

Beyond single renders (validate, each named in its summary line):
  - values the chart must refuse (NEGATIVE_CASES), each with its message;
  - what rolls when one hospital changes, or one is added (restart_scope);
  - every PromQL expression of the PrometheusRule and the Grafana
    dashboard parses, and names only metrics the services register
    (read from their Rust sources) and labels those series carry.
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import json
import os
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / os.environ.get("JYT_DEPLOY_VENV", ".venv-deploy")


def _reexec_in_venv() -> None:
    """Without the pinned packages (a Debian system Python, say), run again
    with .venv-deploy/bin/python when scripts/validate-deploy.sh made it."""
    try:
        import helm_python  # noqa: F401
        import kubernetes_validate  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as e:
        python = VENV / "bin" / "python"
        if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
            os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
        sys.exit(f"deploy_check: {e.name} is missing; run scripts/validate-deploy.sh once (it creates {VENV.relative_to(ROOT)}/)")


_reexec_in_venv()

import yaml  # noqa: E402

CHART = ROOT / "helm" / "jyt"
K8S = ROOT / "k8s"
BASE_FILE = K8S / "base" / "jyt.yaml"
LOCAL_SCHEMAS = ROOT / "deploy" / "schemas"

# Values sets rendered and checked: (label, values files on top of values.yaml).
VALUE_SETS = [
    ("defaults", []),
    ("demo", ["values-demo.yaml"]),
    ("city-300", ["values-300.yaml"]),
]
RELEASE, NAMESPACE = "jyt", "jyt"
HOOK = "helm.sh/hook"


class Failure(Exception):
    pass


# ---------------------------------------------------------------- YAML


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's when PyYAML has it: seven times faster on the
    300-hospital render) that refuses duplicate keys: Kubernetes' own decoder
    does too, while PyYAML would silently keep the last one."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_docs(text: str, where: str) -> list[dict]:
    try:
        docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        raise Failure(f"{where}: not valid YAML: {e}") from None
    for d in docs:
        if not isinstance(d, dict):
            raise Failure(f"{where}: a document is not a mapping: {str(d)[:80]!r}")
    return docs


def merge(base: dict, over: dict) -> dict:
    """Helm's values coalescing for files: maps merge, everything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---------------------------------------------------------------- Helm


def values_for(files: list[str]) -> dict:
    values: dict = {}
    for f in files:
        path = CHART / f
        if not path.exists():
            raise Failure(f"values file {path.relative_to(ROOT)} is missing")
        values = merge(values, yaml.load(path.read_text(), Loader=StrictLoader) or {})
    return values


def render(values: dict, label: str) -> list[dict]:
    """Render the chart as `helm install` would; each object gets a
    `__source` (template path) for messages."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmError as e:
            raise Failure(f"[{label}] values do not match values.schema.json: {e}") from None
        try:
            out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:
            raise Failure(f"[{label}] template rendering failed: {e}") from None
    objects = []
    for template, text in sorted(out.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in load_docs(text, f"[{label}] {template}"):
            doc["__source"] = template
            objects.append(doc)
    return objects


# ---------------------------------------------------------------- schemas


@functools.lru_cache(maxsize=None)
def _local_schema(kind: str, api_version: str) -> dict | None:
    group_version = api_version.replace("/", "-").replace(".", "-")
    path = LOCAL_SCHEMAS / f"{kind.lower()}-{group_version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _install_schema_cache() -> None:
    """kubernetes-validate re-reads its multi-megabyte definitions file for
    every object; with 300 hospitals that is thousands of reads. Cache it."""
    import kubernetes_validate.utils as kvu

    if not hasattr(kvu.schema_contents, "cache_info"):
        kvu.schema_contents = functools.lru_cache(maxsize=None)(kvu.schema_contents)


def kube_version() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return str(chart["annotations"]["jyt.example/validated-kube-version"])


def validate_object(obj: dict, version: str) -> str | None:
    """None when valid, else a message."""
    import jsonschema
    import kubernetes_validate

    body = {k: v for k, v in obj.items() if k != "__source"}
    kind, api = body.get("kind"), body.get("apiVersion")
    if not kind or not api:
        return "missing kind or apiVersion"
    local = _local_schema(kind, api)
    try:
        if local is not None:
            jsonschema.Draft202012Validator(local).validate(body)
        else:
            kubernetes_validate.validate(body, version, strict=True)
    except jsonschema.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        return f"{path}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return f"{e.message} (and no local schema in deploy/schemas/)"
    return None


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def check_objects(objects: list[dict], label: str, version: str) -> list[str]:
    errors = []
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        src = obj.get("__source", "?")
        key = (obj.get("kind", ""), obj.get("metadata", {}).get("name", ""))
        if key in seen:
            errors.append(f"[{label}] {src}: {name_of(obj)} rendered twice")
        seen.add(key)
        msg = validate_object(obj, version)
        if msg:
            errors.append(f"[{label}] {src}: {name_of(obj)}: {msg}")
    errors += cross_references(objects, label)
    return errors


@functools.lru_cache(maxsize=None)
def _defaults(path: Path) -> dict:
    return tomllib.loads(path.read_text())


MAP_TABLES = {
    "gateway": {"hospitals": {"name": "", "base_url": "", "district": "", "level": ""}},
}

# Settings the services read that their defaults.toml cannot hold (an
# Option with no default value): chart key -> (source file, declaration).
# The chart may write them; the declaration must still exist.
OPTIONAL_KEYS = {
    "http.ops_port": ("shared/settings/src/lib.rs", "pub ops_port: Option<u16>"),
}


@functools.lru_cache(maxsize=None)
def _optional_key_declared(key: str) -> bool:
    path, declaration = OPTIONAL_KEYS[key]
    return declaration in (ROOT / path).read_text()


# Components that run another service's binary, and so read its settings:
# gateway-search is the gateway under another component label.
COMPONENT_SERVICE = {"gateway-search": "gateway"}


def _unknown_keys(rendered: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Keys of `rendered` missing from `defaults`. A defaults table whose
    values are all tables is a map (e.g. gateway [hospitals.<id>]): any
    entry name is allowed, its fields are checked against the first entry."""
    out = []
    for k, v in rendered.items():
        d = defaults.get(k)
        if d is None and defaults and all(isinstance(x, dict) for x in defaults.values()):
            d = next(iter(defaults.values()))
        if d is None:
            out.append(prefix + k)
        elif isinstance(v, dict) and isinstance(d, dict):
            out += _unknown_keys(v, d, f"{prefix}{k}.")
    return out


# Paths every service answers without an internal token, for Prometheus and
# the kubelet: no Ingress may route them.
PRIVATE_PATHS = ("/metrics", "/readyz", "/healthz")

# Internal tokens: which component holds what (templates/_helpers.tpl,
# jyt.serviceEnv). The gateway (and gateway-search) the master secret from
# <fullname>-gateway-internal-auth; card-issuing and every slot-inventory
# their own key from <deployment>-internal-auth and an empty master.
INTERNAL_KEY_HOLDERS = {"card-issuing": "JYT_CARD_ISSUING", "slot-inventory": "JYT_SLOT_INVENTORY"}
# channel-accounting holds its own key (its survey door) only beside a
# gateway: without one nobody calls it and it has no internal-auth Secret.
GATEWAY_CALLED = {"channel-accounting": "JYT_CHANNEL_ACCOUNTING"}
MASTER_HOLDERS = {"gateway", "gateway-search"}


def _internal_auth_refs(deployments: dict[str, dict], label: str) -> list[str]:
    """A pod sees the master secret only if it is the gateway's; a
    hospital's pod reads its own Secret and no other."""
    errors = []
    gateway_secret = None
    gateway = next((d for d in deployments.values() if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"), None)
    if gateway is not None:
        for c in gateway["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                if env["name"] == "JYT_GATEWAY__INTERNAL_AUTH__MASTER_SECRET":
                    gateway_secret = env.get("valueFrom", {}).get("secretKeyRef", {}).get("name")
    holders = INTERNAL_KEY_HOLDERS | (GATEWAY_CALLED if gateway is not None else {})
    for name, d in deployments.items():
        component = d["metadata"]["labels"].get("app.kubernetes.io/component")
        envs = [e for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])]
        by_name = {e["name"]: e for e in envs}
        for e in envs:
            ref = e.get("valueFrom", {}).get("secretKeyRef", {})
            if component not in MASTER_HOLDERS and (
                e["name"].endswith("__INTERNAL_AUTH__MASTER_SECRET") and "valueFrom" in e
                or (gateway_secret and ref.get("name") == gateway_secret)
            ):
                errors.append(f"[{label}] Deployment/{name}: env {e['name']} gives a {component} pod the internal master secret")
        if component in MASTER_HOLDERS:
            master = by_name.get("JYT_GATEWAY__INTERNAL_AUTH__MASTER_SECRET", {})
            if "secretKeyRef" not in master.get("valueFrom", {}):
                errors.append(f"[{label}] Deployment/{name}: no JYT_GATEWAY__INTERNAL_AUTH__MASTER_SECRET from a Secret")
        if component in holders:
            prefix = holders[component]
            own = by_name.get(f"{prefix}__INTERNAL_AUTH__SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
            if own.get("name") != f"{name}-internal-auth":
                errors.append(f"[{label}] Deployment/{name}: {prefix}__INTERNAL_AUTH__SECRET must come from Secret/{name}-internal-auth, not {own.get('name')}")
            if by_name.get(f"{prefix}__INTERNAL_AUTH__MASTER_SECRET", {}).get("value", None) != "":
                errors.append(f"[{label}] Deployment/{name}: {prefix}__INTERNAL_AUTH__MASTER_SECRET must be \"\" (drops the built-in demo master)")
            for e in envs:
                ref = e.get("valueFrom", {}).get("secretKeyRef", {}).get("name", "")
                if ref.endswith("-internal-auth") and ref != f"{name}-internal-auth":
                    errors.append(f"[{label}] Deployment/{name}: env {e['name']} reads another service's key, Secret/{ref}")
    return errors


def _secret_value(secret: dict | None, key: str) -> str | None:
    if secret is None:
        return None
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def _internal_keys_derived(deployments: dict[str, dict], secrets: dict[str, dict], label: str) -> list[str]:
    """Where the master and the services' keys are all in the set (demo
    values, dev overlay), each key must be derived from that master for
    that service's audience, as jyt_signing::internal::derive_key does."""
    errors = []
    master = None
    for d in deployments.values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if env["name"] == "JYT_GATEWAY__INTERNAL_AUTH__MASTER_SECRET" and ref:
                    master = _secret_value(secrets.get(ref["name"]), ref["key"])
    if master is None:
        return errors
    for name, d in deployments.items():
        labels = d["metadata"]["labels"]
        component = labels.get("app.kubernetes.io/component")
        if component not in INTERNAL_KEY_HOLDERS | GATEWAY_CALLED:
            continue
        audience = f"slot-inventory:{labels.get('jyt.example/hospital')}" if component == "slot-inventory" else component
        for c in d["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if env["name"].endswith("__INTERNAL_AUTH__SECRET") and ref:
                    got = _secret_value(secrets.get(ref["name"]), ref["key"])
                    want = hashlib.sha256(f"{master}:{audience}".encode()).hexdigest()
                    if got is not None and got != want:
                        errors.append(f"[{label}] Secret/{ref['name']}: key {ref['key']} is not hex(sha256(master \":{audience}\"))")
    return errors


def _toml_files(cm: dict | None) -> list[dict]:
    out = []
    for key, text in ((cm or {}).get("data") or {}).items():
        if key.endswith(".toml"):
            try:
                out.append(tomllib.loads(text))
            except tomllib.TOMLDecodeError:
                pass
    return out


def _ops_port_refs(by_kind: dict[str, dict[str, dict]], label: str) -> list[str]:
    """/metrics, /healthz and /readyz live on the ops port (http.ops_port):
    each container exposes it as `ops` and its config file sets that very
    port, the probes use it, every scraped Service has a port `ops`, the
    ServiceMonitor scrapes `ops`, and the NetworkPolicies admit the peers
    of their ops rule (the monitoring namespace) to the ops port only,
    and nobody else to it."""
    errors = []
    ops_numbers: set[int] = set()
    for name, d in by_kind.get("Deployment", {}).items():
        spec = d["spec"]["template"]["spec"]
        cm_names = [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
        configured = {f.get("http", {}).get("ops_port") for cm in cm_names for f in _toml_files(by_kind.get("ConfigMap", {}).get(cm))}
        for c in spec["containers"]:
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
            if "ops" not in ports:
                errors.append(f"[{label}] Deployment/{name}: container {c['name']} has no port named ops")
                continue
            ops_numbers.add(ports["ops"])
            if configured != {ports["ops"]}:
                errors.append(f"[{label}] Deployment/{name}: container port ops is {ports['ops']} but its config sets http.ops_port {sorted(configured, key=str)}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and port not in ("ops", ports["ops"]):
                    errors.append(f"[{label}] Deployment/{name}: {probe} uses port {port}, not ops")
    for name, svc in by_kind.get("Service", {}).items():
        if svc["metadata"].get("labels", {}).get("jyt.example/metrics") == "true":
            if not any(p.get("name") == "ops" and p.get("targetPort") == "ops" for p in svc["spec"].get("ports", [])):
                errors.append(f"[{label}] Service/{name}: scraped (jyt.example/metrics) but has no port ops -> targetPort ops")
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        for ep in sm["spec"].get("endpoints", []):
            if ep.get("port") != "ops":
                errors.append(f"[{label}] ServiceMonitor/{name}: scrapes port {ep.get('port')}, not ops")
    for name, np in by_kind.get("NetworkPolicy", {}).items():
        rules = np["spec"].get("ingress", [])
        monitoring = [json.dumps(peer, sort_keys=True) for r in rules if any(p.get("port") in ops_numbers for p in r.get("ports", [])) for peer in r.get("from", [])]
        for r in rules:
            ports = [p.get("port") for p in r.get("ports", [])]
            if any(p in ops_numbers for p in ports):
                if set(ports) - ops_numbers:
                    errors.append(f"[{label}] NetworkPolicy/{name}: one rule admits to the ops port and to {sorted(set(ports) - ops_numbers)}")
                if any(set(peer) != {"namespaceSelector"} for peer in r.get("from", [])):
                    errors.append(f"[{label}] NetworkPolicy/{name}: the ops port admits more than the monitoring namespace ({r.get('from')})")
            elif any(json.dumps(peer, sort_keys=True) in monitoring for peer in r.get("from", [])):
                errors.append(f"[{label}] NetworkPolicy/{name}: admits the monitoring peers to {ports}, not only the ops port")
            if not ports or not r.get("from"):
                errors.append(f"[{label}] NetworkPolicy/{name}: a rule without ports or peers admits everyone to everything")
    return errors


def _effective_setting(d: dict, configs: dict[str, dict], section: str, key: str) -> str | None:
    """A setting as the pod sees it: JYT_<SERVICE>__<SECTION>__<KEY> from
    its env wins over its config file's [section] key."""
    c = d["spec"]["template"]["spec"]["containers"][0]
    service = c["name"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    name = f"{'JYT_' + service.upper().replace('-', '_')}__{section.upper()}__{key.upper()}"
    if name in env:
        return env[name]
    cms = [v["configMap"]["name"] for v in d["spec"]["template"]["spec"].get("volumes", []) if "configMap" in v]
    for cm in cms:
        for f in _toml_files(configs.get(cm)):
            if key in f.get(section, {}):
                return f[section][key]
    return None


def _public_address_refs(by_kind: dict[str, dict[str, dict]], label: str) -> list[str]:
    """Where an Ingress names a host, every FHIR address the gateway and the
    hospitals publish ([fhir] public_base_url, or its env override) is on
    that host, https when the Ingress has TLS: an overlay that changes one
    and not the others hands aggregators dead links."""
    errors = []
    for iname, ing in by_kind.get("Ingress", {}).items():
        hosts = {r.get("host") for r in ing["spec"].get("rules", []) if r.get("host")}
        if not hosts:
            continue
        scheme = "https" if ing["spec"].get("tls") else "http"
        for name, d in by_kind.get("Deployment", {}).items():
            if d["metadata"]["labels"].get("app.kubernetes.io/component") not in ("gateway", "gateway-search", "slot-inventory"):
                continue
            url = _effective_setting(d, by_kind.get("ConfigMap", {}), "fhir", "public_base_url")
            m = re.match(r"(https?)://([^/:]+)", url or "")
            if url and (not m or m.group(2) not in hosts or m.group(1) != scheme):
                errors.append(f"[{label}] Deployment/{name}: FHIR public_base_url {url} is not {scheme}://{'|'.join(sorted(hosts))}, Ingress/{iname}'s")
    return errors


# Overlays that are production-shaped: no demo setting left, and no
# single pod or unguarded Deployment.
PRODUCTION_OVERLAYS = {"prod"}
DEMO_MARKS = ("localtest.me", "demo", "10.42.0.0/16")


def production_shape(objects: list[dict], label: str) -> list[str]:
    errors = []
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", {}).values()}
    pdbs = [p["spec"]["selector"]["matchLabels"] for p in by_kind.get("PodDisruptionBudget", {}).values()]
    for name, d in by_kind.get("Deployment", {}).items():
        pods = hpas[name]["spec"]["minReplicas"] if name in hpas else d["spec"].get("replicas", 1)
        if pods < 2:
            errors.append(f"[{label}] Deployment/{name}: at least 2 pods in production, not {pods}")
        if not any(_matches(sel, d["spec"]["template"]["metadata"]["labels"]) for sel in pdbs):
            errors.append(f"[{label}] Deployment/{name}: no PodDisruptionBudget")
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("JYT_ENV") != "production":
                errors.append(f"[{label}] Deployment/{name}: JYT_ENV is {env.get('JYT_ENV')!r}")
            requests = c.get("resources", {}).get("requests", {})
            if _cpu_millis(requests.get("cpu", "0")) < 250:
                errors.append(f"[{label}] Deployment/{name}: requests {requests.get('cpu')} CPU, a demo's share (production: 250m at least)")
    for o in objects:
        if o["kind"] in ("Secret", "ConfigMap"):
            continue
        text = json.dumps({k: v for k, v in o.items() if k != "__source"}, ensure_ascii=False)
        for mark in DEMO_MARKS:
            if mark in text:
                errors.append(f"[{label}] {name_of(o)}: still carries the demo's {mark!r}")
    # A config file may keep a demo value only where every pod reading it
    # overrides that setting by env (a patch cannot edit inside the file).
    for name, d in by_kind.get("Deployment", {}).items():
        cms = [v["configMap"]["name"] for v in d["spec"]["template"]["spec"].get("volumes", []) if "configMap" in v]
        for cm in cms:
            for f in _toml_files(by_kind.get("ConfigMap", {}).get(cm)):
                for section, table in f.items():
                    for key, value in (table.items() if isinstance(table, dict) else []):
                        if any(mark in str(value) for mark in DEMO_MARKS):
                            effective = _effective_setting(d, by_kind.get("ConfigMap", {}), section, key)
                            if any(mark in str(effective) for mark in DEMO_MARKS):
                                errors.append(f"[{label}] Deployment/{name}: [{section}] {key} is the demo's {effective!r} (ConfigMap/{cm}, no env override)")
    return errors


def _cpu_millis(q: Any) -> float:
    q = str(q)
    return float(q[:-1]) if q.endswith("m") else float(q) * 1000


CHANNELS = {"wechat", "kiosk", "phone114", "window", "app", "referral"}


def _test_app_refs(by_kind: dict[str, dict[str, dict]], label: str) -> list[str]:
    """`helm test` signs as a channel app: the gateway and gateway-search
    must know that app (CHANNEL_APPS__<ID>__CHANNEL and __SECRET) with the
    secret from the very Secret and key the test pod reads, and the pod
    must call a rendered gateway Service by a port it has."""
    errors = []
    for name, pod in by_kind.get("Pod", {}).items():
        if pod["metadata"].get("labels", {}).get("jyt.example/role") != "test":
            continue
        env = {e["name"]: e for c in pod["spec"]["containers"] for e in c.get("env", [])}
        app = env.get("APP_ID", {}).get("value", "")
        ref = env.get("APP_SECRET", {}).get("valueFrom", {}).get("secretKeyRef")
        if not re.fullmatch(r"[a-z0-9]{2,32}", app) or not ref:
            errors.append(f"[{label}] Pod/{name}: no APP_ID (2 to 32 of a-z0-9) or APP_SECRET from a Secret")
            continue
        prefix = f"JYT_GATEWAY__CHANNEL_APPS__{app.upper()}__"
        for dname, d in by_kind.get("Deployment", {}).items():
            if d["metadata"]["labels"].get("app.kubernetes.io/component") not in MASTER_HOLDERS:
                continue
            denv = {e["name"]: e for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
            if denv.get(prefix + "CHANNEL", {}).get("value") not in CHANNELS:
                errors.append(f"[{label}] Deployment/{dname}: {prefix}CHANNEL is not a channel, so `helm test` (Pod/{name}) gets 401")
            if denv.get(prefix + "SECRET", {}).get("valueFrom", {}).get("secretKeyRef") != ref:
                errors.append(f"[{label}] Deployment/{dname}: {prefix}SECRET is not read from Secret/{ref['name']} key {ref['key']}, as Pod/{name} signs")
        secret = _secret_value(by_kind.get("Secret", {}).get(ref["name"]), ref["key"])
        if secret is not None and len(secret) < 32:
            errors.append(f"[{label}] Secret/{ref['name']}: the test app's secret is shorter than 32 characters; the gateway refuses to start")
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", env.get("GATEWAY", {}).get("value", ""))
        svc = by_kind.get("Service", {}).get(m.group(1)) if m else None
        if svc is None or not any(p.get("port") == int(m.group(2)) and p.get("name") == "http" for p in svc["spec"]["ports"]):
            errors.append(f"[{label}] Pod/{name}: GATEWAY {env.get('GATEWAY', {}).get('value')} is not a rendered Service's http port")
    return errors


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cross_references(objects: list[dict], label: str) -> list[str]:
    """What schemas cannot see: names and selectors pointing at nothing."""
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    deployments = by_kind.get("Deployment", {})
    pod_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in deployments.values()]
    errors = []
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        if not _matches(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]):
            errors.append(f"[{label}] Deployment/{name}: selector does not match its pod labels")
        for vol in spec.get("volumes", []):
            cm = vol.get("configMap", {}).get("name")
            if cm and cm not in by_kind.get("ConfigMap", {}):
                errors.append(f"[{label}] Deployment/{name}: mounts ConfigMap/{cm}, which is not rendered")
        sa = spec.get("serviceAccountName")
        if sa and sa not in by_kind.get("ServiceAccount", {}):
            errors.append(f"[{label}] Deployment/{name}: ServiceAccount/{sa} is not rendered")
        annotations = d["spec"]["template"]["metadata"].get("annotations", {})
        if "checksum/config" not in annotations:
            errors.append(f"[{label}] Deployment/{name}: no checksum/config annotation")
        for c in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in c:
                    errors.append(f"[{label}] Deployment/{name}: container {c['name']} has no {probe}")
            if not c.get("resources", {}).get("limits"):
                errors.append(f"[{label}] Deployment/{name}: container {c['name']} has no resource limits")
    # Config files must parse: a template slip would stop every pod at start.
    for name, cm in by_kind.get("ConfigMap", {}).items():
        for key, text in (cm.get("data") or {}).items():
            if key.endswith(".toml"):
                try:
                    tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    errors.append(f"[{label}] ConfigMap/{name}: {key} is not valid TOML: {e}")
    # Every key the chart writes must exist in the service's own
    # defaults.toml: a misspelt key would be ignored silently by serde.
    for name, cm in by_kind.get("ConfigMap", {}).items():
        component = cm["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        component = COMPONENT_SERVICE.get(str(component), component)
        defaults_file = ROOT / "services" / str(component) / "config" / "defaults.toml"
        if not defaults_file.exists():
            continue
        defaults = _defaults(defaults_file)
        # Tables keyed by ids that the defaults deliberately leave empty
        # (a built-in entry would leak into every deployment): the shape of
        # one entry, as the service's settings struct defines it.
        for table, entry in MAP_TABLES.get(str(component), {}).items():
            defaults.setdefault(table, {"<id>": entry})
        for key, text in (cm.get("data") or {}).items():
            try:
                rendered = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                continue
            for path in _unknown_keys(rendered, defaults):
                if path in OPTIONAL_KEYS:
                    if not _optional_key_declared(path):
                        errors.append(f"[{label}] ConfigMap/{name}: {key} sets `{path}`, which {OPTIONAL_KEYS[path][0]} no longer declares")
                    continue
                errors.append(f"[{label}] ConfigMap/{name}: {key} sets `{path}`, which {defaults_file.relative_to(ROOT)} does not have")
    # When the service Secrets are part of the set (demo values, dev
    # overlay), every reference must resolve; otherwise they are managed
    # outside the chart. (The test app's Secret, rendered in every set with
    # `helm test`, does not make a set self-contained.) A reference to a
    # Secret that is rendered must name a key it has, in every set.
    secrets = by_kind.get("Secret", {})
    service_secrets = {n for n, o in secrets.items() if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "test"}
    pods = [(f"Deployment/{n}", d["spec"]["template"]["spec"]) for n, d in deployments.items()]
    pods += [(f"Pod/{n}", o["spec"]) for n, o in by_kind.get("Pod", {}).items()]
    for where, spec in pods:
        for c in spec["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if not ref or (not service_secrets and ref["name"] not in secrets):
                    continue
                s = secrets.get(ref["name"])
                keys = set((s or {}).get("data") or {}) | set((s or {}).get("stringData") or {})
                if s is None or ref["key"] not in keys:
                    errors.append(f"[{label}] {where}: env {env['name']} reads Secret/{ref['name']} key {ref['key']}, which is not rendered")
    errors += _ops_port_refs(by_kind, label)
    errors += _test_app_refs(by_kind, label)
    errors += _public_address_refs(by_kind, label)
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for name, o in by_kind.get(kind, {}).items():
            sel = o["spec"].get("selector") if kind == "Service" else (
                o["spec"].get("selector", {}) if kind == "PodDisruptionBudget" else o["spec"]["podSelector"]
            )
            sel = sel.get("matchLabels", sel) if kind != "Service" else sel
            if not any(_matches(sel, pl) for pl in pod_labels):
                errors.append(f"[{label}] {kind}/{name}: selector {sel} matches no rendered pod")
    errors += _internal_auth_refs(deployments, label)
    if service_secrets:
        errors += _internal_keys_derived(deployments, secrets, label)
    # Prometheus and the kubelet reach these on the pods; never the public.
    for name, ing in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                p, kind = path["path"], path.get("pathType")
                for private in PRIVATE_PATHS:
                    covered = p == private if kind == "Exact" else (
                        p.rstrip("/") == "" or private == p.rstrip("/") or private.startswith(p.rstrip("/") + "/")
                    )
                    if covered:
                        errors.append(f"[{label}] Ingress/{name}: {kind} {p} publishes {private}")
    # An Ingress backend must be a rendered Service, by a port it has.
    services = by_kind.get("Service", {})
    for name, ing in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"].get("service")
                if not backend:
                    continue
                svc = services.get(backend["name"])
                want = backend.get("port", {})
                ports = (svc or {}).get("spec", {}).get("ports", [])
                if svc is None:
                    errors.append(f"[{label}] Ingress/{name}: {path['path']} goes to Service/{backend['name']}, which is not rendered")
                elif not any(("name" in want and p.get("name") == want["name"]) or ("number" in want and p.get("port") == want["number"]) for p in ports):
                    errors.append(f"[{label}] Ingress/{name}: {path['path']} goes to Service/{backend['name']} port {want}, which it does not have")
    for name, h in by_kind.get("HorizontalPodAutoscaler", {}).items():
        target = h["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            errors.append(f"[{label}] HorizontalPodAutoscaler/{name}: targets missing Deployment/{target}")
        elif "replicas" in deployments[target]["spec"]:
            errors.append(f"[{label}] Deployment/{target}: sets replicas while an HPA owns them")
    # Every slot-inventory must be in the gateway's hospital registry.
    gateway_cm = next((c for n, c in by_kind.get("ConfigMap", {}).items() if n.endswith("-gateway-config")), None)
    # gateway-search must run the gateway's config: only [http] workers may differ.
    search_cm = next((c for n, c in by_kind.get("ConfigMap", {}).items() if n.endswith("-gateway-search-config")), None)
    if gateway_cm is not None and search_cm is not None:
        try:
            configs = [
                {k: tomllib.loads(t) for k, t in c["data"].items()} for c in (gateway_cm, search_cm)
            ]
        except tomllib.TOMLDecodeError:
            configs = []
        for c in configs:
            for doc in c.values():
                doc.get("http", {}).pop("workers", None)
        if configs and configs[0] != configs[1]:
            errors.append(f"[{label}] ConfigMap/{search_cm['metadata']['name']}: differs from the gateway's in more than [http] workers")
    if gateway_cm is not None:
        registry = "".join(gateway_cm["data"].values())
        for name, d in deployments.items():
            hospital = d["metadata"]["labels"].get("jyt.example/hospital")
            if hospital and f"[hospitals.{hospital}]" not in registry:
                errors.append(f"[{label}] hospital {hospital} is missing from the gateway's registry")
    return errors


# ---------------------------------------------------------------- values the chart must refuse


def _set(path: str, value: Any):
    """A mutator setting a dotted path (list indices as numbers) in values."""

    def mutate(values: dict) -> None:
        node: Any = values
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[parts[-1]] = value

    return mutate


# (what, values files, mutators, message the refusal must contain).
# Each renders the demo city with one thing wrong; rendering must stop with
# that message. One per rule of values.schema.json and templates/_validate.tpl
# (or jyt.checkExtraConfig) that a values file could break.
NEGATIVE_CASES: list[tuple[str, list[str], list, str]] = [
    ("a hospital's minReplicas above its maxReplicas", ["values-demo.yaml"],
     [_set("hospitals.0.autoscaling", {"minReplicas": 4, "maxReplicas": 3})],
     "hospitals[0] (pumch).autoscaling: minReplicas 4 > maxReplicas 3"),
    ("a hospital's minReplicas above slotInventory's maxReplicas", ["values-demo.yaml"],
     [_set("hospitals.1.autoscaling", {"minReplicas": 5})],
     "hospitals[1] (bjh).autoscaling: minReplicas 5 > maxReplicas 3"),
    ("a service's minReplicas above its maxReplicas", ["values-demo.yaml"],
     [_set("gateway.autoscaling.minReplicas", 9)],
     "gateway.autoscaling: minReplicas 9 > maxReplicas 3"),
    ("a hospital's extraConfig repeating a rendered section", ["values-demo.yaml"],
     [_set("hospitals.2.extraConfig", "[booking]\nidempotency_ttl_seconds = 600\n")],
     "hospitals[2] (chaoyang).extraConfig repeats [booking]"),
    ("a hospital's extraConfig repeating slotInventory.extraConfig's section", ["values-demo.yaml"],
     [_set("slotInventory.extraConfig", "[policy]\nhold_minutes = 15\n"),
      _set("hospitals.0.extraConfig", "# this hospital's own\n[policy]\nhold_minutes = 5\n")],
     "hospitals[0] (pumch).extraConfig repeats [policy]"),
    ("a hospital's extraConfig starting with a bare key", ["values-demo.yaml"],
     [_set("hospitals.0.extraConfig", "hold_minutes = 5\n")],
     "hospitals[0] (pumch).extraConfig: must start with a [section] header"),
    ("slotInventory.extraConfig repeating [redis]", ["values-demo.yaml"],
     [_set("slotInventory.extraConfig", "[redis]\ncluster = true\n")],
     "slotInventory.extraConfig repeats [redis]"),
    ("gateway.extraConfig adding a hospital outside `hospitals`", ["values-demo.yaml"],
     [_set("gateway.extraConfig", '[hospitals.extra]\nname = "x"\n')],
     "gateway.extraConfig sets [hospitals.extra]"),
    ("gateway.extraConfig holding a channel app (a secret in a ConfigMap)", ["values-demo.yaml"],
     [_set("gateway.extraConfig", '[channel_apps.wx]\nchannel = "wechat"\n')],
     "gateway.extraConfig sets [channel_apps.wx]"),
    ("gateway.extraConfig repeating [fhir] (publicBaseUrl set)", ["values-demo.yaml"],
     [_set("gateway.extraConfig", '[fhir]\npublic_base_url = "https://x.example"\n')],
     "gateway.extraConfig repeats [fhir]"),
    ("channelAccounting.extraConfig repeating [postgres]", ["values-demo.yaml"],
     [_set("channelAccounting.extraConfig", "[postgres]\npool_max_size = 2\n")],
     "channelAccounting.extraConfig repeats [postgres]"),
    ("cardIssuing.extraConfig starting with a bare key", ["values-demo.yaml"],
     [_set("cardIssuing.extraConfig", "pool_max_size = 3\n")],
     "cardIssuing.extraConfig: must start with a [section] header"),
    ("image.tag with a colon", ["values-demo.yaml"], [_set("image.tag", "v1:2")], "at '/image/tag'"),
    ("image.tag starting with a dash", ["values-demo.yaml"], [_set("image.tag", "-rc1")], "at '/image/tag'"),
    ("image.tag of 129 characters", ["values-demo.yaml"], [_set("image.tag", "a" * 129)], "at '/image/tag'"),
    ("opsPort equal to a service's port", ["values-demo.yaml"], [_set("opsPort", 8101)],
     "opsPort 8101 is also slotInventory.port"),
    ("a test channel app secret under 32 characters", ["values-demo.yaml"],
     [_set("tests.channelApp.secret", "short")], "at '/tests/channelApp/secret'"),
    ("a test channel app id the gateway refuses", ["values-demo.yaml"],
     [_set("tests.channelApp.id", "Helm-Test")], "at '/tests/channelApp/id'"),
    ("a hospital id twice", ["values-demo.yaml"], [_set("hospitals.1.id", "pumch")],
     'hospitals: id "pumch" appears twice'),
    ("tests.hospital not in hospitals", ["values-demo.yaml"], [_set("tests.hospital", "nowhere")],
     'tests.hospital "nowhere" is not in hospitals'),
]

# The same rules must not refuse what is right: sections the chart does not
# render, per hospital and per service, and an unusual but valid tag.
POSITIVE_CASES: list[tuple[str, list[str], list]] = [
    ("extraConfig with sections the chart does not render", ["values-demo.yaml"], [
        _set("slotInventory.extraConfig", "[policy]\nhold_minutes = 15\n"),
        _set("hospitals.0.extraConfig", "# pumch releases later\n[policy.pool_shares]\nwechat = 30\n"),
        _set("gateway.extraConfig", "[search]\n"),
        _set("image.tag", "2025.11.3-rc_1"),
    ]),
]


def values_cases(version: str) -> list[str]:
    """Render every NEGATIVE_CASES entry (must fail with its message) and
    every POSITIVE_CASES entry (must render and pass every check)."""
    errors = []
    for what, files, mutators, expected in NEGATIVE_CASES:
        values = values_for(files)
        for m in mutators:
            m(values)
        try:
            render(values, "negative")
        except Failure as e:
            if expected not in str(e):
                errors.append(f"[negative] {what}: refused, but the message lacks {expected!r}: {e}")
            continue
        errors.append(f"[negative] {what}: rendered; the chart must refuse it ({expected!r})")
    for what, files, mutators in POSITIVE_CASES:
        values = values_for(files)
        for m in mutators:
            m(values)
        try:
            errors += check_objects(render(values, f"positive: {what}"), f"positive: {what}", version)
        except Failure as e:
            errors.append(f"[positive] {what}: refused: {e}")
    return errors


# ---------------------------------------------------------------- what rolls


def _index(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): {k: v for k, v in o.items() if k != "__source"} for o in objects}


def _rolled(before: dict, after: dict) -> dict[str, set[str]]:
    """Deployments (in both) whose pod template differs -> what differs:
    the names of changed annotations, or "template" for anything else."""
    out = {}
    for (kind, name), old in before.items():
        new = after.get((kind, name))
        if kind != "Deployment" or new is None or old["spec"]["template"] == new["spec"]["template"]:
            continue
        a, b = old["spec"]["template"], new["spec"]["template"]
        ann_a, ann_b = a["metadata"].get("annotations", {}), b["metadata"].get("annotations", {})
        what = {k for k in set(ann_a) | set(ann_b) if ann_a.get(k) != ann_b.get(k)}
        rest_a = {**a, "metadata": {**a["metadata"], "annotations": None}}
        rest_b = {**b, "metadata": {**b["metadata"], "annotations": None}}
        if rest_a != rest_b:
            what.add("template")
        out[name] = what
    return out


def _owned_by(o: dict, hospital: str) -> bool:
    return o["metadata"].get("labels", {}).get("jyt.example/hospital") == hospital


# A generated secret differs in every offline render (lookup finds nothing);
# its value is not hashed into any pod template.
GENERATED = {("Secret", "jyt-test-app")}


def restart_scope(base_objects_: list[dict], base_values: dict) -> tuple[list[str], str]:
    """With values-300.yaml: changing one hospital's own values rolls that
    hospital's pods and changes its objects only; renaming one also rolls
    the gateway and gateway-search, by checksum/registry alone; adding one
    rolls the gateway and gateway-search by checksum/registry alone and
    adds only the new hospital's objects. Returns (errors, summary)."""
    import copy

    errors: list[str] = []
    label = "restart scope"
    before = _index(base_objects_)
    hospitals = base_values["hospitals"]
    pick = hospitals[len(hospitals) // 2]
    hid = pick["id"]
    gateways = {"jyt-gateway", "jyt-gateway-search"}

    def variant(mutate) -> tuple[dict, dict[str, set[str]]]:
        values = copy.deepcopy(base_values)
        mutate(values)
        after = _index(render(values, label))
        return after, _rolled(before, after)

    def changed(after: dict) -> set[tuple[str, str]]:
        return {k for k in before if k in after and before[k] != after[k] and k not in GENERATED}

    # 1. one hospital's own values: replicas, resources, database, extraConfig.
    def own(values: dict) -> None:
        h = next(x for x in values["hospitals"] if x["id"] == hid)
        h.update(replicas=4, autoscaling={"minReplicas": 4, "maxReplicas": 9},
                 resources={"requests": {"cpu": "300m", "memory": "200Mi"}, "limits": {"cpu": "2", "memory": "400Mi"}},
                 postgres={"existingSecret": f"{hid}-db", "existingSecretKey": "uri"},
                 extraConfig="[policy]\nhold_minutes = 15\n")
    after, rolled = variant(own)
    if set(rolled) != {f"jyt-slot-{hid}"}:
        errors.append(f"[{label}] changing {hid}'s own values rolls {sorted(rolled)}, not jyt-slot-{hid} alone")
    strays = sorted(f"{k}/{n}" for k, n in changed(after) if not _owned_by(before[(k, n)], hid))
    if strays:
        errors.append(f"[{label}] changing {hid}'s own values changes other objects: {strays[:5]}")

    # 2. a registry field (its name): the hospital, and the gateways by checksum/registry only.
    def rename(values: dict) -> None:
        next(x for x in values["hospitals"] if x["id"] == hid)["name"] = pick["name"] + "（新院区）"
    after, rolled = variant(rename)
    if set(rolled) != gateways | {f"jyt-slot-{hid}"}:
        errors.append(f"[{label}] renaming {hid} rolls {sorted(rolled)}, not jyt-slot-{hid}, jyt-gateway and jyt-gateway-search")
    for g in gateways & set(rolled):
        if rolled[g] != {"checksum/registry"}:
            errors.append(f"[{label}] renaming {hid} changes Deployment/{g} by {sorted(rolled[g])}, not checksum/registry alone")

    # 3. a hospital added: the gateways by checksum/registry only, plus the new one's objects.
    new_id = "h" + str(len(hospitals) + 1).zfill(3)
    def add(values: dict) -> None:
        values["hospitals"].append({"id": new_id, "name": "新医院", "district": "daxing", "level": "secondary"})
    after, rolled = variant(add)
    if set(rolled) != gateways or any(w != {"checksum/registry"} for w in rolled.values()):
        errors.append(f"[{label}] adding {new_id} rolls { {k: sorted(v) for k, v in rolled.items()}}, not the gateways by checksum/registry alone")
    expected = {("ConfigMap", f"{g}-config") for g in gateways} | {("Deployment", g) for g in gateways}
    if changed(after) != expected:
        errors.append(f"[{label}] adding {new_id} changes {sorted(changed(after) ^ expected)} unexpectedly")
    added = [after[k] for k in after if k not in before]
    foreign = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in added if not _owned_by(o, new_id))
    if foreign or not any(o["kind"] == "Deployment" for o in added):
        errors.append(f"[{label}] adding {new_id} adds {foreign or 'no Deployment'}, not only {new_id}'s objects")
    summary = (f"one hospital's own values roll jyt-slot-{hid} only; renaming it also rolls the gateways "
               f"(checksum/registry only); adding {new_id} rolls the gateways (checksum/registry only) "
               f"and adds {len(added)} objects, all {new_id}'s")
    return errors, summary


# ---------------------------------------------------------------- PromQL


# Labels Prometheus puts on every series the ServiceMonitor scrapes (the
# operator's, and its relabelings), and the exported_* the services' own
# `service` and `hospital` labels are renamed to.
TARGET_LABELS = {"namespace", "service", "job", "pod", "container", "endpoint", "instance",
                 "component", "hospital", "exported_service", "exported_hospital"}
# Series from elsewhere that the alerts read: labels they carry.
EXTERNAL_METRICS = {
    "up": set(),
    "kube_deployment_spec_replicas": {"deployment"},
    "kube_deployment_status_replicas_available": {"deployment"},
}
# tests/system/booking_path.rs asserts every jyt_* series the dashboard
# names is exported by slot-inventory or the gateway (jyt_consumer_lag_events
# apart): keep the dashboard to those.
DASHBOARD = ROOT / "deploy" / "grafana" / "jyt-surge.json"
DASHBOARD_SOURCES = {"slot-inventory", "gateway", "shared"}
DASHBOARD_EXEMPT = {"jyt_consumer_lag_events"}


@functools.lru_cache(maxsize=None)
def metric_catalogue() -> dict[str, tuple[frozenset[str], str]]:
    """Every metric the services register, from their Rust sources:
    name (with jyt_ and, for histograms, _bucket/_sum/_count) -> (labels,
    where: the service directory, or "shared")."""
    out: dict[str, tuple[frozenset[str], str]] = {}
    sources = [("shared", f) for f in sorted((ROOT / "shared").glob("*/src/**/*.rs"))]
    sources += [(f.relative_to(ROOT / "services").parts[0], f) for f in sorted((ROOT / "services").glob("*/src/**/*.rs"))]
    pattern = re.compile(r'\b(HistogramOpts|Opts|IntCounter|IntGauge|Counter|Gauge)::new\(\s*"([a-z_][a-z0-9_]*)"')
    for where, f in sources:
        text = f.read_text()
        for m in pattern.finditer(text):
            kind, name = m.groups()
            call = text[m.end(): m.end() + 800].split(")?", 1)[0]
            labels_m = re.search(r"&\[([^\]]*)\]", call)
            labels = set(re.findall(r'"([a-z_][a-z0-9_]*)"', labels_m.group(1))) if labels_m else set()
            labels.add("service")  # the registry's const label (jyt_web::ops::Metrics)
            names = [f"jyt_{name}{suffix}" for suffix in ("_bucket", "_sum", "_count")] if kind == "HistogramOpts" else [f"jyt_{name}"]
            for n in names:
                out[n] = (frozenset(labels | ({"le"} if n.endswith("_bucket") else set())), where)
    return out


def _promql_names(expr: Any) -> tuple[list[tuple[str, list[str]]], set[str]]:
    """(selectors as (metric, matcher labels), labels grouped or matched on)."""
    import promql_parser as pp

    selectors: list[tuple[str, list[str]]] = []
    grouping: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            selectors.append((node.name or "", [m.name for m in node.matchers.matchers]))
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            grouping.update(node.modifier.labels)
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                grouping.update(node.modifier.matching.labels)
            grouping.update(node.modifier.group_labels or [])

    pp.walk(expr, visit)
    return selectors, grouping


def check_promql(where: str, text: str, dashboard: bool = False, legend: str = "") -> list[str]:
    """`text` parses as PromQL, names only registered (or EXTERNAL) metrics
    and labels those series carry, and never groups by `service` (the
    Kubernetes Service, one per hospital: group by component)."""
    import promql_parser as pp

    try:
        expr = pp.parse(text.replace("$__rate_interval", "1m").replace("$__interval", "1m"))
    except ValueError as e:
        return [f"{where}: not PromQL ({e}): {text.strip()[:100]}"]
    catalogue = metric_catalogue()
    errors = []
    selectors, grouping = _promql_names(expr)
    known = set(TARGET_LABELS)
    for metric, _ in selectors:
        if metric in catalogue:
            labels, source = catalogue[metric]
            known |= labels
            if dashboard and source not in DASHBOARD_SOURCES and metric not in DASHBOARD_EXEMPT:
                errors.append(f"{where}: {metric} is {source}'s; tests/system/booking_path.rs allows the dashboard slot-inventory's and the gateway's only")
        elif metric in EXTERNAL_METRICS:
            known |= EXTERNAL_METRICS[metric]
        else:
            errors.append(f"{where}: no service registers {metric!r} (services/*/src, shared/*/src)")
    used = {label for _, matchers in selectors for label in matchers} | grouping
    used |= set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))
    for label in sorted(used - known - {"__name__"}):
        errors.append(f"{where}: label {label!r} is on none of {sorted({m for m, _ in selectors})}")
    if "service" in grouping or re.search(r"\{\{\s*service\s*\}\}", legend):
        errors.append(f"{where}: groups by `service`, the Kubernetes Service (one per hospital); group by `component`")
    return errors


def observability_checks(objects: list[dict]) -> tuple[list[str], str]:
    """PromQL of the rendered PrometheusRule(s) and of the Grafana dashboard."""
    errors = []
    rules = 0
    for o in objects:
        if o["kind"] != "PrometheusRule":
            continue
        for group in o["spec"]["groups"]:
            for rule in group["rules"]:
                rules += 1
                errors += check_promql(f"PrometheusRule/{o['metadata']['name']} {rule.get('alert') or rule.get('record')}", rule["expr"])
    try:
        board = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return errors + [f"{DASHBOARD.relative_to(ROOT)}: {e}"], ""
    queries = 0
    for panel in board.get("panels", []):
        for t in panel.get("targets", []):
            queries += 1
            errors += check_promql(f"{DASHBOARD.name} panel {panel.get('title')!r}", t["expr"], dashboard=True, legend=t.get("legendFormat", ""))
    for var in board.get("templating", {}).get("list", []):
        m = re.fullmatch(r"label_values\(([^,]+),\s*(\w+)\)", str(var.get("query", "")))
        if var.get("type") == "query":
            if not m:
                errors.append(f"{DASHBOARD.name} variable {var.get('name')}: only label_values(metric, label) is checked")
            else:
                errors += check_promql(f"{DASHBOARD.name} variable {var.get('name')}", f"count by ({m.group(2)}) ({m.group(1)})", dashboard=True)
    return errors, f"{rules} alert rules, {queries} dashboard queries"

# ---------------------------------------------------------------- k8s/


def base_objects() -> list[dict]:
    """k8s/base: the demo city without chart-managed Secrets (the overlays
    supply them) and without the helm test hook."""
    values = values_for(["values-demo.yaml"])
    # No `helm test` in plain manifests: no test pod, no test channel app.
    values.setdefault("tests", {})["enabled"] = False
    values["redis"]["urls"] = []
    values["internalAuth"]["masterSecret"] = ""
    for key in ("cardIssuing", "channelAccounting"):
        values[key]["postgres"]["url"] = ""
    for h in values["hospitals"]:
        h.get("postgres", {}).pop("url", None)
    objs = [o for o in render(values, "k8s-base") if HOOK not in o["metadata"].get("annotations", {})]
    for o in objs:
        # Helm-only bookkeeping labels mean nothing to kubectl apply -k.
        for labels in _label_maps(o):
            labels.pop("helm.sh/chart", None)
            if labels.get("app.kubernetes.io/managed-by") == "Helm":
                labels["app.kubernetes.io/managed-by"] = "kustomize"
    return objs


def _label_maps(o: dict):
    yield o["metadata"].setdefault("labels", {})
    tpl = o.get("spec", {}).get("template", {}).get("metadata")
    if tpl and "labels" in tpl:
        yield tpl["labels"]


def base_text() -> str:
    header = (
        "# GENERATED by `python3 scripts/deploy_check.py render-k8s` from helm/jyt\n"
        "# with values-demo.yaml (Secrets come from the overlays). Do not edit;\n"
        "# scripts/validate-deploy.sh fails when this file is out of date.\n"
    )
    docs = []
    for o in base_objects():
        o = {k: v for k, v in o.items() if k != "__source"}
        docs.append(yaml.dump(o, Dumper=_BaseDumper, sort_keys=False, allow_unicode=True, width=120))
    return header + "---\n" + "---\n".join(docs)


class _BaseDumper(yaml.SafeDumper):
    """Multi-line strings (config files, PromQL) as literal blocks, as they
    are written in the chart; long lines folded for yamllint."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_BaseDumper.add_representer(str, _represent_str)


def render_k8s() -> None:
    BASE_FILE.parent.mkdir(parents=True, exist_ok=True)
    BASE_FILE.write_text(base_text())
    print(f"wrote {BASE_FILE.relative_to(ROOT)}")


def kustomize_build(directory: Path) -> list[dict]:
    """The subset of kustomize our overlays use: resources, namespace,
    labels, images, secretGenerator (literals) and JSON6902 patches
    (add, replace, remove, move, test) with a kind/name/labelSelector
    target. Anything else is refused, so an overlay
    cannot silently use a feature this check does not understand."""
    kfile = directory / "kustomization.yaml"
    k = load_docs(kfile.read_text(), str(kfile.relative_to(ROOT)))[0]
    known = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "secretGenerator", "patches", "generatorOptions"}
    if set(k) - known:
        raise Failure(f"{kfile.relative_to(ROOT)}: fields this check does not model: {sorted(set(k) - known)}")
    objects: list[dict] = []
    for r in k.get("resources", []):
        path = (directory / r).resolve()
        if path.is_dir():
            objects += kustomize_build(path)
        elif path.exists():
            objects += load_docs(path.read_text(), str(path.relative_to(ROOT)))
        else:
            raise Failure(f"{kfile.relative_to(ROOT)}: resource {r} does not exist")
    for g in k.get("secretGenerator", []):
        data = dict(item.split("=", 1) for item in g.get("literals", []))
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": g["name"]}, "type": g.get("type", "Opaque"), "stringData": data})
    for p in k.get("patches", []):
        target = p.get("target", {})
        try:
            ops = yaml.load(p["patch"], Loader=StrictLoader) if "patch" in p else None
        except yaml.YAMLError as e:
            raise Failure(f"{kfile.relative_to(ROOT)}: patch is not valid YAML: {e}") from None
        if not isinstance(ops, list):
            raise Failure(f"{kfile.relative_to(ROOT)}: only inline JSON6902 patches are modelled")
        hits = [o for o in objects if _target_matches(target, o)]
        if not hits:
            raise Failure(f"{kfile.relative_to(ROOT)}: patch target {target} matches no object")
        for o in hits:
            for op in ops:
                _apply_op(o, op, f"{kfile.relative_to(ROOT)} on {name_of(o)}")
    for img in k.get("images", []):
        for o in objects:
            for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                repo, _, _tag = c["image"].rpartition(":")
                if repo == img["name"]:
                    c["image"] = f"{img.get('newName', repo)}:{img.get('newTag', _tag)}"
    for o in objects:
        if "namespace" in k:
            o["metadata"]["namespace"] = k["namespace"]
        for lab in k.get("labels", []):
            o["metadata"].setdefault("labels", {}).update(lab.get("pairs", {}))
        o["__source"] = str(directory.relative_to(ROOT))
    return objects


def _target_matches(target: dict, o: dict) -> bool:
    if "kind" in target and o.get("kind") != target["kind"]:
        return False
    if "name" in target and not re.fullmatch(target["name"], o["metadata"]["name"]):
        return False
    for term in filter(None, target.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if o["metadata"].get("labels", {}).get(key) != value:
            return False
    return True


def _apply_op(obj: dict, op: dict, where: str) -> None:
    if op["op"] == "move":
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["from"].lstrip("/").split("/")]
        src: Any = obj
        try:
            for p in parts[:-1]:
                src = src[int(p)] if isinstance(src, list) else src[p]
            value = src[int(parts[-1])] if isinstance(src, list) else src[parts[-1]]
        except (KeyError, IndexError, ValueError):
            raise Failure(f"{where}: move from {op['from']}: no such field") from None
        _apply_op(obj, {"op": "remove", "path": op["from"]}, where)
        _apply_op(obj, {"op": "add", "path": op["path"], "value": value}, where)
        return
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent: Any = obj
    for p in parts[:-1]:
        try:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        except (KeyError, IndexError, ValueError):
            raise Failure(f"{where}: path {op['path']} does not exist") from None
    last = parts[-1]
    if op["op"] == "test":
        try:
            actual = parent[int(last)] if isinstance(parent, list) else parent[last]
        except (KeyError, IndexError, ValueError):
            raise Failure(f"{where}: test {op['path']}: no such field") from None
        if actual != op["value"]:
            raise Failure(f"{where}: test {op['path']}: is {actual!r}, not {op['value']!r}")
        return
    if op["op"] in ("replace", "remove"):
        exists = (last in parent) if isinstance(parent, dict) else (last.isdigit() and int(last) < len(parent))
        if not exists:
            raise Failure(f"{where}: {op['op']} {op['path']}: no such field")
    if op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    elif op["op"] in ("add", "replace"):
        if isinstance(parent, list):
            if last == "-":
                parent.append(op["value"])
            elif op["op"] == "add":
                parent.insert(int(last), op["value"])
            else:
                parent[int(last)] = op["value"]
        else:
            parent[last] = op["value"]
    else:
        raise Failure(f"{where}: op {op['op']} not modelled")


# ---------------------------------------------------------------- main


def validate() -> int:
    _install_schema_cache()
    version = kube_version()
    errors: list[str] = []
    rendered: dict[str, list[dict]] = {}
    for label, files in VALUE_SETS:
        t0 = time.monotonic()
        try:
            objects = render(values_for(files), label)
        except Failure as e:
            errors.append(str(e))
            continue
        rendered[label] = objects
        errs = check_objects(objects, label, version)
        errors += errs
        kinds: dict[str, int] = {}
        for o in objects:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        status = "ok" if not errs else f"{len(errs)} error(s)"
        print(f"  chart [{label}] {len(objects)} objects ({summary}): {status} in {time.monotonic() - t0:.1f}s")

    t0 = time.monotonic()
    errs = values_cases(version)
    errors += errs
    print(f"  values refused: {len(NEGATIVE_CASES)} bad values sets each stopped with its message, "
          f"{len(POSITIVE_CASES)} unusual good one(s) rendered: {'ok' if not errs else f'{len(errs)} error(s)'} in {time.monotonic() - t0:.1f}s")

    if "city-300" in rendered:
        t0 = time.monotonic()
        try:
            errs, summary = restart_scope(rendered["city-300"], values_for(dict(VALUE_SETS)["city-300"]))
        except Failure as e:
            errs, summary = [str(e)], ""
        errors += errs
        print(f"  restart scope [city-300]: {summary}: {'ok' if not errs else f'{len(errs)} error(s)'} in {time.monotonic() - t0:.1f}s")

    if "demo" in rendered:
        errs, summary = observability_checks(rendered["demo"])
        errors += errs
        print(f"  PromQL: {summary} parse, name registered metrics and their labels: {'ok' if not errs else f'{len(errs)} error(s)'}")

    try:
        if not BASE_FILE.exists() or BASE_FILE.read_text() != base_text():
            current = BASE_FILE.read_text().splitlines() if BASE_FILE.exists() else []
            diff = list(difflib.unified_diff(current, base_text().splitlines(), "committed", "rendered", lineterm="", n=1))
            errors.append(
                f"{BASE_FILE.relative_to(ROOT)} is out of date with helm/jyt; run "
                f"`python3 scripts/deploy_check.py render-k8s`. First differences:\n    " + "\n    ".join(diff[:12])
            )
        for overlay in sorted((K8S / "overlays").iterdir()):
            objects = kustomize_build(overlay)
            errs = check_objects(objects, f"k8s/{overlay.relative_to(K8S)}", version)
            if overlay.name in PRODUCTION_OVERLAYS:
                errs += production_shape(objects, f"k8s/{overlay.relative_to(K8S)}")
            errors += errs
            print(f"  k8s/{overlay.relative_to(K8S)}: {len(objects)} objects: {'ok' if not errs else f'{len(errs)} error(s)'}")
    except Failure as e:
        errors.append(str(e))

    if errors:
        print(f"\nFAILED: {len(errors)} problem(s) (Kubernetes {version} schemas, strict):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"  every object valid against Kubernetes {version} schemas (strict)")
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "validate"
    try:
        if command == "validate":
            return validate()
        if command == "render-k8s":
            render_k8s()
            return 0
    except Failure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
