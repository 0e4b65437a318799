#!/usr/bin/env bash
# Local PostgreSQL 15 for the tests: our own cluster, logical decoding on, listening on
# 127.0.0.1 with password auth (user postgres, password postgres), started with pg_ctl as the
# OS user `postgres` (PostgreSQL refuses to run as root).
#
#   postgres.sh start            initdb if needed, start, wait until it accepts connections
#   postgres.sh stop             fast shutdown (disconnects Debezium's replication sessions)
#   postgres.sh status           exit 0 when running and ready, 3 otherwise
#   postgres.sh psql [ARGS...]   psql over TCP as postgres (e.g. `psql -d mydb -c 'select 1'`)
#   postgres.sh seed [DBNAME]    create DBNAME (default $PG_SEED_DB) with the seed schema,
#                                rows and publication `agent_context` unless it exists
#   postgres.sh reset DBNAME     drop DBNAME (its sessions and replication slots too) and
#                                create it again from the seed: one fresh database per test
#   postgres.sh drop DBNAME      drop DBNAME and its replication slots
#   postgres.sh prune PREFIX     drop every database whose name starts with PREFIX (e.g. e2e_:
#                                leftovers of interrupted test runs, whose slots retain WAL)
#   postgres.sh list             databases and replication slots
#   postgres.sh url [DBNAME]     postgresql://postgres:postgres@127.0.0.1:PORT/DBNAME
#   postgres.sh env              shell exports: PGHOST PGPORT PGUSER PGPASSWORD DATABASE_URL
#
# Environment:
#   PGPORT        (5432)
#   PG_SEED_DB    (agent_context) database that `seed` and `start` with PG_SEED=1 create
#   PG_SEED       (1) `start` seeds $PG_SEED_DB once; 0 = leave the cluster empty
#   PG_SEED_SQL   (tests/stack/connect/seed.sql) the schema + rows + publication
#   PG_BIN        (/usr/lib/postgresql/15/bin) installed with apt (postgresql-15) if absent
#   PG_DATA       cluster directory; default $STACK_STATE/postgres/data when the postgres user
#                 can reach it, otherwise under postgres's home (root's home is mode 0700):
#                 /var/lib/postgresql/agent-context/<hash of $STACK_STATE>/data.
# Log: $STACK_STATE/logs/postgres.log.
STACK_NAME=postgres
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_HOST=127.0.0.1
PGPORT="${PGPORT:-5432}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_SEED_DB="${PG_SEED_DB:-agent_context}"
PG_SEED="${PG_SEED:-1}"
PG_SEED_SQL="${PG_SEED_SQL:-$STACK_DIR/connect/seed.sql}"
PG_LOG="$STACK_LOGS/postgres.log"
# PostgreSQL refuses to run as root: as root we run it as the OS user postgres (created by
# the postgresql-15 package); as anyone else, as ourselves.
if [[ $(id -u) -eq 0 ]]; then PG_OS_USER=postgres; else PG_OS_USER="$(id -un)"; fi
PG_PASSWORD=postgres

usage() {
    sed -n '2,/^STACK_NAME=/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# as_pg CMD...: run CMD as the OS user postgres (exec, no extra process; keeps our fds).
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "$@"
    else
        "$@"
    fi
}
# chown_pg PATH...: hand PATHs to the postgres user (nothing to do when that is us).
chown_pg() { [[ $(id -u) -ne 0 ]] || chown "$PG_OS_USER:$PG_OS_USER" "$@"; }

ensure_postgres() {
    if [[ ! -x $PG_BIN/pg_ctl ]]; then
        apt_install postgresql-15 postgresql-client-15
    fi
    [[ -x $PG_BIN/pg_ctl ]] || die "$PG_BIN/pg_ctl still missing after apt-get install postgresql-15"
    getent passwd "$PG_OS_USER" >/dev/null || die "OS user $PG_OS_USER missing (the postgresql-15 package creates it)"
}

# The cluster directory (see the header). Must be reachable by the postgres user.
pg_data_dir() {
    if [[ -n ${PG_DATA:-} ]]; then
        printf '%s\n' "$PG_DATA"
        return
    fi
    mkdir -p "$STACK_STATE/postgres"
    if as_pg test -x "$STACK_STATE/postgres" 2>/dev/null; then
        chown_pg "$STACK_STATE/postgres"
        printf '%s\n' "$STACK_STATE/postgres/data"
    else
        local home hash
        home="$(getent passwd "$PG_OS_USER" | cut -d: -f6)"
        hash="$(printf '%s' "$STACK_STATE" | md5sum | cut -c1-10)"
        printf '%s\n' "$home/agent-context/$hash/data"
    fi
}

PG_DATA_DIR=""
init_paths() {
    PG_DATA_DIR="$(pg_data_dir)"
    PG_SOCK_DIR="$(dirname "$PG_DATA_DIR")/sock"
}

# psql over TCP with the password (what Debezium does too).
pg_psql() {
    PGPASSWORD="$PG_PASSWORD" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
        -h "$PG_HOST" -p "$PGPORT" -U postgres "$@"
}

