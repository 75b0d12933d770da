# shellcheck shell=bash
# Throwaway PostgreSQL (and PgBouncer) for the demo, the tests and the
# benchmarks.
#
# Source this file, then call `pg_start`. It installs PostgreSQL with apt-get
# when no server binaries are found, creates a fresh cluster in a temporary
# folder (as the `postgres` OS user when running as root, since initdb refuses
# root), starts it on a free loopback port, exports DATABASE_URL, and stops and
# removes everything when the calling script exits (`pg_stop`).
#
# The test suite also calls:
#   pg_start_supabase  a second cluster set up like a Supabase project: TLS
#                      only (a CA and a server certificate made here), a
#                      non-superuser `postgres`, the roles anon,
#                      authenticated, service_role and authenticator; exports
#                      MATCHMAKER_TEST_SUPABASE_URL, MATCHMAKER_TEST_TLS_CA and
#                      MATCHMAKER_TEST_TLS_WRONG_CA (a CA that signed nothing).
#   pgbouncer_start    two PgBouncers in front of the first cluster, one in
#                      transaction mode and one in session mode; exports
#                      MATCHMAKER_TEST_PGBOUNCER_TRANSACTION_URL and
#                      MATCHMAKER_TEST_PGBOUNCER_SESSION_URL (no database
#                      name: tests append theirs).
#
# Environment: PG_EXTRA_OPTS, extra server options appended to the fixed ones
# (default empty), e.g. PG_EXTRA_OPTS="-c shared_preload_libraries=pg_stat_statements".

pg_log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

PG_ROOTS=()
PGB_PIDFILES=()

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

pg_apt_install() {
    pg_log "installing $* with apt-get"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$@" >/dev/null
}

pg_free_port() {
    local p
    for p in $(seq "${1:-54329}" "$(( ${1:-54329} + 200 ))"); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    return 1
}

pg_stop() {
    local f r
    for f in "${PGB_PIDFILES[@]}"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    for r in "${PG_ROOTS[@]}"; do
        if [ -d "$r/data" ]; then
            $PG_AS "$PG_BIN/pg_ctl" -D "$r/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$r"
    done
    PG_ROOTS=()
    PGB_PIDFILES=()
}

# A fresh temporary folder the postgres OS user owns (when running as root),
# in NEW_ROOT; removed by pg_stop. (Not a command substitution: the list of
# folders to remove must grow in this shell.)
pg_new_root() {
    NEW_ROOT="$(mktemp -d "/tmp/matchmaker-$1.XXXXXX")"
    PG_ROOTS+=("$NEW_ROOT")
    if [ -n "$PG_AS" ]; then chown postgres "$NEW_ROOT"; fi
    chmod 755 "$NEW_ROOT"
}

# pg_cluster ROOT PORT SUPERUSER EXTRA_OPTS: initdb and start a cluster.
pg_cluster() {
    local root="$1" port="$2" superuser="$3" extra="$4"
    $PG_AS "$PG_BIN/initdb" -D "$root/data" -U "$superuser" --auth=trust -E UTF8 --locale=C.UTF-8 >"$root/initdb.log" 2>&1 \
        || $PG_AS "$PG_BIN/initdb" -D "$root/data" -U "$superuser" --auth=trust -E UTF8 --no-locale >"$root/initdb.log" 2>&1 \
        || { cat "$root/initdb.log" >&2; return 1; }
    # Durability is not needed for a throwaway cluster; speed is.
    $PG_AS "$PG_BIN/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 \
        -o "-p $port -k $root -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=512MB${extra:+ $extra}" \
        start >/dev/null || { cat "$root/server.log" >&2; return 1; }
}

pg_start() {
    PG_BIN="$(pg_find_bindir)" || { pg_apt_install postgresql; PG_BIN="$(pg_find_bindir)"; } || {
        echo "error: PostgreSQL server binaries not found after installing" >&2; return 1; }
    PG_AS=""
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        PG_AS="runuser -u postgres --"
    fi
    # Interrupted or terminated, the script still cleans up (exit runs the
    # EXIT trap).
    trap pg_stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    pg_new_root pg
    PG_ROOT="$NEW_ROOT"
    PG_DATA_DIR="$PG_ROOT/data"
    PG_PORT="$(pg_free_port)"
    pg_log "starting a throwaway PostgreSQL ($("$PG_BIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PG_PORT in $PG_ROOT"
    pg_cluster "$PG_ROOT" "$PG_PORT" postgres "${PG_EXTRA_OPTS:-}"
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/matchmaker"
    "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE matchmaker" >/dev/null
    export PSQL="$PG_BIN/psql"
}

