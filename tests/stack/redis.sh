#!/usr/bin/env bash
# Local Redis for the tests: our own redis-server processes (no systemd, no package daemon),
# bound to 127.0.0.1, no persistence. Two of them:
# - the plain one on REDIS_PORT, no auth (REDIS_URL);
# - the secured one on REDIS_TLS_PORT: TLS only (certificates from tls.sh, client
#   certificates optional) and ACL users, the default user off (REDIS_SECURE_*):
#     admin   everything (tests set up and inspect with it)
#     sink    what `sink run` needs (README, "Security"): $REDIS_SINK_ACL
#     rebuild what `sink rebuild` needs: $REDIS_REBUILD_ACL
#     agent   read-only, what agent-cli needs: $REDIS_AGENT_ACL
#
#   redis.sh start|stop|status|url|env
#
# Environment: REDIS_PORT (6379), REDIS_TLS_PORT (6380).
# Logs: $STACK_STATE/logs/redis.log, redis-secure.log.
# shellcheck disable=SC2034 # read by lib.sh
STACK_NAME=redis
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/stack/tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls.sh"

REDIS_HOST=127.0.0.1
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_DIR="$STACK_STATE/redis"
REDIS_LOG="$STACK_LOGS/redis.log"
REDIS_TLS_PORT="${REDIS_TLS_PORT:-6380}"
REDIS_SECURE_DIR="$STACK_STATE/redis-secure"
REDIS_SECURE_LOG="$STACK_LOGS/redis-secure.log"
# The ACLs the README documents as each binary's minimum; the tests run the binaries as
# these users, so a command missing here fails them.
REDIS_SINK_ACL='~* resetchannels -@all +@read +@write +@scripting +@transaction +@connection -@dangerous +time +info'
REDIS_REBUILD_ACL="$REDIS_SINK_ACL +flushdb +swapdb +config|get"
REDIS_AGENT_ACL='~* resetchannels -@all +@read +@connection +eval_ro +evalsha_ro'

ensure_redis() {
    command -v redis-server >/dev/null || apt_install redis-server
    command -v redis-server >/dev/null || die "redis-server still missing after apt-get install"
}

# redis_ping: a real PING over TCP (no redis-cli needed).
redis_ping() {
    local reply
    reply="$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT" || exit 1
        printf 'PING\r\n' >&3
        timeout 2 head -c 7 <&3
    )" 2>/dev/null || return 1
    [[ $reply == $'+PONG\r\n' || $reply == '+PONG' || $reply == $'+PONG\r' ]]
}

do_start() {
    local pid t0
    t0=$(now_ms)
    if pid="$(svc_pid redis)"; then
        redis_ping || die "our redis (pid $pid) runs but does not answer PING on $REDIS_HOST:$REDIS_PORT"
        log "already running (pid $pid) on $REDIS_HOST:$REDIS_PORT"
        start_secure
        return 0
    fi
    ensure_redis
    if port_open "$REDIS_HOST" "$REDIS_PORT"; then
        die "port $REDIS_PORT is taken by a process we did not start: $(port_owner "$REDIS_PORT")"
    fi
    mkdir -p "$REDIS_DIR"
    pid="$(start_daemon redis "$REDIS_LOG" redis-server \
        --bind "$REDIS_HOST" --port "$REDIS_PORT" --protected-mode yes \
        --daemonize no --supervised no --logfile '' \
        --save '' --appendonly no --dir "$REDIS_DIR")"
    wait_for_port "$REDIS_HOST" "$REDIS_PORT" 20 "$pid" || die "redis did not start; see $REDIS_LOG: $(tail -n 20 "$REDIS_LOG")"

    for _ in $(seq 50); do
        redis_ping && break
        sleep 0.1
    done
    redis_ping || die "redis does not answer PING; see $REDIS_LOG"
    log "started (pid $pid) on $REDIS_HOST:$REDIS_PORT in $(($(now_ms) - t0)) ms"
    start_secure
}

# secure_ready: the TLS port answers PING as admin.
secure_ready() {
    redis-cli --tls --cacert "$STACK_TLS/ca.pem" -h "$REDIS_HOST" -p "$REDIS_TLS_PORT" \
        --user admin --pass "$(stack_secret redis-admin)" --no-auth-warning PING 2>/dev/null |
        grep -qx PONG
}

