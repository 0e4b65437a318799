#!/usr/bin/env bash
# Local Apache Kafka for the tests: the real broker from Maven Central jars (see kafka/pom.xml),
# one node in KRaft combined mode (broker + controller), no Docker, no tarball.
#
#   kafka.sh start|stop|status          run the broker (start waits for a real Metadata answer)
#   kafka.sh reset                      stop and delete all data (next start is a new cluster)
#   kafka.sh topic NAME PARTITIONS [key=value...]
#                                       create a topic if it does not exist (TopicCommand)
#   kafka.sh classpath                  print the classpath of the broker and its tools
#   kafka.sh run MAIN_CLASS ARGS...     run any Kafka Java tool with that classpath
#   kafka.sh tool NAME ARGS...          same, by short name: topics, console-producer,
#                                       console-consumer, get-offsets, consumer-groups,
#                                       configs, delete-records, storage, metadata-quorum
#   kafka.sh jvm-opts                   the broker's heap and JVM options (KAFKA_JVM_PROFILE)
#   kafka.sh url|env                    bootstrap servers / `export KAFKA_BOOTSTRAP_SERVERS=...`
#                                       (env also: KAFKA_SASL_* for the SASL_SSL listener)
#
# Besides PLAINTEXT the broker has a SASL_SSL listener (certificates from tls.sh) accepting
# SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN for user `sink` (password from tls.sh's
# stack_secret; the SCRAM credentials are (re)set after every start).
#
# Environment:
#   KAFKA_PORT (9092)             PLAINTEXT listener on 127.0.0.1
#   KAFKA_SASL_PORT (9094)        SASL_SSL listener on 127.0.0.1
#   KAFKA_CONTROLLER_PORT (9093)  KRaft controller listener on 127.0.0.1
#   KAFKA_JVM_PROFILE (fast-start) the broker's JVM settings when the two below are unset:
#                                 fast-start  small heap, serial GC, C1 JIT only: starts and
#                                             warms up fastest on a small machine (tests, CI)
#                                 production  Kafka's own defaults (kafka-server-start.sh and
#                                             kafka-run-class.sh): 1 GiB heap, G1, full JIT;
#                                             what latency benchmarks should run against
#   KAFKA_HEAP_OPTS               default by profile (fast-start: -Xms256m -Xmx1g)
#   KAFKA_JVM_OPTS                default by profile (fast-start: -XX:+UseSerialGC
#                                 -XX:TieredStopAtLevel=1 ...)
#   KAFKA_JAVA                    java binary (default: $JAVA_HOME/bin/java, else java on PATH)
#   KAFKA_CDS (1)                 0: no class-data sharing archive
# Data: $STACK_STATE/kafka/data, config: $STACK_STATE/kafka/*.properties,
# log: $STACK_STATE/logs/kafka.log, jars: $STACK_CACHE/kafka/libs-<pom hash>/.
# shellcheck disable=SC2034 # read by lib.sh
STACK_NAME=kafka
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/stack/tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls.sh"

KAFKA_HOST=127.0.0.1
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-9094}"
KAFKA_SASL_USER=sink
KAFKA_POM="$STACK_DIR/kafka/pom.xml"
KAFKA_HOME="$STACK_STATE/kafka"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_LOG="$STACK_LOGS/kafka.log"
KAFKA_JVM_PROFILE="${KAFKA_JVM_PROFILE:-fast-start}"
case $KAFKA_JVM_PROFILE in
fast-start)
    KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
    KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
    ;;
production)
    # As Kafka's start scripts set them (KAFKA_HEAP_OPTS of kafka-server-start.sh,
    # KAFKA_JVM_PERFORMANCE_OPTS of kafka-run-class.sh).
    KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms1g -Xmx1g}"
    KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
    ;;
*)
    echo "kafka.sh: KAFKA_JVM_PROFILE must be fast-start or production, not '$KAFKA_JVM_PROFILE'" >&2
    exit 2
    ;;
esac
# Tools (TopicCommand, console clients...): short-lived, so start fast and small.
KAFKA_TOOL_OPTS="${KAFKA_TOOL_OPTS:--Xms32m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -Djava.awt.headless=true}"

# ---------------------------------------------------------------- java and jars

