# shellcheck shell=bash
# Throwaway PostgreSQL for the demo, the tests and the benchmarks.
#
# Source this file, then call `pg_start`. It installs PostgreSQL with apt-get
# when no server binaries are found, creates a fresh cluster in a temporary
# folder (as the `postgres` OS user when running as root, since initdb refuses
# root), starts it on a free loopback port, exports DATABASE_URL, and stops and
# removes everything when the calling script exits.
#
# Environment: PG_EXTRA_OPTS, extra server options appended to the fixed ones
# (default empty), e.g. PG_EXTRA_OPTS="-c shared_preload_libraries=pg_stat_statements".

pg_log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

pg_find_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null)"
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    return 1
}

pg_install() {
    pg_log "PostgreSQL server not found; installing it with apt-get"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq postgresql >/dev/null
}

pg_free_port() {
    local p
    for p in $(seq 54329 54529); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

pg_stop() {
    if [ -n "${PG_DATA_DIR:-}" ] && [ -d "$PG_DATA_DIR" ]; then
        $PG_AS "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_ROOT"
    fi
}

pg_start() {
    PG_BIN="$(pg_find_bindir)" || { pg_install; PG_BIN="$(pg_find_bindir)"; } || {
        echo "error: PostgreSQL server binaries not found after installing" >&2; return 1; }
    PG_ROOT="$(mktemp -d /tmp/matchmaker-pg.XXXXXX)"
    PG_DATA_DIR="$PG_ROOT/data"
    PG_AS=""
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        chown postgres "$PG_ROOT"
        PG_AS="runuser -u postgres --"
    fi
    chmod 755 "$PG_ROOT"
    trap pg_stop EXIT
    PG_PORT="$(pg_free_port)"
    pg_log "starting a throwaway PostgreSQL ($("$PG_BIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PG_PORT in $PG_ROOT"
    $PG_AS "$PG_BIN/initdb" -D "$PG_DATA_DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_ROOT/initdb.log" 2>&1 \
        || $PG_AS "$PG_BIN/initdb" -D "$PG_DATA_DIR" -U postgres --auth=trust -E UTF8 --no-locale >"$PG_ROOT/initdb.log" 2>&1 \
        || { cat "$PG_ROOT/initdb.log" >&2; return 1; }
    # Durability is not needed for a throwaway cluster; speed is.
    # PG_EXTRA_OPTS (default empty) appends server options, e.g.
    # "-c shared_preload_libraries=pg_stat_statements" for the benchmarks.
    $PG_AS "$PG_BIN/pg_ctl" -D "$PG_DATA_DIR" -l "$PG_ROOT/server.log" -w -t 60 \
        -o "-p $PG_PORT -k $PG_ROOT -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=512MB${PG_EXTRA_OPTS:+ $PG_EXTRA_OPTS}" \
        start >/dev/null || { cat "$PG_ROOT/server.log" >&2; return 1; }
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/matchmaker"
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE matchmaker" >/dev/null
    export PSQL="$PG_BIN/psql"
}
