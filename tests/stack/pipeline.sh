#!/usr/bin/env bash
# The whole local pipeline, with defaults, in one command:
#
#   PostgreSQL (database agent_context with the sample rows) -> Debezium (topic prefix cdc)
#   -> Kafka -> schema registry -> sink (background daemon, default connectors.yaml) -> Redis
#   <- agent-cli
#
#   pipeline.sh up       install what is missing, build the binaries (cached), start everything,
#                        wait until the sample rows are served, make a live change in PostgreSQL
#                        and show agent-cli picking it up (timed); leaves everything running
#   pipeline.sh status   the services, the sink daemon and `agent-cli status`
#   pipeline.sh down     stop the sink and every service; checks that no process is left
#   pipeline.sh demo     only the live change (the pipeline must be up)
#
# Idempotent: `up` keeps what already runs. Logs: $STACK_STATE/logs/*.log (sink.log for the
# sink). Environment: everything the service scripts read (ports, AGENT_CONTEXT_STATE, see
# `tests/stack/<svc>.sh --help`), plus
#   PIPELINE_PROFILE  (debug) or release: which build of sink/agent-cli to build and run
#   SINK_BIN, AGENT_CLI_BIN   use these binaries instead of building
#   PIPELINE_CONFIG   (connectors.yaml at the repository root) the mapping the sink runs
# shellcheck disable=SC2034 # read by lib.sh
STACK_NAME=pipeline
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVICES=(redis kafka registry postgres connect)
PROFILE="${PIPELINE_PROFILE:-debug}"
CONFIG="${PIPELINE_CONFIG:-$STACK_REPO/connectors.yaml}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$STACK_CACHE/target}"
SINK_LOG="$STACK_LOGS/sink.log"
# The default connector of connect.sh and the default connectors.yaml.
CDC_PREFIX=cdc
SLOT="dbz_${PG_SEED_DB:-agent_context}"
DLQ_TOPIC=agent-context-sink-dlq
ENV_FILE="$STACK_STATE/env"

say() { printf '\n==> %s\n' "$*" >&2; }