kafka_java() {
    if [[ -n ${KAFKA_JAVA:-} ]]; then
        printf '%s\n' "$KAFKA_JAVA"
    elif [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        printf '%s\n' "$JAVA_HOME/bin/java"
    else
        printf 'java\n'
    fi
}

ensure_toolchain() {
    local missing=()
    command -v "$(kafka_java)" >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    [[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
}

# The jars directory for the current pom (a changed pom gets a fresh directory).
kafka_libs_dir() {
    local hash
    hash="$(sha256sum "$KAFKA_POM" | cut -c1-12)"
    printf '%s/kafka/libs-%s\n' "$STACK_CACHE" "$hash"
}

# ensure_jars: fetch the broker, tools and logging jars into the cache (once).
ensure_jars() {
    local libs tmp t0
    libs="$(kafka_libs_dir)"
    [[ -f $libs/.complete ]] && return 0
    if ! command -v mvn >/dev/null || ! command -v "$(kafka_java)" >/dev/null; then
        ensure_toolchain
    fi
    t0=$(now_ms)
    log "fetching Kafka jars from Maven Central into $libs (Maven repository $STACK_CACHE/m2)"
    mkdir -p "$STACK_CACHE/kafka" "$STACK_CACHE/m2"
    tmp="$(mktemp -d "$STACK_CACHE/kafka/.fetch.XXXXXX")"
    if ! mvn -q -B -f "$KAFKA_POM" -Dmaven.repo.local="$STACK_CACHE/m2" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "mvn could not fetch the Kafka jars (pom $KAFKA_POM)"
    fi
    rm -f "$tmp.log"
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no kafka_2.13 jar after mvn ($tmp)"
    touch "$tmp/.complete"
    rm -rf "$libs"
    mv "$tmp" "$libs"
    log "fetched $(find "$libs" -name '*.jar' | wc -l) jars in $(($(now_ms) - t0)) ms"
}

kafka_classpath() {
    local libs
    libs="$(kafka_libs_dir)"
    find "$libs" -maxdepth 1 -name '*.jar' | sort | paste -sd:
}

# Tools log WARN and above to stderr, so their stdout carries only their output.
tool_log_config() {
    local f="$KAFKA_HOME/tools-log4j2.properties"
    if [[ ! -f $f ]]; then
        mkdir -p "$KAFKA_HOME"
        cat >"$f.tmp" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
EOF
        mv "$f.tmp" "$f"
    fi
    printf '%s\n' "$f"
}

# run_tool MAIN_CLASS ARGS...: exec a Kafka Java tool with the broker's classpath.
run_tool() {
    local main="$1"
    shift
    ensure_jars
    # shellcheck disable=SC2086
    exec "$(kafka_java)" $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$(tool_log_config)" \
        -cp "$(kafka_classpath)" "$main" "$@"
}

tool_class() {
    case "$1" in
    topics) echo org.apache.kafka.tools.TopicCommand ;;
    console-producer) echo org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    configs) echo kafka.admin.ConfigCommand ;;
    delete-records) echo org.apache.kafka.tools.DeleteRecordsCommand ;;
    storage) echo kafka.tools.StorageTool ;;
    metadata-quorum) echo org.apache.kafka.tools.MetadataQuorumCommand ;;
    *) die "unknown tool '$1' (topics, console-producer, console-consumer, get-offsets, consumer-groups, configs, delete-records, storage, metadata-quorum)" ;;
    esac
}

# ---------------------------------------------------------------- config

write_config() {
    mkdir -p "$KAFKA_HOME" "$KAFKA_DATA"
    ensure_tls
    local sasl_password
    sasl_password="$(stack_secret kafka-sink)"
    (umask 077 && : >"$KAFKA_HOME/server.properties.tmp")
    cat >"$KAFKA_HOME/server.properties.tmp" <<EOF
# Generated by tests/stack/kafka.sh: single node, KRaft combined mode.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,SASL_SSL://$KAFKA_HOST:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$sasl_password";
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$STACK_TLS/kafka-server.pem
log.dirs=$KAFKA_DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.dedupe.buffer.size=33554432
log.cleaner.backoff.ms=1000
EOF
    mv "$KAFKA_HOME/server.properties.tmp" "$KAFKA_HOME/server.properties"
    cat >"$KAFKA_HOME/log4j2.properties.tmp" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.change.name = state.change.logger
logger.change.level = warn
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
logger.raft.name = org.apache.kafka.raft
logger.raft.level = warn
EOF
    mv "$KAFKA_HOME/log4j2.properties.tmp" "$KAFKA_HOME/log4j2.properties"
}

