#!/usr/bin/env bash
# Where a service's heap goes in a peak-day run: that service's process
# under heaptrack, then its heap at its peak, summed by what allocated it.
#
#   loadtest/heap-profile.sh ROLE OUT [peak-day options]
#   loadtest/heap-profile.sh hospitals /tmp/runs/heap \
#       --attempts 85000 --patients 17000 --target-bookings 17000 --capacity 12 --target-seconds 15
#
# ROLE: hospitals, gateway or cards. The load test is built with glibc's
# malloc (feature `system-allocator`: heaptrack wraps malloc, and mimalloc
# would hide every Rust allocation from it) and copied to OUT.bin, so the
# next plain release build compiles the load test's crate again. Writes
# OUT.log (the run), OUT/ (its results), OUT.heaptrack.zst, OUT.peak.txt
# (heaptrack_print's flame graph of the heap at its peak) and prints that
# peak by kind and the largest allocation sites outside the routers. The
# run's timings and RSS figures are not the service's (heaptrack slows
# every allocation, and the sampler reads the wrapper's process): only
# the heap is.
set -euo pipefail
role=$1 out=$2
shift 2
command -v heaptrack >/dev/null || { echo "heaptrack is not installed (apt-get install heaptrack)" >&2; exit 1; }
cargo build --release -p loadtest --features system-allocator
cp target/release/loadtest "$out.bin"
rm -f "$out".heaptrack*.zst
wrapper=$(mktemp)
trap 'rm -f "$wrapper"' EXIT
# The child's own lines (its port, its answers to clock moves) pass on
# stdout; heaptrack's do not.
cat > "$wrapper" <<EOF
#!/usr/bin/env bash
heaptrack -o "$out.heaptrack" "\$@" | grep --line-buffered -E '^(port |ports |ok\$)'
EOF
chmod +x "$wrapper"
variable="LOADTEST_WRAP_$(echo "$role" | tr '[:lower:]' '[:upper:]')"
status=0
env "$variable=$wrapper" "$out.bin" peak-day --out "$out" "$@" > "$out.log" 2>&1 || status=$?
echo "peak-day exited with $status (its log: $out.log)"
# heaptrack writes its file after the service exits (its stdin closed with
# the run): wait for it, for at most two minutes.
deadline=$((SECONDS + 120))
while pgrep -f "heaptrack.*-o $out.heaptrack" > /dev/null; do
  ((SECONDS < deadline)) || { echo "heaptrack still running after 120 s" >&2; exit 1; }
  sleep 1
done
file=$(ls "$out".heaptrack*.zst)
heaptrack_print -f "$file" --print-flamegraph "$out.peak.txt" --flamegraph-cost-type peak > /dev/null
heaptrack_print -f "$file" 2>/dev/null | grep -E '^(peak heap memory|peak RSS|total runtime)'
python3 - "$out.peak.txt" <<'PY'
import collections, re, sys

# Each allocation is put down to the deepest frame that names an owner:
# the services' own code or one of these libraries. The apps' routers are
# what building an app allocates (`AppInit`), whoever's frame is deepest.
OWNERS = [
    ("the services' own code", r"slot_inventory|gateway[:.]|card_issuing|jyt_"),
    ("HTTP server (actix-http connections, requests, responses)", r"actix_http|actix_server|actix_web"),
    ("PostgreSQL client (tokio-postgres, deadpool)", r"tokio_postgres|deadpool"),
    ("Redis client", r"redis[:.]"),
    ("HTTP client (hyper, reqwest)", r"hyper|reqwest"),
    ("metrics and tracing", r"prometheus|opentelemetry|tracing_subscriber|tracing_core"),
]
ROUTERS = "routers (an actix app per listener and worker)"
# Frames of the standard library, of allocation helpers and unnamed ones name no owner.
GENERIC = r"^(0x|_R|__rust|alloc::|core::|std::|bytes::|hashbrown::|_\$LT\$(alloc|core|std|bytes)\.\.)"
total = 0
kinds = collections.Counter()
sites = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, cost = line.rstrip().rpartition(" ")
    cost = int(cost)
    total += cost
    frames = [re.sub(r"::h[0-9a-f]{16}$", "", f) for f in stack.split(";") if f and not re.match(GENERIC, f)]
    kind, site = "other", frames[-1] if frames else "?"
    if "AppInit" in stack:
        kind = ROUTERS
    else:
        for frame in reversed(frames):
            owner = next((k for k, pattern in OWNERS if re.search(pattern, frame)), None)
            if owner:
                kind, site = owner, frame
                break
    kinds[kind] += cost
    if kind != ROUTERS:
        sites[(kind, site[-110:])] += cost
print(f"heap at its peak: {total / 1e6:.1f} MB")
for kind, cost in kinds.most_common():
    print(f"  {cost / 1e6:6.1f} MB  {kind}")
print("largest sites outside the routers (the deepest frame naming an owner):")
for (kind, site), cost in sites.most_common(15):
    print(f"  {cost / 1e6:6.2f} MB  {site}  [{kind}]")
PY
