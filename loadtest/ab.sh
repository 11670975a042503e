#!/usr/bin/env bash
# Compare two builds of the load test on peak-day, alternating: the
# machines here are shared and their speed drifts by a quarter within
# minutes, so only runs side by side say anything. Pair k runs B then A
# when k is odd and A then B when it is even, so neither build always
# gets the warmer machine.
#
#   loadtest/ab.sh A_BIN B_BIN PAIRS OUT [peak-day options]
#   cp target/release/loadtest /tmp/new; git stash; cargo build --release -p loadtest
#   loadtest/ab.sh ./target/release/loadtest /tmp/new 2 /tmp/runs/ab \
#       --attempts 85000 --patients 17000 --target-bookings 17000 --capacity 12 --target-seconds 15
#
# With AB_CARDS_PER_BUILD=1, each build keeps a card database of its own
# (jyt_loadtest_cards_a, _b), renamed to jyt_loadtest_cards for its runs
# and back afterwards: needed when B adds a card-issuing migration, which
# A's card-issuing refuses to start on. Each build's first run registers
# its patients.
#
# Writes OUT/<label>-<k>/ (each run's summary) and OUT/<label>-<k>.log,
# then prints one markdown row per run: H, each phase's seconds, the day,
# the phase's costliest statement's mean (with pg_stat_statements), and
# whether every correctness check passed.
set -euo pipefail
a=$1 b=$2 pairs=$3 out=$4
shift 4
mkdir -p "$out"

cards_db() {
  psql -h "${PGHOST:-127.0.0.1}" -U "${PGUSER:-postgres}" -qtAc "ALTER DATABASE $1 RENAME TO $2" 2>/dev/null || true
}

run() {
  local label=$1 bin=$2 k=$3
  shift 3
  local own="jyt_loadtest_cards_${label,,}"
  [[ ${AB_CARDS_PER_BUILD:-0} == 1 ]] && cards_db "$own" jyt_loadtest_cards
  "$bin" peak-day "$@" --out "$out/$label-$k" >"$out/$label-$k.log" 2>&1 || true
  [[ ${AB_CARDS_PER_BUILD:-0} == 1 ]] && cards_db jyt_loadtest_cards "$own"
  return 0
}

for k in $(seq 1 "$pairs"); do
  if (( k % 2 )); then
    run B "$b" "$k" "$@"; run A "$a" "$k" "$@"
  else
    run A "$a" "$k" "$@"; run B "$b" "$k" "$@"
  fi
done

python3 - "$out" "$pairs" <<'EOF'
import json, os, sys

out, pairs = sys.argv[1], int(sys.argv[2])
header = None
for k in range(1, pairs + 1):
    order = ["B", "A"] if k % 2 else ["A", "B"]
    for label in order:
        path = os.path.join(out, f"{label}-{k}", "peak-day-summary.json")
        if not os.path.exists(path):
            print(f"| {label}-{k} | no summary: see {path[:-len('/peak-day-summary.json')]}.log |")
            continue
        with open(path) as f:
            d = json.load(f)
        phases = [(p["name"].split(":")[0].split(" (")[0], p["seconds"]) for p in d["phases"]]
        costliest = []
        for c in d["costs"]:
            top = [s for s in c.get("statements", []) if s["query"] != "(all statements)"]
            if top:
                s = top[0]
                costliest.append(f'{c["phase"].split(" (")[0]} {s["total_ms"] / max(s["calls"], 1):.2f} ms')
        passed = not d["check"]["problems"]
        if header is None:
            names = [n for n, _ in phases]
            header = ["run", "H"] + names + ["the day", "costliest statement per phase (mean)", "checks"]
            print("| " + " | ".join(header) + " |")
            print("|" + "---|" * len(header))
        cells = [f"{label}-{k}", f'{d["machine_h_per_second"]:,.0f}/s']
        cells += [f"{s:.1f} s" for _, s in phases]
        cells += [f'{d["replay_seconds"]:.1f} s', "; ".join(costliest), "passed" if passed else "FAILED"]
        print("| " + " | ".join(cells) + " |")
EOF