# format_storage: `kafka-storage format` once, with a cluster id generated by the tool.
format_storage() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    local java cp cluster_id
    java="$(kafka_java)"
    cp="$(kafka_classpath)"
    if [[ -s $KAFKA_HOME/cluster.id ]]; then
        cluster_id="$(cat "$KAFKA_HOME/cluster.id")"
    else
        # shellcheck disable=SC2086
        cluster_id="$("$java" $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$(tool_log_config)" \
            -cp "$cp" kafka.tools.StorageTool random-uuid)" || die "StorageTool random-uuid failed"
        printf '%s\n' "$cluster_id" >"$KAFKA_HOME/cluster.id"
    fi
    log "formatting $KAFKA_DATA (cluster id $cluster_id)"
    # shellcheck disable=SC2086
    "$java" $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$(tool_log_config)" -cp "$cp" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_HOME/server.properties" \
        --ignore-formatted >>"$KAFKA_LOG" 2>&1 || die "StorageTool format failed; see $KAFKA_LOG"
}

# Class-data sharing: the first broker run dumps the classes it loaded into an archive when it
# stops (JDK 17 -XX:ArchiveClassesAtExit); later runs map it and start about a second faster.
# The archive is tied to the JVM and the jars, so it lives beside the jars, named by the JVM.
# KAFKA_CDS=0 disables it.
cds_archive() {
    local jvm
    jvm="$(readlink -f "$(command -v "$(kafka_java)")" | sha256sum | cut -c1-8)"
    printf '%s/broker-%s.jsa\n' "$(kafka_libs_dir)" "$jvm"
}

# Where this state dir's broker dumps its archive (brokers of other state dirs may share the
# cache, so each has its own temporary file; the rename into place is atomic).
cds_tmp() {
    printf '%s.%s.tmp\n' "$(cds_archive)" "$(printf '%s' "$STACK_STATE" | sha256sum | cut -c1-8)"
}

cds_opts() {
    [[ ${KAFKA_CDS:-1} == 1 ]] || return 0
    local jsa
    jsa="$(cds_archive)"
    if [[ -s $jsa ]]; then
        printf -- '-XX:SharedArchiveFile=%s -Xshare:auto\n' "$jsa"
    else
        # Written by the JVM on a clean exit; kafka.sh stop moves it into place.
        rm -f "$(cds_tmp)"
        printf -- '-XX:ArchiveClassesAtExit=%s\n' "$(cds_tmp)"
    fi
}

do_stop() {
    stop_daemon kafka 60
    local tmp
    tmp="$(cds_tmp)"
    if [[ -s $tmp ]]; then
        mv -f "$tmp" "$(cds_archive)"
        log "class-data archive for later starts: $(cds_archive)"
    fi
}

# ---------------------------------------------------------------- readiness

# kafka_ready: a real Metadata request (v4, no topics) over TCP; ready when the answer lists
# at least one broker (ours, registered and unfenced).
kafka_ready() {
    local bytes
    bytes="$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/$KAFKA_HOST/$KAFKA_PORT" || exit 1
        # size 20 | api_key 3 | version 4 | correlation 7 | client_id "probe" | topics [] | no auto-create
        printf '\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x07\x00\x05probe\x00\x00\x00\x00\x00' >&3
        timeout 2 head -c 16 <&3 | od -An -v -tu1
    )" 2>/dev/null || return 1
    # shellcheck disable=SC2086
    set -- $bytes
    [[ $# -eq 16 ]] || return 1
    # bytes 4-7: correlation id; 12-15: broker count
    [[ $5 -eq 0 && $6 -eq 0 && $7 -eq 0 && $8 -eq 7 ]] || return 1
    ((${13} * 16777216 + ${14} * 65536 + ${15} * 256 + ${16} >= 1))
}

# ---------------------------------------------------------------- commands

do_start() {
    local pid t0 java
    t0=$(now_ms)
    if pid="$(svc_pid kafka)"; then
        kafka_ready || die "our Kafka (pid $pid) runs but does not answer on $KAFKA_HOST:$KAFKA_PORT; see $KAFKA_LOG"
        log "already running (pid $pid) on $KAFKA_HOST:$KAFKA_PORT"
        return 0
    fi
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_SASL_PORT"; do
        if port_open "$KAFKA_HOST" "$port"; then
            die "port $port is taken by a process we did not start: $(port_owner "$port")"
        fi
    done
    ensure_jars
    write_config
    format_storage
    java="$(kafka_java)"
    # shellcheck disable=SC2086,SC2046
    pid="$(start_daemon kafka "$KAFKA_LOG" "$java" $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS $(cds_opts) \
        -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" \
        -Dkafka.logs.dir="$STACK_LOGS" \
        -cp "$(kafka_classpath)" kafka.Kafka "$KAFKA_HOME/server.properties")"
    log "broker pid $pid; waiting for a Metadata answer on $KAFKA_HOST:$KAFKA_PORT"
    local deadline=$(($(now_ms) + 120000))
    until kafka_ready; do
        if ! pid_running "$pid"; then
            rm -f "$(pid_file kafka)"
            die "Kafka exited during startup; see $KAFKA_LOG:
$(tail -n 30 "$KAFKA_LOG")"
        fi
        if (($(now_ms) >= deadline)); then
            stop_daemon kafka 10
            die "Kafka did not answer within 120 s; see $KAFKA_LOG"
        fi
        sleep 0.2
    done
    log "started (pid $pid) on $KAFKA_HOST:$KAFKA_PORT in $(($(now_ms) - t0)) ms"
    add_scram_user
}

