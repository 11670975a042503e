#!/usr/bin/env bash
# Installs the API fuzzer (schemathesis, pinned) into its own virtualenv,
# tests/contract/.venv, once: Debian's system Python refuses `pip install`
# outside a venv. Installs python3-venv with apt-get first when missing (as root).
set -euo pipefail
cd "$(dirname "$0")"
VERSION=4.32.5

if ! python3 -m venv --help >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    echo "tests/contract needs python3-venv" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/schemathesis ] || ! .venv/bin/schemathesis --version 2>/dev/null | grep -q "$VERSION"; then
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi
.venv/bin/schemathesis --version
