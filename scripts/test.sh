#!/usr/bin/env bash
# The whole test suite, as CI runs it: format check, clippy with warnings as
# errors, and every test against real PostgreSQL and Redis (started, and
# installed with apt-get when missing, if they are not running).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

started=$(date +%s)
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    log "adding the $component component"
    rustup component add "$component"
  fi
done

ensure_postgres
ensure_redis
log "PostgreSQL: $JYT_TEST_PG_ADMIN_URL  Redis: $JYT_TEST_REDIS_URL"
clean_test_leftovers

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "FHIR validator (FHIR.js + HL7 R4 JSON schema, pinned): npm ci only when missing"
bash tests/fhir-validator/setup.sh
log "cargo test"
# Every test process writes its services' logs here (jyt_testkit::logs);
# cleared first so the scan sees this run only.
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
export JYT_TEST_LOG_DIR=${JYT_TEST_LOG_DIR:-$target_dir/test-logs}
mkdir -p "$JYT_TEST_LOG_DIR" && find "$JYT_TEST_LOG_DIR" -maxdepth 1 -name '*.jsonl' -delete
cargo test --workspace --locked
log "logs: no ID number, phone number or secret in any captured line"
scripts/scan-test-logs.sh
log "supply chain: licences, bans, sources and advisories"
scripts/supply-chain.sh
log "load-test smoke: a small surge on both lock kinds; fails on oversell, lost booking or 5xx"
cargo run -p loadtest --locked -- smoke
log "operators' console in headless Chromium"
scripts/browser-test.sh
if [ -x scripts/validate-deploy.sh ]; then
  log "deployment manifests"
  scripts/validate-deploy.sh
fi
log "all green in $(( $(date +%s) - started )) s"
