# shellcheck shell=bash
# Shared helpers for the local service stack (tests/stack/*.sh). Source it, do not run it.
#
# Directories (override with the environment):
#   AGENT_CONTEXT_CACHE  downloads that survive between runs   (default ~/.cache/agent-context)
#                        Maven repository: $STACK_CACHE/m2
#   AGENT_CONTEXT_STATE  data, logs, pid files, generated config (default ~/.local/state/agent-context)
#                        $STACK_STATE/run/<svc>.pid   "<pid> <start time>" of a service we started
#                        $STACK_STATE/logs/<svc>.log  its stdout/stderr
#                        $STACK_STATE/<svc>/          its data and config
#                        $STACK_STATE/env             written by up.sh
#
# Services are started detached (own session and process group, stdin from /dev/null,
# output to the log file) so they outlive the calling script and never hold its pipes.
# A pid file records the process start time too, so a reused pid is seen as stale.

set -euo pipefail

STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STACK_REPO="$(cd "$STACK_DIR/../.." && pwd)"
STACK_CACHE="${AGENT_CONTEXT_CACHE:-$HOME/.cache/agent-context}"
STACK_STATE="${AGENT_CONTEXT_STATE:-$HOME/.local/state/agent-context}"
STACK_RUN="$STACK_STATE/run"
STACK_LOGS="$STACK_STATE/logs"
STACK_NAME="${STACK_NAME:-stack}"
export STACK_DIR STACK_REPO STACK_CACHE STACK_STATE

mkdir -p "$STACK_CACHE" "$STACK_RUN/locks" "$STACK_LOGS"

# ---------------------------------------------------------------- logging

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S.%3N)" "$STACK_NAME" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() {
    log "ERROR: $*"
    exit 1
}

# Milliseconds since the epoch (for timing).
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- packages

# apt_install PKG...: install Debian packages; `apt-get update` first (once per process).
STACK_APT_UPDATED=0
apt_install() {
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    # Never let a package's maintainer script start its own daemon (we run our own).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        created_policy=1
    fi
    local rc=0
    if [[ $STACK_APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || rc=$?
        STACK_APT_UPDATED=1
    fi
    if [[ $rc -eq 0 ]]; then
        log "apt-get install -y $*"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >&2 || rc=$?
    fi
    [[ $created_policy -eq 0 ]] || "${sudo[@]}" rm -f "$policy"
    [[ $rc -eq 0 ]] || die "apt-get install $* failed (exit $rc)"
}

# ---------------------------------------------------------------- pid files

pid_file() { printf '%s/%s.pid\n' "$STACK_RUN" "$1"; }

# proc_start_time PID: the kernel's start time of the process (clock ticks since boot).
proc_start_time() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    # Field 22; the command name (field 2) may contain spaces, so cut after its ')'.
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat
    printf '%s\n' "${20}"
}

# proc_pgid PID: the process group of PID (field 5 of /proc/PID/stat).
proc_pgid() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    # shellcheck disable=SC2086
    set -- $stat
    printf '%s\n' "$3"
}