usage() {
    sed -n '2,/^# shellcheck/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# ---------------------------------------------------------------- binaries

ensure_build_deps() {
    local missing=()
    [[ -e /usr/include/x86_64-linux-gnu/curl/curl.h || -e /usr/include/curl/curl.h ]] || missing+=(libcurl4-openssl-dev)
    command -v cmake >/dev/null || missing+=(cmake)
    command -v cc >/dev/null || missing+=(build-essential)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    [[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
    command -v cargo >/dev/null ||
        die "cargo not found: install the Rust toolchain (rustup, or apt-get install cargo) and run again"
}

build_binaries() {
    if [[ $USER_BINS == 1 ]]; then
        [[ -x $SINK_BIN && -x $AGENT_CLI_BIN ]] || die "SINK_BIN=$SINK_BIN / AGENT_CLI_BIN=$AGENT_CLI_BIN not executable"
        log "using SINK_BIN=$SINK_BIN AGENT_CLI_BIN=$AGENT_CLI_BIN"
        return 0
    fi
    ensure_build_deps
    local flags=() t0
    [[ $PROFILE == release ]] && flags=(--release)
    [[ $PROFILE == release || $PROFILE == debug ]] || die "PIPELINE_PROFILE must be debug or release, not $PROFILE"
    SINK_BIN="$CARGO_TARGET_DIR/$PROFILE/sink"
    AGENT_CLI_BIN="$CARGO_TARGET_DIR/$PROFILE/agent-cli"
    if [[ -x $SINK_BIN && -x $AGENT_CLI_BIN ]]; then
        log "checking the $PROFILE build is up to date (cargo, target $CARGO_TARGET_DIR)"
    else
        log "building sink and agent-cli ($PROFILE; the first build takes several minutes, cached afterwards in $CARGO_TARGET_DIR)"
    fi
    t0=$(now_ms)
    (cd "$STACK_REPO" && cargo build "${flags[@]}" --locked -p sink -p agent-cli) ||
        die "cargo build failed"
    log "binaries ready in $(($(now_ms) - t0)) ms: $SINK_BIN, $AGENT_CLI_BIN"
}

# ---------------------------------------------------------------- sink daemon

# redis_cmd ARGS...: one command to the configured Redis (redis-cli ships with redis-server).
redis_cmd() {
    local url="${REDIS_URL:-redis://127.0.0.1:6379}"
    redis-cli -u "$url" "$@"
}

start_sink() {
    local pid group="${SINK_GROUP_ID:-agent-context-sink}"
    if pid="$(svc_pid sink)"; then
        log "sink already running (pid $pid); log $SINK_LOG"
        return 0
    fi
    # Redis keeps nothing across restarts (no persistence) while Kafka keeps the consumer
    # group's offsets: a sink resuming from them would never rewrite the rows before them.
    # When Redis holds no sink state, the group starts over from the beginning of the topics.
    if [[ "$(redis_cmd EXISTS sink:offsets)" == 0 ]]; then
        if bash "$STACK_DIR/kafka.sh" tool consumer-groups --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
            --list 2>/dev/null | grep -qx "$group"; then
            log "Redis is empty but consumer group $group has offsets: deleting the group (replay from the start)"
            bash "$STACK_DIR/kafka.sh" tool consumer-groups --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
                --delete --group "$group" >&2 || die "could not delete consumer group $group"
        fi
    fi
    "$SINK_BIN" validate --config "$CONFIG" >/dev/null || die "$CONFIG does not validate (sink validate --config $CONFIG)"
    pid="$(RUST_LOG="${RUST_LOG:-info}" start_daemon sink "$SINK_LOG" "$SINK_BIN" run --config "$CONFIG")"
    log "sink started (pid $pid, config $CONFIG); log $SINK_LOG"
}

# ---------------------------------------------------------------- a registry that forgot

# The local registry keeps schemas in memory while Kafka keeps the records that name them by
# id: after a restart of the registry, the old change records cannot be decoded any more.
# cdc_orphaned: the registry knows no subject although Debezium's topics exist.
cdc_orphaned() {
    local n
    n="$(python3 - "$SCHEMA_REGISTRY_URL" <<'PY'
import json, sys, urllib.request
print(len(json.load(urllib.request.urlopen(sys.argv[1].rstrip("/") + "/subjects", timeout=10))))
PY
)" || die "the schema registry at $SCHEMA_REGISTRY_URL does not answer"
    [[ $n == 0 ]] || return 1
    bash "$STACK_DIR/kafka.sh" tool topics --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --list 2>/dev/null |
        grep -q "^$CDC_PREFIX\."
}

# reset_cdc: start the change stream over from PostgreSQL's current rows: Debezium's topics,
# its stored offsets and replication slot, the sink's consumer group and Redis state go; the
# connector then snapshots the tables again. PostgreSQL's data is kept.
reset_cdc() {
    say "The schema registry was restarted (it keeps schemas in memory) but Kafka kept the old change records: starting the change stream over from PostgreSQL's current rows"
    stop_daemon sink 30
    bash "$STACK_DIR/connect.sh" stop
    log "deleting topics ^$CDC_PREFIX\..* and $DLQ_TOPIC"
    bash "$STACK_DIR/kafka.sh" tool topics --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" --delete \
        --if-exists --topic "$CDC_PREFIX\..*|$DLQ_TOPIC" >&2 || die "could not delete the old topics"
    log "dropping replication slot $SLOT and consumer group ${SINK_GROUP_ID:-agent-context-sink}; emptying Redis"
    bash "$STACK_DIR/postgres.sh" psql -qtAX -c \
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$SLOT'" >/dev/null ||
        die "could not drop replication slot $SLOT"
    bash "$STACK_DIR/kafka.sh" tool consumer-groups --bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS" \
        --delete --group "${SINK_GROUP_ID:-agent-context-sink}" >/dev/null 2>&1 || true
    redis_cmd FLUSHDB >/dev/null || die "could not empty Redis"
    export CONNECT_RESET_OFFSETS=1
}

# ---------------------------------------------------------------- agent-cli

agent() { "$AGENT_CLI_BIN" --config "$CONFIG" "$@"; }

# wait_for_rows TIMEOUT_S: until get_customer by email answers with a row and nothing is stale.
wait_for_rows() {
    local deadline out t0
    t0=$(now_ms)
    deadline=$((t0 + $1 * 1000))
    log "waiting for the sink to serve the sample rows (agent-cli tool get_customer)"
    while true; do
        out="$(agent tool get_customer '{"email":"jane@example.com"}' 2>/dev/null)" || out=""
        # Served, and the sink has seen the end of every topic (no mapping stale).
        if [[ $out == *'"result":{'* ]] && ! agent status --json 2>/dev/null | grep -q '"stale": *true'; then
            log "sample rows served and the sink caught up after $(($(now_ms) - t0)) ms"
            return 0
        fi
        if ! svc_pid sink >/dev/null; then
            die "the sink exited; last lines of $SINK_LOG:
$(tail -n 20 "$SINK_LOG")"
        fi
        (($(now_ms) < deadline)) || die "no row for jane@example.com after $1 s; see $SINK_LOG and $STACK_LOGS/connect.log"
        sleep 0.2
    done
}

demo() {
    local current next t_commit t_seen out n=0
    say "Live change: update Jane's plan in PostgreSQL, watch agent-cli pick it up"
    current="$(bash "$STACK_DIR/postgres.sh" psql -qtAX -c "SELECT plan FROM customers WHERE email = 'jane@example.com'")" ||
        die "cannot read Jane's row from PostgreSQL"
    case "$current" in
    pro) next=enterprise ;;
    enterprise) next=team ;;
    *) next=pro ;;
    esac
    printf '   before: agent-cli tool get_customer %s\n   %s\n' "'{\"email\":\"jane@example.com\"}'" \
        "$(agent tool get_customer '{"email":"jane@example.com"}')" >&2
    printf "   SQL:    UPDATE customers SET plan = '%s', updated_at = now() WHERE email = 'jane@example.com'\n" "$next" >&2
    bash "$STACK_DIR/postgres.sh" psql -qtAX -c \
        "UPDATE customers SET plan = '$next', updated_at = now() WHERE email = 'jane@example.com'" >/dev/null ||
        die "the UPDATE failed"
    t_commit=$(now_ms)
    while true; do
        n=$((n + 1))
        out="$(agent tool get_customer '{"email":"jane@example.com"}')" || die "agent-cli tool failed"
        [[ $out == *"\"plan\":\"$next\""* ]] && break
        (($(now_ms) - t_commit < 30000)) || die "agent-cli still shows the old plan after 30 s: $out"
    done
    t_seen=$(now_ms)
    printf '   after:  %s\n' "$out" >&2
    printf '\n   commit -> visible through agent-cli: %d ms (%d agent-cli runs, each one a whole process)\n' \
        "$((t_seen - t_commit))" "$n" >&2
    (((t_seen - t_commit) <= 1000)) || warn "that took more than a second"
    printf '\n   agent-cli status:\n' >&2
    agent status | sed 's/^/   /' >&2
}

