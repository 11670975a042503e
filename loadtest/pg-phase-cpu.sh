#!/usr/bin/env bash
# Where PostgreSQL's CPU goes over one phase of a peak-day run, by kind of
# server process (the backends of this run's databases, autovacuum, the WAL
# writer, the checkpointer, ...): each process's utime + stime from /proc,
# read when the phase's log line appears and again at END (another log
# line, or a number of seconds later).
#
#   loadtest/pg-phase-cpu.sh BIN OUT START_LOG_LINE END [peak-day options]
#   loadtest/pg-phase-cpu.sh ./target/release/loadtest /tmp/runs/pc "cancellations" 2.8 \
#       --attempts 85000 --patients 17000 --target-bookings 17000 --capacity 12 --target-seconds 15
#
# Writes OUT.log (the run), OUT/ (its results) and OUT.pg.txt (seconds of
# CPU per kind of process, largest first).
set -euo pipefail
bin=$1 out=$2 start=$3 end=$4
shift 4

snapshot() {
  python3 - "$1" <<'PY'
import json, os, sys
procs = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        if not open(f'/proc/{pid}/comm').read().startswith('postgres'):
            continue
        stat = open(f'/proc/{pid}/stat').read()
        fields = stat[stat.rindex(')') + 2:].split()
        title = open(f'/proc/{pid}/cmdline').read().replace('\0', ' ').strip()
        procs[pid] = (int(fields[11]) + int(fields[12]), title)
    except OSError:
        pass
json.dump(procs, open(sys.argv[1], 'w'))
PY
}

source "$(dirname "$0")/phase-lib.sh"
start_peak_day "$bin" "$out" "$@"
wait_for_line "$start"
snapshot "$out.before.json"
if [[ $end =~ ^[0-9.]+$ ]]; then
  sleep "$end"
else
  wait_for_line "$end"
fi
snapshot "$out.after.json"
wait "$run" || true
python3 - "$out.before.json" "$out.after.json" >"$out.pg.txt" <<'PY'
import collections, json, os, re, sys
before, after = (json.load(open(p)) for p in sys.argv[1:3])
ticks = os.sysconf('SC_CLK_TCK')
by_kind = collections.Counter()
for pid, (t, title) in after.items():
    kind = re.sub(r'jyt_loadtest_\w+', '<db>', title)
    kind = re.sub(r'\d+\.\d+\.\d+\.\d+\(\d+\)', '<client>', kind)
    kind = re.sub(r' (idle|INSERT|UPDATE|SELECT|COMMIT|BEGIN|WITH|DELETE|idle in transaction).*$', '', kind)
    by_kind[kind] += (t - before.get(pid, (0, ''))[0]) / ticks
for kind, seconds in by_kind.most_common():
    print(f'{seconds:8.2f} s  {kind}')
print(f'{sum(by_kind.values()):8.2f} s  all')
PY
cat "$out.pg.txt"