# start_secure: the TLS + ACL instance.
start_secure() {
    local pid
    if pid="$(svc_pid redis-secure)"; then
        secure_ready || die "our secured redis (pid $pid) does not answer on $REDIS_HOST:$REDIS_TLS_PORT"
        return 0
    fi
    ensure_tls
    command -v redis-cli >/dev/null || apt_install redis-tools
    if port_open "$REDIS_HOST" "$REDIS_TLS_PORT"; then
        die "port $REDIS_TLS_PORT is taken by a process we did not start: $(port_owner "$REDIS_TLS_PORT")"
    fi
    mkdir -p "$REDIS_SECURE_DIR"
    (
        umask 077
        cat >"$REDIS_SECURE_DIR/users.acl" <<ACL
user default off
user admin on >$(stack_secret redis-admin) ~* &* +@all
user sink on >$(stack_secret redis-sink) $REDIS_SINK_ACL
user rebuild on >$(stack_secret redis-rebuild) $REDIS_REBUILD_ACL
user agent on >$(stack_secret redis-agent) $REDIS_AGENT_ACL
ACL
    )
    pid="$(start_daemon redis-secure "$REDIS_SECURE_LOG" redis-server \
        --bind "$REDIS_HOST" --port 0 --tls-port "$REDIS_TLS_PORT" \
        --tls-cert-file "$STACK_TLS/server.pem" --tls-key-file "$STACK_TLS/server.key" \
        --tls-ca-cert-file "$STACK_TLS/ca.pem" --tls-auth-clients optional \
        --aclfile "$REDIS_SECURE_DIR/users.acl" --protected-mode yes \
        --daemonize no --supervised no --logfile '' \
        --save '' --appendonly no --dir "$REDIS_SECURE_DIR")"
    wait_for_port "$REDIS_HOST" "$REDIS_TLS_PORT" 20 "$pid" || die "secured redis did not start; see $REDIS_SECURE_LOG"
    for _ in $(seq 50); do
        secure_ready && break
        sleep 0.1
    done
    secure_ready || die "secured redis does not answer PING over TLS; see $REDIS_SECURE_LOG"
    log "secured redis (TLS, ACL) started (pid $pid) on $REDIS_HOST:$REDIS_TLS_PORT"
}

do_status() {
    local pid
    if pid="$(svc_pid redis 2>/dev/null)" && redis_ping; then
        printf 'redis running (pid %s) at %s\n' "$pid" "$(redis_url)"
        if pid="$(svc_pid redis-secure 2>/dev/null)" && secure_ready; then
            printf 'secured redis running (pid %s) at %s\n' "$pid" "$(secure_url)"
        fi
        return 0
    fi
    printf 'redis stopped\n'
    return 3
}

redis_url() { printf 'redis://%s:%s\n' "$REDIS_HOST" "$REDIS_PORT"; }
secure_url() { printf 'rediss://%s:%s\n' "$REDIS_HOST" "$REDIS_TLS_PORT"; }

do_env() {
    printf 'export REDIS_URL=%q\n' "$(redis_url)"
    svc_pid redis-secure >/dev/null 2>&1 || return 0
    printf 'export REDIS_SECURE_URL=%q\n' "$(secure_url)"
    printf 'export REDIS_SECURE_CA_FILE=%q\n' "$STACK_TLS/ca.pem"
    printf 'export REDIS_SECURE_CERT_FILE=%q\n' "$STACK_TLS/client.pem"
    printf 'export REDIS_SECURE_KEY_FILE=%q\n' "$STACK_TLS/client.key"
    printf 'export REDIS_SECURE_ADMIN_PASSWORD=%q\n' "$(stack_secret redis-admin)"
    printf 'export REDIS_SECURE_SINK_PASSWORD=%q\n' "$(stack_secret redis-sink)"
    printf 'export REDIS_SECURE_REBUILD_PASSWORD=%q\n' "$(stack_secret redis-rebuild)"
    printf 'export REDIS_SECURE_AGENT_PASSWORD=%q\n' "$(stack_secret redis-agent)"
}

do_stop() {
    stop_daemon redis-secure 20
    stop_daemon redis 20
}

case "${1:-}" in
start) with_lock redis do_start ;;
stop) with_lock redis do_stop ;;
status) do_status ;;
url) redis_url ;;
env) do_env ;;
*) usage_die "$0 start|stop|status|url|env" ;;
esac
