#!/usr/bin/env bash
# Stop the local test services started by the stack scripts.
#
#   down.sh [svc...]      (default: every service that has a pid file)
#
# Each service is stopped by its own script (`<svc>.sh stop`: its process group gets SIGTERM,
# then SIGKILL after a timeout); a pid file without a script is stopped the same way directly.
# Dependents go first (processes without a script, then connect, registry, kafka, postgres,
# redis). Idempotent.
# shellcheck disable=SC2034 # read by lib.sh
STACK_NAME=down
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ORDER=(connect registry kafka postgres redis)

if [[ $# -gt 0 ]]; then
    services=("$@")
else
    # Processes without a script of their own (the sink of pipeline.sh) depend on the
    # services, so they stop first, while Kafka and Redis still answer.
    services=()
    for f in "$STACK_RUN"/*.pid; do
        [[ -f $f ]] || continue
        svc="$(basename "$f" .pid)"
        [[ " ${ORDER[*]} " == *" $svc "* ]] || services+=("$svc")
    done
    for svc in "${ORDER[@]}"; do
        [[ -f $(pid_file "$svc") ]] && services+=("$svc")
    done
fi

rc=0
for svc in "${services[@]}"; do
    script="$STACK_DIR/$svc.sh"
    if [[ -f $script ]]; then
        bash "$script" stop || {
            warn "$svc.sh stop failed"
            rc=1
        }
    else
        stop_daemon "$svc" 30 || rc=1
    fi
done
[[ $# -gt 0 ]] || rm -f "$STACK_STATE/env"
[[ ${#services[@]} -gt 0 ]] || log "nothing to stop"
exit "$rc"