# ---------------------------------------------------------------- commands

load_env() {
    [[ -f $ENV_FILE ]] || return 1
    # shellcheck disable=SC1090
    source "$ENV_FILE"
}

resolve_binaries() {
    SINK_BIN="${SINK_BIN:-$CARGO_TARGET_DIR/$PROFILE/sink}"
    AGENT_CLI_BIN="${AGENT_CLI_BIN:-$CARGO_TARGET_DIR/$PROFILE/agent-cli}"
}

do_up() {
    local t0
    t0=$(now_ms)
    say "1/4 Building sink and agent-cli"
    build_binaries
    say "2/4 Starting PostgreSQL, Kafka, the schema registry, Redis and Debezium (installs what is missing; first run downloads jars via Maven, a few minutes)"
    bash "$STACK_DIR/up.sh" redis kafka registry postgres >/dev/null || die "the services did not start (logs in $STACK_LOGS)"
    load_env || die "no $ENV_FILE after up.sh"
    if cdc_orphaned; then
        reset_cdc
    fi
    bash "$STACK_DIR/up.sh" connect >/dev/null || die "Debezium Connect did not start (log $STACK_LOGS/connect.log)"
    load_env || die "no $ENV_FILE after up.sh"
    say "3/4 Starting the sink (background daemon)"
    start_sink
    wait_for_rows 120
    say "4/4 Demo"
    demo
    cat >&2 <<EOF

==> The pipeline is running ($(( ($(now_ms) - t0) / 1000 )) s). Everything stays up until you stop it.

   Connection settings:  source $ENV_FILE
   Try the tools:        $AGENT_CLI_BIN --config $CONFIG tools
                         $AGENT_CLI_BIN --config $CONFIG tool get_customer_orders '{"customer_id": 1, "limit": 2}'
   Ask a question:       export OPENAI_API_KEY=...   (or ANTHROPIC_API_KEY=...)
                         $AGENT_CLI_BIN --config $CONFIG query "What plan is jane@example.com on, and what did she order last?"
   Serve MCP (stdio):    $AGENT_CLI_BIN --config $CONFIG mcp
   Change data:          bash tests/stack/postgres.sh psql -c "UPDATE customers SET mrr_cents = 100 WHERE id = 2"
   Status:               tests/stack/pipeline.sh status
   Logs:                 $STACK_LOGS/{sink,connect,kafka,registry,postgres,redis}.log
   Stop everything:      tests/stack/pipeline.sh down
EOF
}

