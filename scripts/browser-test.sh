#!/usr/bin/env bash
# End-to-end test of the operators' console in headless Chromium: builds
# channel-accounting, runs it on a fresh PostgreSQL database and Redis key
# prefix, seeds a morning of events at 34 hospitals, logs in through the
# page as the city operator and as one hospital's operator, visits every
# page, checks the figures and the screenshots, and saves them to
# docs/console/ (the README shows them).
#
# Needs Debian's chromium and chromium-driver, and fonts-noto-cjk so that
# 京医通 is drawn as glyphs rather than boxes (each installed with apt-get
# when missing and root), and python3 (standard library only: chromedriver
# is driven through its W3C WebDriver HTTP API, so nothing is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

started=$(date +%s)
target=${CARGO_TARGET_DIR:-target}
out=$target/browser-test
shots=docs/console
mkdir -p "$out" "$shots"

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver
fi
# Without a CJK font Chromium draws 京医通 as boxes; the test checks it does not.
if ! fc-list :lang=zh family 2>/dev/null | grep -q .; then
  apt_install fonts-noto-cjk
fi
command -v python3 >/dev/null || { log "python3 is required"; exit 1; }

ensure_postgres
ensure_redis

log "building channel-accounting and the console city"
cargo build --locked -p channel-accounting --bin channel-accounting
cargo build --locked -p jyt-system-tests --example console-city
bin=$target/debug/channel-accounting
# One hospital's operator, to check that they never see another hospital.
hospital_password=pumch-browser-$(python3 -c 'import uuid; print(uuid.uuid4().hex[:8])')
hospital_hash=$(printf '%s\n' "$hospital_password" | "$bin" hash-password)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
suffix=$(python3 -c 'import uuid; print(uuid.uuid4().hex[:12])')
db=jyt_test_browser_$suffix
prefix=jyt-test:browser-$suffix
db_url=$(python3 - "$JYT_TEST_PG_ADMIN_URL" "$db" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
print(urllib.parse.urlunparse(u._replace(path="/" + sys.argv[2])))
PY
)
psql "$JYT_TEST_PG_ADMIN_URL" -qc "CREATE DATABASE \"$db\"" >/dev/null

service_pid=""
driver_pid=""
city_pid=""
cleanup() {
  local pid
  # The console city stops on SIGINT (the test kit keeps SIGTERM for itself).
  [ -n "$city_pid" ] && kill -INT "$city_pid" 2>/dev/null
  for pid in $service_pid $driver_pid $city_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  psql "$JYT_TEST_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$JYT_TEST_REDIS_URL" --scan --pattern "$prefix:*" \
    | xargs -r redis-cli -u "$JYT_TEST_REDIS_URL" del >/dev/null 2>&1 || true
}
trap cleanup EXIT

port=$(free_port)
log "channel-accounting on port $port (database $db, Redis prefix $prefix)"
JYT_CHANNEL_ACCOUNTING__HTTP__PORT=$port \
JYT_CHANNEL_ACCOUNTING__HTTP__WORKERS=2 \
JYT_CHANNEL_ACCOUNTING__POSTGRES__URL=$db_url \
JYT_CHANNEL_ACCOUNTING__REDIS__URLS=$JYT_TEST_REDIS_URL \
JYT_CHANNEL_ACCOUNTING__REDIS__KEY_PREFIX=$prefix \
JYT_CHANNEL_ACCOUNTING__OPERATORS__DEMO_ACCOUNT=true \
JYT_CHANNEL_ACCOUNTING__OPERATORS__ACCOUNTS__PUMCH_OPS__ROLE=hospital \
JYT_CHANNEL_ACCOUNTING__OPERATORS__ACCOUNTS__PUMCH_OPS__HOSPITAL_ID=pumch \
JYT_CHANNEL_ACCOUNTING__OPERATORS__ACCOUNTS__PUMCH_OPS__PASSWORD_HASH=$hospital_hash \
JYT_CHANNEL_ACCOUNTING__TELEMETRY__LOG_FILTER=warn \
  "$bin" >"$out/channel-accounting.log" 2>&1 &
service_pid=$!

# A real city (gateway, two hospitals, card-issuing) with its own console
# wired to the gateway's relay, from the system tests' kit: fresh databases
# and Redis prefix, port 0 everywhere. It prints one JSON line, then runs
# until killed.
"$target/debug/examples/console-city" >"$out/city.json" 2>"$out/city.log" &
city_pid=$!

driver_port=$(free_port)
chromedriver --port="$driver_port" >"$out/chromedriver.log" 2>&1 &
driver_pid=$!

wait_for "channel-accounting" curl -sfo /dev/null "http://127.0.0.1:$port/readyz" \
  || { cat "$out/channel-accounting.log" >&2; exit 1; }
wait_for "chromedriver" curl -sfo /dev/null "http://127.0.0.1:$driver_port/status" \
  || { cat "$out/chromedriver.log" >&2; exit 1; }

# Its patient's no-show takes the hospital's sweeper a few seconds.
for _ in $(seq 1 300); do
  grep -q console_url "$out/city.json" && break
  kill -0 "$city_pid" 2>/dev/null || { cat "$out/city.log" >&2; exit 1; }
  sleep 0.3
done
grep -q console_url "$out/city.json" || { log "the console city did not start in 90 s"; exit 1; }

log "driving the console in headless Chromium"
python3 tests/browser/console_test.py \
  --base-url "http://127.0.0.1:$port" \
  --redis-url "$JYT_TEST_REDIS_URL" \
  --prefix "$prefix" \
  --webdriver "http://127.0.0.1:$driver_port" \
  --screenshots "$shots" \
  --hospital-login pumch_ops \
  --hospital-password "$hospital_password" \
  --city "$(head -1 "$out/city.json")"
log "browser test green in $(( $(date +%s) - started )) s"