# Certificates for the Supabase-like cluster: a CA, a server certificate it
# signs for localhost and 127.0.0.1, and an unrelated CA.
pg_make_certs() {
    local dir="$1"
    command -v openssl >/dev/null 2>&1 || pg_apt_install openssl
    (
        cd "$dir"
        for ca in ca wrong-ca; do
            openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=matchmaker test $ca" \
                -keyout "$ca.key" -out "$ca.crt" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        done
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3 \
            -extfile server.ext -out server.crt 2>/dev/null
        chmod 600 server.key
        if [ -n "$PG_AS" ]; then chown postgres server.key server.crt; fi
        chmod 644 ca.crt wrong-ca.crt
    )
}

pg_start_supabase() {
    local root port
    pg_new_root supabase
    root="$NEW_ROOT"
    port="$(pg_free_port $(( PG_PORT + 1 )))"
    pg_make_certs "$root"
    pg_log "starting a Supabase-like PostgreSQL (TLS only, non-superuser postgres) on 127.0.0.1:$port"
    # As on Supabase, the bootstrap superuser is supabase_admin and the
    # project's `postgres` is not a superuser.
    pg_cluster "$root" "$port" supabase_admin \
        "-c ssl=on -c ssl_cert_file=$root/server.crt -c ssl_key_file=$root/server.key -c password_encryption=scram-sha-256"
    # TLS only; the worker role of the tests authenticates with a password
    # (SCRAM), everyone else is trusted on loopback.
    $PG_AS sh -c "cat > '$root/data/pg_hba.conf'" <<'EOF'
local     all  all                                trust
hostnossl all  all                  0.0.0.0/0     reject
hostssl   all  matchmaker_sb_worker 127.0.0.1/32  scram-sha-256
hostssl   all  all                  127.0.0.1/32  trust
EOF
    $PG_AS "$PG_BIN/pg_ctl" -D "$root/data" reload >/dev/null
    # Supabase's roles (supabase/postgres migrations): NOINHERIT group roles
    # for requests, BYPASSRLS for the service key, PostgREST's login.
    PGSSLMODE=require "$PG_BIN/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U supabase_admin -d postgres >/dev/null <<'EOF'
CREATE ROLE postgres LOGIN CREATEROLE CREATEDB REPLICATION BYPASSRLS;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT;
GRANT anon, authenticated, service_role TO authenticator;
GRANT anon, authenticated, service_role TO postgres;
EOF
    export MATCHMAKER_TEST_SUPABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=require"
    export MATCHMAKER_TEST_TLS_CA="$root/ca.crt"
    export MATCHMAKER_TEST_TLS_WRONG_CA="$root/wrong-ca.crt"
}

pgbouncer_start() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || pg_apt_install pgbouncer
    local bin root mode port
    bin="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
    pg_new_root pgbouncer
    root="$NEW_ROOT"
    printf '"postgres" ""\n"matchmaker_test_worker" ""\n' >"$root/users.txt"
    for mode in transaction session; do
        port="$(pg_free_port $(( PG_PORT + 20 )))"
        cat >"$root/$mode.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $root/users.txt
pool_mode = $mode
max_client_conn = 500
default_pool_size = 20
logfile = $root/$mode.log
pidfile = $root/$mode.pid
EOF
        if [ -n "$PG_AS" ]; then chown -R postgres "$root"; fi
        $PG_AS "$bin" -d "$root/$mode.ini" || { cat "$root/$mode.log" >&2; return 1; }
        PGB_PIDFILES+=("$root/$mode.pid")
        for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
        pg_log "PgBouncer $("$bin" --version | head -1 | awk '{print $2}') in $mode mode on 127.0.0.1:$port"
        case "$mode" in
            transaction) export MATCHMAKER_TEST_PGBOUNCER_TRANSACTION_URL="postgres://postgres@127.0.0.1:$port" ;;
            session) export MATCHMAKER_TEST_PGBOUNCER_SESSION_URL="postgres://postgres@127.0.0.1:$port" ;;
        esac
    done
}
