#!/usr/bin/env bash
# PostgreSQL's CPU per transaction for the smallest shapes of a status
# change (loadtest/README.md, 2026-12-06 09:27): each script through
# pgbench for SECONDS with CLIENTS connections, prepared statements,
# synchronous commit as the server has it. The CPU is every postgres
# process's user+system time (backends that exit are counted through the
# postmaster's children's time), so it includes commits, the WAL writer
# and the checkpointer, as the load test's "postgres (machine-wide)" does.
#
#   loadtest/pg-floor/run.sh [SECONDS] [CLIENTS] [ROUNDS] [SCRIPT...]
#
# With no SCRIPT, every script below; `update_batch8_with_event.sql` is
# the event shape eight rows to a statement (one commit for eight).
#
# Run it on a quiet machine: the figures are CPU, not wall time, but a
# busy machine still changes them.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-15}
clients=${2:-4}
rounds=${3:-2}
shift $(($# < 3 ? $# : 3))
scripts=("$@")
if [ ${#scripts[@]} -eq 0 ]; then
    scripts=(select1.sql update_plain.sql update_plain_with_event.sql update_batch8_with_event.sql
        update_with_checks.sql update_one_check.sql update_with_domains.sql)
fi
db=jyt_pg_floor
psql_() { psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_ -c "SELECT count(*) FROM pg_database WHERE datname = '$db'")" = 0 ]; then
    psql_ -c "CREATE DATABASE $db"
    psql_ -d "$db" -f setup.sql
fi
postmaster=$(head -1 "$(psql_ -c 'SHOW data_directory')/postmaster.pid")
ticks=$(getconf CLK_TCK)
cpu_ticks() {
    local own children
    own=$(for p in $(pgrep -x postgres); do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true; done | awk '{s += $1} END {print s + 0}')
    children=$(awk '{print $16 + $17}' "/proc/$postmaster/stat")
    echo $((own + children))
}
printf '%-30s %8s %10s %14s\n' script tx tx/s "pg CPU ms/tx"
for _ in $(seq "$rounds"); do
    for script in "${scripts[@]}"; do
        before=$(cpu_ticks)
        out=$(pgbench -h 127.0.0.1 -U postgres -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$script" "$db" 2>&1)
        after=$(cpu_ticks)
        tx=$(awk '/^number of transactions actually processed/ {split($NF, a, "/"); print a[1]}' <<<"$out")
        tps=$(awk '/^tps/ {printf "%.0f", $3}' <<<"$out")
        printf '%-30s %8s %10s %14.4f\n' "$script" "$tx" "$tps" "$(echo "($after - $before) * 1000 / $ticks / $tx" | bc -l)"
    done
done
