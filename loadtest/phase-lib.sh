# Shared by the scripts that watch one phase of a peak-day run
# (profile-phase.sh, pg-phase-cpu.sh); sourced, not run.

# Start `BIN peak-day ARGS... --out OUT` in the background, its log in
# OUT.log; its pid in $run.
start_peak_day() {
  local bin=$1 out=$2
  shift 2
  "$bin" peak-day "$@" --out "$out" >"$out.log" 2>&1 &
  run=$!
  run_log=$out.log
}

# Wait until the run's log holds LINE; fail if the run ends first.
wait_for_line() {
  until grep -q "$1" "$run_log" 2>/dev/null; do
    kill -0 "$run" 2>/dev/null || { echo "the run ended before '$1'" >&2; exit 1; }
    sleep 0.05
  done
}
