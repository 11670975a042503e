#!/usr/bin/env bash
# Offline validation of the deployment files (Helm chart, k8s/, compose).
#
#   scripts/validate-deploy.sh
#
# 1. Installs helm-python-sdk (Helm's Go library, no helm binary),
#    kubernetes-validate (bundled API schemas) and yamllint, only if missing.
# 2. Renders helm/jyt with its defaults, values-demo.yaml and values-300.yaml;
#    checks values against values.schema.json, every object against the
#    Kubernetes schemas (strict), and cross-references; checks k8s/base is
#    what the chart renders and that the k8s/overlays build and validate.
# 3. yamllint on values files, k8s/, compose.yaml and deploy/.
# Exits non-zero on any broken template, invalid object or lint error,
# naming it. No cluster, no network once the packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

need=()
python3 -c 'import helm_python' 2>/dev/null || need+=(helm-python-sdk)
python3 -c 'import kubernetes_validate' 2>/dev/null || need+=(kubernetes-validate)
python3 -c 'import yamllint' 2>/dev/null || need+=(yamllint)
if ((${#need[@]})); then
    echo "validate-deploy: installing ${need[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${need[@]}"
fi

echo "validate-deploy: chart and manifests"
python3 scripts/deploy_check.py validate

echo "validate-deploy: yamllint"
python3 -m yamllint --strict -c helm/.yamllint \
    helm/jyt/Chart.yaml helm/jyt/values.yaml helm/jyt/values-demo.yaml helm/jyt/values-300.yaml \
    k8s compose.yaml deploy

echo "validate-deploy: ok in $(($(date +%s) - start))s"