do_status() {
    local svc rc=0 pid
    for svc in "${SERVICES[@]}"; do
        bash "$STACK_DIR/$svc.sh" status || rc=3
    done
    if pid="$(svc_pid sink 2>/dev/null)"; then
        printf 'sink running (pid %s, config %s, log %s)\n' "$pid" "$CONFIG" "$SINK_LOG"
    else
        printf 'sink stopped\n'
        rc=3
    fi
    if load_env && [[ -x $AGENT_CLI_BIN ]]; then
        agent status || rc=3
    fi
    return "$rc"
}

do_down() {
    # The process groups of everything we started (each service leads its own): after the
    # stop, pgrep must find nobody left in them.
    local f pid pgids=() left
    for f in "$STACK_RUN"/*.pid; do
        [[ -f $f ]] || continue
        read -r pid _ <"$f" || continue
        [[ $pid =~ ^[0-9]+$ ]] && pgids+=("$pid")
    done
    stop_daemon sink 30
    bash "$STACK_DIR/down.sh" || warn "down.sh reported a failure"
    if [[ ${#pgids[@]} -gt 0 ]]; then
        # Zombies are gone already (only their parent has not reaped them yet): not counted.
        left="$(
            IFS=,
            for pid in $(pgrep -g "${pgids[*]}" 2>/dev/null); do
                pid_running "$pid" && printf '%s %s\n' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
            done
        )" || true
        if [[ -n $left ]]; then
            warn "processes left behind:"
            printf '%s\n' "$left" >&2
            return 1
        fi
    fi
    log "everything stopped; pgrep finds no process left in the ${#pgids[@]} process groups we started"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
USER_BINS=0
[[ -n ${SINK_BIN:-} && -n ${AGENT_CLI_BIN:-} ]] && USER_BINS=1
resolve_binaries
case "$cmd" in
up) do_up ;;
down) do_down ;;
status) do_status ;;
demo)
    load_env || die "the pipeline is not up (no $ENV_FILE): tests/stack/pipeline.sh up"
    demo
    ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
