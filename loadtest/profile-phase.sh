#!/usr/bin/env bash
# Profile one phase of a peak-day run: start the run, wait for the log
# line that opens the phase, then sample the whole machine with perf.
#
#   loadtest/profile-phase.sh BIN OUT PHASE_LOG_LINE DELAY_SECONDS SECONDS [peak-day options]
#   loadtest/profile-phase.sh ./target/release/loadtest /tmp/runs/q1 "release instant: bookings" 3 12 \
#       --attempts 85000 --patients 17000 --target-bookings 17000 --capacity 12 --target-seconds 15
#
# Writes OUT.log (the run), OUT/ (its results) and OUT.perf; read it with
# `perf report -i OUT.perf --sort comm,sym` (with call graphs: `--children`) or, per process,
# `perf script -i OUT.perf -F comm,pid,ip,sym`.
set -euo pipefail
bin=$1 out=$2 phase=$3 delay=$4 seconds=$5
shift 5
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
source "$(dirname "$0")/phase-lib.sh"
start_peak_day "$bin" "$out" "$@"
wait_for_line "$phase"
sleep "$delay"
perf record -a -g -F 499 -o "$out.perf" -- sleep "$seconds" >/dev/null 2>&1
wait "$run"