# pid_running PID: the process exists and is not a zombie.
pid_running() {
    local state
    state="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    state="${state##*) }"
    [[ ${state%% *} != Z ]]
}

# svc_pid SVC: print the pid of our running SVC and succeed; fail if none. A pid file whose
# process is gone (or whose pid was reused by another process) is stale and is removed.
svc_pid() {
    local file pid start now
    file="$(pid_file "$1")"
    [[ -f $file ]] || return 1
    read -r pid start <"$file" || true
    if [[ $pid =~ ^[0-9]+$ ]] && now="$(proc_start_time "$pid")" && [[ $now == "$start" ]] &&
        pid_running "$pid"; then
        printf '%s\n' "$pid"
        return 0
    fi
    warn "removing stale pid file $file (pid ${pid:-?} is not our $1)"
    rm -f "$file"
    return 1
}

# start_daemon SVC LOGFILE CMD...: start CMD detached, record its pid. Prints the pid.
start_daemon() {
    local svc="$1" logfile="$2" pid start
    shift 2
    mkdir -p "$(dirname "$logfile")"
    # Keep one previous log once it passes 50 MiB.
    if [[ -f $logfile ]] && (($(stat -c %s "$logfile") > 52428800)); then
        mv -f "$logfile" "$logfile.1"
    fi
    local cmdline="$*"
    ((${#cmdline} <= 400)) || cmdline="${cmdline:0:400}..."
    printf '\n===== %s starting %s: %s\n' "$(date -u +%FT%TZ)" "$svc" "$cmdline" >>"$logfile"
    # Without job control a background job is not a group leader, so setsid does not fork:
    # the pid we get is the service itself, which leads its own process group. The start
    # time is set at fork, so it is the service's whatever the exec timing.
    (
        # Close every inherited descriptor above 2 (lock files, callers' pipes): a daemon
        # holding them would block the next lock holder or a caller reading our output.
        fds=(/proc/"$BASHPID"/fd/*)
        for fd in "${fds[@]##*/}"; do
            ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
        done
        exec setsid "$@"
    ) </dev/null >>"$logfile" 2>&1 &
    pid=$!
    start="$(proc_start_time "$pid")" || die "$svc exited at once; see $logfile: $(tail -n 20 "$logfile")"
    sleep 0.05
    if pid_running "$pid" && [[ "$(proc_pgid "$pid")" != "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        die "$svc (pid $pid) does not lead its own process group (run the stack scripts without job control)"
    fi
    printf '%s %s\n' "$pid" "$start" >"$(pid_file "$svc")"
    printf '%s\n' "$pid"
}

# stop_daemon SVC [TIMEOUT_S]: SIGTERM our SVC's process group, SIGKILL after the timeout.
stop_daemon() {
    local svc="$1" timeout="${2:-30}" pid deadline
    if ! pid="$(svc_pid "$svc")"; then
        log "$svc is not running"
        return 0
    fi
    log "stopping $svc (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    deadline=$(($(date +%s) + timeout))
    while pid_running "$pid"; do
        if (($(date +%s) >= deadline)); then
            warn "$svc (pid $pid) still alive after ${timeout}s: SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    # Leftovers of the group (children), if any.
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$(pid_file "$svc")"
    log "$svc stopped"
}

# with_lock SVC CMD...: run CMD holding an exclusive lock for SVC (concurrent up.sh runs).
with_lock() {
    local svc="$1"
    shift
    (
        flock -w 600 9 || die "could not lock $svc"
        "$@"
    ) 9>"$STACK_RUN/locks/$svc"
}

# ---------------------------------------------------------------- ports

# port_open HOST PORT: something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_for_port HOST PORT TIMEOUT_S [PID]: wait until HOST:PORT accepts connections.
# Fails early if PID (the service that should open it) dies.
wait_for_port() {
    local host="$1" port="$2" timeout="$3" pid="${4:-}" deadline
    deadline=$(($(now_ms) + timeout * 1000))
    until port_open "$host" "$port"; do
        if [[ -n $pid ]] && ! pid_running "$pid"; then
            log "process $pid died before $host:$port opened"
            return 1
        fi
        if (($(now_ms) >= deadline)); then
            log "$host:$port did not open within ${timeout}s"
            return 1
        fi
        sleep 0.1
    done
}

# port_owner PORT: describe what listens on PORT (for error messages).
port_owner() {
    if command -v ss >/dev/null; then
        ss -ltnpH "sport = :$1" 2>/dev/null | head -n 3
    else
        printf 'unknown process (ss not installed)\n'
    fi
}

# ---------------------------------------------------------------- subcommand dispatch

usage_die() {
    printf 'usage: %s\n' "$*" >&2
    exit 2
}
