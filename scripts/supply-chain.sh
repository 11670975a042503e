#!/usr/bin/env bash
# Supply-chain checks, run by scripts/test.sh after the tests:
# - licences, banned crates and sources with cargo-deny (rules in deny.toml);
# - known advisories with cargo-audit against the RustSec snapshot in
#   ../shared/advisory-db (it cannot be downloaded on this machine, hence
#   --no-fetch); where that folder is absent the check says so and is skipped.
#
# A missing tool is installed from crates.io (cargo install --locked), once:
# on a busy 2-core machine that took 19 minutes (cargo-audit) and 10
# (cargo-deny), a one-time cost on a new machine; afterwards both checks
# take seconds. JYT_INSTALL_SUPPLY_CHAIN_TOOLS=0 skips a missing tool
# instead (saying so), for a quick local run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# tool <cargo subcommand> <crate>: true when `cargo <subcommand>` is usable.
tool() {
  local sub=$1 crate=$2
  if cargo "$sub" --version >/dev/null 2>&1; then
    return 0
  fi
  if [ "${JYT_INSTALL_SUPPLY_CHAIN_TOOLS:-1}" = 1 ]; then
    log "installing $crate (missing)"
    cargo install --locked "$crate"
    return 0
  fi
  log "skipped: $crate is not installed and JYT_INSTALL_SUPPLY_CHAIN_TOOLS=0 (cargo install --locked $crate)"
  return 1
}

if tool deny cargo-deny; then
  # cargo-deny reads the metadata of every platform's dependencies, while a
  # build downloads only this host's: on a new machine the others (e.g.
  # wasm-bindgen) are not in the cache yet and --offline fails on them.
  log "cargo fetch --locked (every platform's crates, for cargo-deny)"
  cargo fetch --locked
  log "cargo deny check licenses bans sources"
  cargo deny --locked --offline check --hide-inclusion-graph licenses bans sources
fi

advisory_db=../shared/advisory-db
if [ ! -d "$advisory_db" ]; then
  log "skipped: no RustSec advisory database at $advisory_db (it cannot be fetched here)"
elif tool audit cargo-audit; then
  log "cargo audit against the RustSec snapshot in $advisory_db"
  cargo audit --db "$advisory_db" --no-fetch
fi
