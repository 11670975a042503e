#!/usr/bin/env bash
# Installs the FHIR validator's pinned packages (package-lock.json) when
# node_modules is missing or older than the lock file; installs Node.js and
# npm with apt-get first when they are absent (as root).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "tests/fhir-validator needs Node.js (>= 18) and npm: install the nodejs and npm packages" >&2
    exit 1
  fi
fi

# `npm ci` leaves node_modules/.package-lock.json behind: newer than the
# lock file means this lock file is installed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
fi
