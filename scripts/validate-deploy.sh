#!/usr/bin/env bash
# Offline validation of the deployment files (Helm chart, k8s/, compose).
#
#   scripts/validate-deploy.sh              validate
#   scripts/validate-deploy.sh render-k8s   rewrite k8s/base/jyt.yaml from the chart
#
# 1. Runs in its own virtualenv, .venv-deploy/ (gitignored; JYT_DEPLOY_VENV
#    names another), with the versions pinned in
#    scripts/deploy-requirements.txt: helm-python-sdk (Helm's Go library, no
#    helm binary), kubernetes-validate (bundled API schemas), yamllint and
#    promql-parser. Created only when missing (or when the pins changed) and
#    reused after, so a run with it in place needs no network. Debian's
#    system Python refuses `pip install` (PEP 668); a venv is how to install.
# 2. Renders helm/jyt with its defaults, values-demo.yaml and values-300.yaml;
#    checks values against values.schema.json, every object against the
#    Kubernetes schemas (strict), and cross-references; renders values the
#    chart must refuse; checks what rolls when one hospital changes or is
#    added; parses the alerts' and the dashboard's PromQL; checks k8s/base is
#    what the chart renders and that the k8s/overlays build and validate.
# 3. yamllint on values files, k8s/, compose.yaml and deploy/.
# Exits non-zero on any broken template, invalid object or lint error,
# naming it. No cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

venv=${JYT_DEPLOY_VENV:-.venv-deploy}
requirements=scripts/deploy-requirements.txt
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if ! "$venv/bin/python" -c '' 2>/dev/null || [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
    if ! "$venv/bin/python" -c '' 2>/dev/null; then
        echo "validate-deploy: creating $venv"
        # --clear: a venv left by another Python (or half made) is remade.
        python3 -m venv --clear "$venv" || {
            echo "validate-deploy: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2
            exit 1
        }
    fi
    echo "validate-deploy: installing $requirements into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-virtualenv -r "$requirements"
    echo "$want" >"$venv/.requirements.sha256"
fi
python=$venv/bin/python

if [[ "${1:-}" == render-k8s ]]; then
    exec "$python" scripts/deploy_check.py render-k8s
fi

echo "validate-deploy: chart and manifests"
"$python" scripts/deploy_check.py validate

echo "validate-deploy: yamllint"
"$python" -m yamllint --strict -c helm/.yamllint \
    helm/jyt/Chart.yaml helm/jyt/values.yaml helm/jyt/values-demo.yaml helm/jyt/values-300.yaml \
    k8s compose.yaml deploy

echo "validate-deploy: ok in $(($(date +%s) - start))s"
