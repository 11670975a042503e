# Sourced by scripts/test.sh: make sure PostgreSQL and Redis answer, and
# export where they are for the tests (JYT_TEST_PG_ADMIN_URL,
# JYT_TEST_REDIS_URL).
#
# Order of preference: the machine's own servers on the standard ports
# (started if installed but stopped); otherwise private servers with their
# data under .jyt/ (installed with apt-get first when missing and root).

PG_URL_DEFAULT="postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL_DEFAULT="redis://127.0.0.1:6379"
PRIVATE_PG_PORT=55432
PRIVATE_REDIS_PORT=56379

log() { printf '==> %s\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  if ! is_root || ! command -v apt-get >/dev/null; then
    log "missing: $*; install them (apt-get install -y $*) and run again"
    return 1
  fi
  log "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

pg_bin() {
  # Debian keeps initdb/pg_ctl under /usr/lib/postgresql/<version>/bin.
  local name=$1 found
  found=$(command -v "$name" 2>/dev/null || true)
  if [ -z "$found" ]; then
    found=$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  printf '%s' "$found"
}

pg_answers() { psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1; }
redis_answers() { redis-cli -u "$1" ping 2>/dev/null | grep -q PONG; }

wait_for() {
  local what=$1; shift
  for _ in $(seq 1 150); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  log "$what did not answer within 30 s"
  return 1
}

ensure_postgres() {
  command -v psql >/dev/null || apt_install postgresql-client postgresql
  # The fault tests start and stop PostgreSQL servers of their own (initdb,
  # pg_ctl), even when the machine's server answers; under CI they fail
  # without them rather than skip.
  if [ -z "$(pg_bin initdb)" ] || [ -z "$(pg_bin pg_ctl)" ]; then
    apt_install postgresql || case ${CI:-} in '' | 0 | false | FALSE | False) ;; *) return 1 ;; esac
  fi
  if pg_answers "$PG_URL_DEFAULT"; then
    export JYT_TEST_PG_ADMIN_URL=$PG_URL_DEFAULT
    return 0
  fi
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting the machine's PostgreSQL $version cluster"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    if wait_for "PostgreSQL" pg_answers "$PG_URL_DEFAULT"; then
      export JYT_TEST_PG_ADMIN_URL=$PG_URL_DEFAULT
      return 0
    fi
  fi
  local url="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres"
  if ! pg_answers "$url"; then
    [ -n "$(pg_bin initdb)" ] || apt_install postgresql
    local data="$PWD/.jyt/test-postgres" run=()
    mkdir -p "$data"
    if is_root; then chown -R postgres:postgres "$data"; run=(runuser -u postgres --); fi
    if [ ! -f "$data/PG_VERSION" ]; then
      log "initialising a private PostgreSQL in $data"
      "${run[@]}" "$(pg_bin initdb)" -D "$data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    fi
    "${run[@]}" "$(pg_bin pg_ctl)" -D "$data" -l "$data/server.log" -w \
      -o "-p $PRIVATE_PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$data -c max_connections=300" \
      start >/dev/null
  fi
  wait_for "private PostgreSQL" pg_answers "$url"
  export JYT_TEST_PG_ADMIN_URL=$url
}

ensure_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  if redis_answers "$REDIS_URL_DEFAULT"; then
    export JYT_TEST_REDIS_URL=$REDIS_URL_DEFAULT
    return 0
  fi
  local url="redis://127.0.0.1:$PRIVATE_REDIS_PORT"
  if ! redis_answers "$url"; then
    mkdir -p .jyt/test-redis
    log "starting a private Redis on port $PRIVATE_REDIS_PORT"
    redis-server --daemonize yes --port "$PRIVATE_REDIS_PORT" --bind 127.0.0.1 --save "" \
      --appendonly no --dir "$PWD/.jyt/test-redis" --logfile "$PWD/.jyt/test-redis/redis.log"
  fi
  wait_for "private Redis" redis_answers "$url"
  export JYT_TEST_REDIS_URL=$url
}

# Databases and keys earlier test runs left behind (tests never share them,
# so anything left is garbage).
clean_test_leftovers() {
  local db
  for db in $(psql "$JYT_TEST_PG_ADMIN_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'jyt\_test\_%'"); do
    psql "$JYT_TEST_PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  done
  redis-cli -u "$JYT_TEST_REDIS_URL" --scan --pattern 'jyt-test:*' \
    | xargs -r -n 500 redis-cli -u "$JYT_TEST_REDIS_URL" del >/dev/null
}
