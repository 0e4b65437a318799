#!/usr/bin/env bash
# Local Redis for the tests: our own redis-server process (no systemd, no package daemon),
# bound to 127.0.0.1, no persistence.
#
#   redis.sh start|stop|status|url|env
#
# Environment: REDIS_PORT (6379). Log: $STACK_STATE/logs/redis.log.
# shellcheck disable=SC2034 # read by lib.sh
STACK_NAME=redis
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_HOST=127.0.0.1
REDIS_PORT="${REDIS_PORT:-6379}"
REDIS_DIR="$STACK_STATE/redis"
REDIS_LOG="$STACK_LOGS/redis.log"

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
}

do_status() {
    local pid
    if pid="$(svc_pid redis 2>/dev/null)" && redis_ping; then
        printf 'redis running (pid %s) at %s\n' "$pid" "$(redis_url)"
        return 0
    fi
    printf 'redis stopped\n'
    return 3
}

redis_url() { printf 'redis://%s:%s\n' "$REDIS_HOST" "$REDIS_PORT"; }

case "${1:-}" in
start) with_lock redis do_start ;;
stop) with_lock redis stop_daemon redis 20 ;;
status) do_status ;;
url) redis_url ;;
env) printf 'export REDIS_URL=%q\n' "$(redis_url)" ;;
*) usage_die "$0 start|stop|status|url|env" ;;
esac
