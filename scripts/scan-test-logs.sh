#!/usr/bin/env bash
# Scan every log line the test suite captured for personal data and
# secrets: each test process writes its services' logs (our crates at
# `trace`, JSON, span fields) to its own file under $JYT_TEST_LOG_DIR
# (jyt_testkit::logs); this fails on any resident ID number, mobile number
# or configured secret (read from the test sources and settings files), on
# credential-shaped values, and when the capture looks broken: no file,
# fewer than $JYT_SCAN_MIN_LINES lines, or nothing from one of the test
# binaries in $JYT_SCAN_EXPECT. Run it after `cargo test --workspace`
# (scripts/test.sh does); extra arguments go to the scanner.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
export JYT_TEST_LOG_DIR=${JYT_TEST_LOG_DIR:-$target/test-logs}

expect=()
for binary in ${JYT_SCAN_EXPECT-system logs api domain}; do
  expect+=(--expect "$binary")
done
exec cargo run --quiet --locked -p jyt-testkit --bin scan-test-logs -- \
  --dir "$JYT_TEST_LOG_DIR" --min-lines "${JYT_SCAN_MIN_LINES:-5000}" "${expect[@]}" "$@"