pg_ready() { "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PGPORT" -U postgres -d postgres -t 2; }

do_initdb() {
    local parent pwfile
    parent="$(dirname "$PG_DATA_DIR")"
    mkdir -p "$parent"
    chown_pg "$parent"
    # Every missing ancestor under postgres's home must be traversable by postgres.
    [[ $parent == "$STACK_STATE"/* ]] || chown_pg "$(dirname "$parent")"
    as_pg mkdir -p "$PG_SOCK_DIR"
    pwfile="$(as_pg mktemp)"
    printf '%s\n' "$PG_PASSWORD" >"$pwfile"
    log "initdb $PG_DATA_DIR"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA_DIR" -U postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
        >>"$PG_LOG" 2>&1 || {
        rm -f "$pwfile"
        die "initdb failed; see $PG_LOG: $(tail -n 20 "$PG_LOG")"
    }
    rm -f "$pwfile"
    # Settings for Debezium (pgoutput). synchronous_commit=on matters for latency: with it
    # off, each change waits for the WAL writer before the walsender may ship it.
    as_pg tee -a "$PG_DATA_DIR/postgresql.conf" >/dev/null <<EOF

# ---- agent-context test stack (tests/stack/postgres.sh)
listen_addresses = '$PG_HOST'
unix_socket_directories = '$PG_SOCK_DIR'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 200
synchronous_commit = on
wal_sender_timeout = 60s
logging_collector = off
log_min_messages = warning
log_connections = off
EOF
    # initdb's pg_hba.conf already has: local trust; host (incl. replication) on
    # 127.0.0.1/32 and ::1/128 with scram-sha-256.
}

do_start() {
    local t0 pid start
    t0=$(now_ms)
    ensure_postgres
    init_paths
    if pid="$(svc_pid postgres)"; then
        pg_ready || die "our postgres (pid $pid) runs but is not ready on $PG_HOST:$PGPORT; see $PG_LOG"
        log "already running (pid $pid) on $PG_HOST:$PGPORT"
        maybe_seed
        return 0
    fi
    if port_open "$PG_HOST" "$PGPORT"; then
        die "port $PGPORT is taken by a process we did not start: $(port_owner "$PGPORT")"
    fi
    [[ -f $PG_DATA_DIR/PG_VERSION ]] || do_initdb
    # A crash may leave a postmaster.pid behind; pg_ctl handles that itself.
    # pg_ctl forks the postmaster into its own session; its output goes to our log file
    # (opened here by root, inherited by the postgres-owned processes).
    printf '\n===== %s starting postgres: pg_ctl start -D %s -p %s\n' "$(date -u +%FT%TZ)" "$PG_DATA_DIR" "$PGPORT" >>"$PG_LOG"
    # 9>&-: do not hand with_lock's lock to the server (it would hold it until it exits).
    as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA_DIR" -w -t 60 -o "-p $PGPORT" \
        </dev/null >>"$PG_LOG" 2>&1 9>&- || die "pg_ctl start failed; see $PG_LOG: $(tail -n 20 "$PG_LOG")"
    pid="$(head -n 1 "$PG_DATA_DIR/postmaster.pid")"
    start="$(proc_start_time "$pid")" || die "postmaster (pid $pid) vanished; see $PG_LOG"
    printf '%s %s\n' "$pid" "$start" >"$(pid_file postgres)"
    for _ in $(seq 100); do
        pg_ready && break
        sleep 0.1
    done
    pg_ready || die "postgres does not accept connections on $PG_HOST:$PGPORT; see $PG_LOG"
    log "started (pid $pid, data $PG_DATA_DIR) on $PG_HOST:$PGPORT in $(($(now_ms) - t0)) ms"
    maybe_seed
}

maybe_seed() {
    [[ $PG_SEED == 1 ]] || return 0
    do_seed "$PG_SEED_DB"
}

do_stop() {
    local pid
    init_paths
    if ! pid="$(svc_pid postgres 2>/dev/null)"; then
        log "postgres is not running"
        return 0
    fi
    log "stopping postgres (pid $pid)"
    # Fast: roll back open transactions, disconnect clients (Debezium holds a replication
    # session, which a smart shutdown would wait for).
    if as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA_DIR" -m fast -w -t 30 </dev/null >>"$PG_LOG" 2>&1; then
        rm -f "$(pid_file postgres)"
        log "postgres stopped"
    else
        warn "pg_ctl stop failed; signalling the postmaster"
        stop_daemon postgres 20
    fi
}

do_status() {
    local pid
    init_paths
    if pid="$(svc_pid postgres 2>/dev/null)" && pg_ready; then
        printf 'postgres running (pid %s, data %s) at %s\n' "$pid" "$PG_DATA_DIR" "$(pg_url postgres)"
        return 0
    fi
    printf 'postgres stopped\n'
    return 3
}

pg_url() { printf 'postgresql://postgres:%s@%s:%s/%s\n' "$PG_PASSWORD" "$PG_HOST" "$PGPORT" "${1:-$PG_SEED_DB}"; }

check_dbname() {
    [[ $1 =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "bad database name '$1' (lowercase letters, digits, _)"
}

require_running() {
    pg_ready || die "postgres is not running on $PG_HOST:$PGPORT (run: tests/stack/postgres.sh start)"
}

db_exists() {
    [[ "$(pg_psql -d postgres -tAc "select 1 from pg_database where datname = '$1'")" == 1 ]]
}

# do_drop DB: drop DB, first ending its sessions (Debezium's walsender included) and
# dropping the replication slots that live in it (DROP DATABASE refuses while they exist).
do_drop() {
    local db="$1"
    check_dbname "$db"
    require_running
    [[ $db != postgres ]] || die "refusing to drop the maintenance database postgres"
    pg_psql -d postgres >/dev/null <<EOF
select pg_terminate_backend(pid) from pg_stat_activity where datname = '$db' and pid <> pg_backend_pid();
select pg_terminate_backend(active_pid) from pg_replication_slots where database = '$db' and active_pid is not null;
EOF
    # A terminated walsender releases its slot a moment later.
    for _ in $(seq 50); do
        [[ "$(pg_psql -d postgres -tAc "select count(*) from pg_replication_slots where database = '$db' and active")" == 0 ]] && break
        sleep 0.1
    done
    pg_psql -d postgres >/dev/null -c "select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = '$db'"
    pg_psql -d postgres -c "drop database if exists \"$db\" with (force)"
    log "dropped database $db"
}

# ensure_heartbeat DB: a database seeded before the source watermark (ARCHITECTURE.md) gets the
# heartbeat table of the seed, in the publication: Debezium's heartbeat.action.query
# (connect/connector.properties) writes it, and its task fails without it.
ensure_heartbeat() {
    pg_psql -d "$1" -v ON_ERROR_STOP=1 >/dev/null <<'SQL' || die "adding the heartbeat table to $1 failed"
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS dbz_heartbeat(id INTEGER PRIMARY KEY, ts TIMESTAMPTZ NOT NULL, confirmed_lsn BIGINT);
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'agent_context')
     AND NOT EXISTS (SELECT 1 FROM pg_publication_tables
                     WHERE pubname = 'agent_context' AND tablename = 'dbz_heartbeat') THEN
    ALTER PUBLICATION agent_context ADD TABLE dbz_heartbeat;
  END IF;
END $$;
SQL
}

# do_seed DB: create DB from the seed unless it exists.
do_seed() {
    local db="$1"
    check_dbname "$db"
    require_running
    [[ -r $PG_SEED_SQL ]] || die "seed file $PG_SEED_SQL not readable"
    if db_exists "$db"; then
        log "database $db exists (not re-seeded; use: postgres.sh reset $db)"
        ensure_heartbeat "$db"
        return 0
    fi
    pg_psql -d postgres -c "create database \"$db\""
    pg_psql -d "$db" -f "$PG_SEED_SQL" || die "seeding $db from $PG_SEED_SQL failed"
    log "created database $db from $PG_SEED_SQL"
}

do_prune() {
    local prefix="$1" db n=0
    [[ $prefix =~ ^[a-z_][a-z0-9_]*$ ]] || die "bad prefix '$prefix' (lowercase letters, digits, _)"
    require_running
    for db in $(pg_psql -d postgres -tAc "select datname from pg_database where starts_with(datname, '$prefix') order by 1"); do
        do_drop "$db" >/dev/null
        n=$((n + 1))
    done
    log "pruned $n database(s) starting with $prefix"
}

do_list() {
    require_running
    pg_psql -d postgres -c "select datname as database from pg_database where not datistemplate order by 1" \
        -c "select slot_name, database, active, restart_lsn, confirmed_flush_lsn from pg_replication_slots order by 1"
}

do_reset() {
    do_drop "$1"
    do_seed "$1"
}

cmd="${1:-}"
[[ $# -eq 0 ]] || shift
case "$cmd" in
start) with_lock postgres do_start ;;
stop) with_lock postgres do_stop ;;
status) do_status ;;
psql)
    require_running
    pg_psql -d "$PG_SEED_DB" "$@"
    ;;
seed) do_seed "${1:-$PG_SEED_DB}" ;;
reset)
    [[ $# -eq 1 ]] || usage_die "$0 reset DBNAME"
    do_reset "$1"
    ;;
drop)
    [[ $# -eq 1 ]] || usage_die "$0 drop DBNAME"
    do_drop "$1"
    ;;
prune)
    [[ $# -eq 1 ]] || usage_die "$0 prune PREFIX"
    do_prune "$1"
    ;;
list) do_list ;;
url) pg_url "${1:-$PG_SEED_DB}" ;;
env)
    printf 'export PGHOST=%q PGPORT=%q PGUSER=postgres PGPASSWORD=%q\n' "$PG_HOST" "$PGPORT" "$PG_PASSWORD"
    printf 'export DATABASE_URL=%q\n' "$(pg_url "$PG_SEED_DB")"
    ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