# add_scram_user: SCRAM-SHA-256/512 credentials of the SASL_SSL user (KRaft keeps them in
# the metadata log; setting them again is harmless).
add_scram_user() {
    local password mechanism
    password="$(stack_secret kafka-sink)"
    # One mechanism per request: the broker refuses two changes of one user in a request.
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
        # shellcheck disable=SC2086
        "$(kafka_java)" $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$(tool_log_config)" \
            -cp "$(kafka_classpath)" kafka.admin.ConfigCommand --bootstrap-server "$(kafka_url)" \
            --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
            --add-config "$mechanism=[password=$password]" >/dev/null 2>&1 ||
            die "could not add the $mechanism credentials of $KAFKA_SASL_USER"
    done
    log "SASL_SSL listener on $KAFKA_HOST:$KAFKA_SASL_PORT (user $KAFKA_SASL_USER: SCRAM-SHA-256/512, PLAIN)"
}

do_env() {
    printf 'export KAFKA_BOOTSTRAP_SERVERS=%q\n' "$(kafka_url)"
    grep -q "^listeners=.*SASL_SSL://" "$KAFKA_HOME/server.properties" 2>/dev/null || return 0
    printf 'export KAFKA_SASL_BOOTSTRAP_SERVERS=%q\n' "$KAFKA_HOST:$KAFKA_SASL_PORT"
    printf 'export KAFKA_SASL_USERNAME=%q\n' "$KAFKA_SASL_USER"
    printf 'export KAFKA_SASL_PASSWORD=%q\n' "$(stack_secret kafka-sink)"
    printf 'export KAFKA_SSL_CA_FILE=%q\n' "$STACK_TLS/ca.pem"
}

do_status() {
    local pid
    if pid="$(svc_pid kafka 2>/dev/null)" && kafka_ready; then
        printf 'kafka running (pid %s) at %s\n' "$pid" "$(kafka_url)"
        return 0
    fi
    printf 'kafka stopped\n'
    return 3
}

kafka_url() { printf '%s:%s\n' "$KAFKA_HOST" "$KAFKA_PORT"; }

do_topic() {
    [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage_die "$0 topic NAME PARTITIONS [key=value...]"
    local name="$1" partitions="$2" args=()
    shift 2
    for kv in "$@"; do
        [[ $kv == *=* ]] || die "topic config '$kv' is not key=value"
        args+=(--config "$kv")
    done
    run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(kafka_url)" \
        --create --if-not-exists --topic "$name" --partitions "$partitions" \
        --replication-factor 1 "${args[@]}"
}

cmd="${1:-}"
[[ $# -eq 0 ]] || shift
case "$cmd" in
start) with_lock kafka do_start ;;
scram-user) add_scram_user ;;
stop) with_lock kafka do_stop ;;
reset)
    # Stop and delete all topics and data; the next start formats a new cluster.
    with_lock kafka do_stop
    rm -rf "$KAFKA_DATA" "$KAFKA_HOME/cluster.id"
    log "data removed ($KAFKA_DATA)"
    ;;
status) do_status ;;
jvm-opts) printf '%s %s\n' "$KAFKA_HEAP_OPTS" "$KAFKA_JVM_OPTS" ;;
url) kafka_url ;;
env) do_env ;;
classpath)
    ensure_jars
    kafka_classpath
    ;;
jars) ensure_jars ;;
run)
    [[ $# -ge 1 ]] || usage_die "$0 run MAIN_CLASS ARGS..."
    run_tool "$@"
    ;;
tool)
    [[ $# -ge 1 ]] || usage_die "$0 tool NAME ARGS..."
    name="$1"
    shift
    run_tool "$(tool_class "$name")" "$@"
    ;;
topic) do_topic "$@" ;;
*) usage_die "$0 start|stop|status|jvm-opts|url|env|classpath|jars|run CLASS ARGS...|tool NAME ARGS...|topic NAME PARTITIONS [k=v...]" ;;
esac
