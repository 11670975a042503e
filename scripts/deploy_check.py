#!/usr/bin/env python3
"""Offline checks of the deployment files; called by scripts/validate-deploy.sh.

    deploy_check.py validate      render + schema-check the chart and k8s/
    deploy_check.py render-k8s    rewrite k8s/base/jyt.yaml from the chart

Rendering uses helm-python-sdk (Helm's own Go library through ctypes, no helm
binary, no cluster). Every rendered object is checked against the Kubernetes
OpenAPI schemas bundled in kubernetes-validate (strict: unknown fields are
errors); the ServiceMonitor CRD, which those schemas lack, against a small
local schema in deploy/schemas/. Then cross-references the API server would
not catch (a Deployment naming a ConfigMap that is not rendered, a selector
matching no pod, a hospital missing from the gateway's registry, an Ingress
backend that is not rendered, gateway-search not running the gateway's
config, a pod given the internal master secret or another service's key,
an Ingress publishing /metrics or /readyz).
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import json
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
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


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: Kubernetes' own decoder does
    too, while PyYAML would silently keep the last one."""


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
        if component in INTERNAL_KEY_HOLDERS:
            prefix = INTERNAL_KEY_HOLDERS[component]
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
        if component not in INTERNAL_KEY_HOLDERS:
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
                errors.append(f"[{label}] ConfigMap/{name}: {key} sets `{path}`, which {defaults_file.relative_to(ROOT)} does not have")
    # When Secrets are part of the set (demo values, dev overlay), every
    # reference must resolve; otherwise they are managed outside the chart.
    secrets = by_kind.get("Secret", {})
    if secrets:
        for name, d in deployments.items():
            for c in d["spec"]["template"]["spec"]["containers"]:
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if not ref:
                        continue
                    s = secrets.get(ref["name"])
                    keys = set((s or {}).get("data", {})) | set((s or {}).get("stringData", {}))
                    if s is None or ref["key"] not in keys:
                        errors.append(f"[{label}] Deployment/{name}: env {env['name']} reads Secret/{ref['name']} key {ref['key']}, which is not rendered")
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for name, o in by_kind.get(kind, {}).items():
            sel = o["spec"].get("selector") if kind == "Service" else (
                o["spec"].get("selector", {}) if kind == "PodDisruptionBudget" else o["spec"]["podSelector"]
            )
            sel = sel.get("matchLabels", sel) if kind != "Service" else sel
            if not any(_matches(sel, pl) for pl in pod_labels):
                errors.append(f"[{label}] {kind}/{name}: selector {sel} matches no rendered pod")
    errors += _internal_auth_refs(deployments, label)
    if secrets:
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


# ---------------------------------------------------------------- k8s/


def base_objects() -> list[dict]:
    """k8s/base: the demo city without chart-managed Secrets (the overlays
    supply them) and without the helm test hook."""
    values = values_for(["values-demo.yaml"])
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
        docs.append(yaml.safe_dump(o, sort_keys=False, allow_unicode=True, width=1000))
    return header + "---\n" + "---\n".join(docs)


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
    for label, files in VALUE_SETS:
        t0 = time.monotonic()
        try:
            objects = render(values_for(files), label)
        except Failure as e:
            errors.append(str(e))
            continue
        errs = check_objects(objects, label, version)
        errors += errs
        kinds: dict[str, int] = {}
        for o in objects:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        status = "ok" if not errs else f"{len(errs)} error(s)"
        print(f"  chart [{label}] {len(objects)} objects ({summary}): {status} in {time.monotonic() - t0:.1f}s")

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
