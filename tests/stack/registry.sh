#!/usr/bin/env bash
# Local Confluent-compatible schema registry for the tests: the real Apicurio Registry 3
# (Quarkus app, in-memory H2 storage), bound to 127.0.0.1. Clients use its Confluent API
# ("ccompat") root, printed by `registry.sh url`.
#
#   registry.sh start|stop|status|url|env|fetch
#
# The distribution is Apicurio's own fast-jar tarball from Maven Central
# (io.apicurio:apicurio-registry-app:<version>:tar.gz:all), fetched with Maven into
# $STACK_CACHE/m2 and unpacked once into $STACK_CACHE/registry/apicurio-registry-<version>.
# A JVM class-data-sharing archive is created there on the first stop (faster later starts).
#
# Apicurio 3.3 is compiled for Java 21, so this needs a Java >= 21: $REGISTRY_JAVA_HOME,
# else $JAVA_HOME if new enough, else the newest /usr/lib/jvm/* that is (e.g. temurin-25).
#
# Apicurio authenticates only through an OIDC server, so the authenticated registry the tests
# need is registry/auth_proxy.py in front of it: HTTPS (certificates from tls.sh) and HTTP
# basic auth as user `registry` on REGISTRY_AUTH_PORT (SCHEMA_REGISTRY_AUTH_* in `env`).
#
# Environment: REGISTRY_PORT (8081), REGISTRY_MGMT_PORT (9081, Quarkus health/metrics),
# REGISTRY_AUTH_PORT (8085), REGISTRY_VERSION (3.3.3), REGISTRY_JAVA_HOME, REGISTRY_JAVA_OPTS
# (extra JVM flags).
# Log: $STACK_STATE/logs/registry.log (includes one access-log line per request),
# registry-auth.log (the proxy).
STACK_NAME=registry
# shellcheck source=tests/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/stack/tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls.sh"

REGISTRY_HOST=127.0.0.1
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_MGMT_PORT="${REGISTRY_MGMT_PORT:-9081}"
REGISTRY_VERSION="${REGISTRY_VERSION:-3.3.3}"
REGISTRY_HOME="$STACK_CACHE/registry/apicurio-registry-$REGISTRY_VERSION"
REGISTRY_LOG="$STACK_LOGS/registry.log"
REGISTRY_CCOMPAT_PATH=/apis/ccompat/v7
REGISTRY_START_TIMEOUT_S="${REGISTRY_START_TIMEOUT_S:-120}"
REGISTRY_AUTH_PORT="${REGISTRY_AUTH_PORT:-8085}"
REGISTRY_AUTH_USER=registry

registry_url() { printf 'http://%s:%s%s\n' "$REGISTRY_HOST" "$REGISTRY_PORT" "$REGISTRY_CCOMPAT_PATH"; }
auth_url() { printf 'https://%s:%s%s\n' "$REGISTRY_HOST" "$REGISTRY_AUTH_PORT" "$REGISTRY_CCOMPAT_PATH"; }

# auth_ready: the proxy answers an authenticated request.
auth_ready() {
    curl -fsS -m 2 -o /dev/null --cacert "$STACK_TLS/ca.pem" \
        -u "$REGISTRY_AUTH_USER:$(stack_secret registry)" "$(auth_url)/subjects" 2>/dev/null
}

# start_auth_proxy: registry/auth_proxy.py in front of the registry.
start_auth_proxy() {
    local pid
    if pid="$(svc_pid registry-auth)"; then
        auth_ready || die "our registry auth proxy (pid $pid) does not answer at $(auth_url)"
        return 0
    fi
    ensure_tls
    stack_secret registry >/dev/null
    if port_open "$REGISTRY_HOST" "$REGISTRY_AUTH_PORT"; then
        die "port $REGISTRY_AUTH_PORT is taken by a process we did not start: $(port_owner "$REGISTRY_AUTH_PORT")"
    fi
    pid="$(start_daemon registry-auth "$STACK_LOGS/registry-auth.log" python3 \
        "$STACK_DIR/registry/auth_proxy.py" --listen "$REGISTRY_HOST:$REGISTRY_AUTH_PORT" \
        --upstream "http://$REGISTRY_HOST:$REGISTRY_PORT" \
        --cert "$STACK_TLS/server.pem" --key "$STACK_TLS/server.key" \
        --user "$REGISTRY_AUTH_USER" --password-file "$STACK_TLS/registry.secret" 8>&- 9>&-)"
    for _ in $(seq 100); do
        auth_ready && break
        pid_running "$pid" || die "registry auth proxy exited; see $STACK_LOGS/registry-auth.log"
        sleep 0.1
    done
    auth_ready || die "registry auth proxy does not answer at $(auth_url)"
    log "auth proxy (HTTPS, basic auth) started (pid $pid) at $(auth_url)"
}

do_env() {
    printf 'export SCHEMA_REGISTRY_URL=%q\n' "$(registry_url)"
    svc_pid registry-auth >/dev/null 2>&1 || return 0
    printf 'export SCHEMA_REGISTRY_AUTH_URL=%q\n' "$(auth_url)"
    printf 'export SCHEMA_REGISTRY_AUTH_CA_FILE=%q\n' "$STACK_TLS/ca.pem"
    printf 'export SCHEMA_REGISTRY_AUTH_USERNAME=%q\n' "$REGISTRY_AUTH_USER"
    printf 'export SCHEMA_REGISTRY_AUTH_PASSWORD=%q\n' "$(stack_secret registry)"
}

do_stop() {
    stop_daemon registry-auth 10
    stop_daemon registry 30
}

# java_major JAVA: the feature version of that java binary (17, 21, 25, ...).
java_major() {
    local v
    v="$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')" || return 1
    [[ $v =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$v"
}

# find_java: print a java binary of version >= 21.
find_java() {
    local cand major best="" best_major=0
    if [[ -n ${REGISTRY_JAVA_HOME:-} ]]; then
        cand="$REGISTRY_JAVA_HOME/bin/java"
        major="$(java_major "$cand")" || die "REGISTRY_JAVA_HOME=$REGISTRY_JAVA_HOME has no working bin/java"
        ((major >= 21)) || die "REGISTRY_JAVA_HOME=$REGISTRY_JAVA_HOME is Java $major; Apicurio Registry $REGISTRY_VERSION needs Java >= 21"
        printf '%s\n' "$cand"
        return 0
    fi
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]] && major="$(java_major "$JAVA_HOME/bin/java")" && ((major >= 21)); then
        printf '%s\n' "$JAVA_HOME/bin/java"
        return 0
    fi
    for cand in /usr/lib/jvm/*/bin/java; do
        [[ -x $cand ]] || continue
        major="$(java_major "$cand")" || continue
        if ((major >= 21 && major > best_major)); then
            best="$cand"
            best_major=$major
        fi
    done
    [[ -n $best ]] || die "no Java >= 21 found (JAVA_HOME=${JAVA_HOME:-unset}, /usr/lib/jvm: $(ls /usr/lib/jvm 2>/dev/null | tr '\n' ' ')); Apicurio Registry $REGISTRY_VERSION needs it: set REGISTRY_JAVA_HOME"
    printf '%s\n' "$best"
}

# ensure_registry: fetch (Maven) and unpack the Apicurio distribution unless already done.
# Locked on the cache (not the state dir): instances with different state dirs share it.
ensure_registry() {
    [[ -f $REGISTRY_HOME/.complete ]] && return 0
    mkdir -p "$STACK_CACHE/registry"
    (
        flock -w 900 8 || die "could not lock $STACK_CACHE/registry/.lock"
        fetch_registry
    ) 8>"$STACK_CACHE/registry/.lock"
}

fetch_registry() {
    [[ -f $REGISTRY_HOME/.complete ]] && return 0
    local t0 tarball tmp
    t0=$(now_ms)
    command -v mvn >/dev/null || die "mvn not found (needed to fetch Apicurio Registry from Maven Central)"
    tarball="$STACK_CACHE/m2/io/apicurio/apicurio-registry-app/$REGISTRY_VERSION/apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz"
    if [[ ! -f $tarball ]]; then
        log "fetching io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all with Maven (~160 MB)"
        mvn -B -q -C -Dstyle.color=never -Dmaven.repo.local="$STACK_CACHE/m2" \
            org.apache.maven.plugins:maven-dependency-plugin:3.6.1:get \
            -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
            -Dtransitive=false 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2 ||
            die "Maven could not fetch Apicurio Registry $REGISTRY_VERSION"
        [[ -f $tarball ]] || die "Maven succeeded but $tarball is missing"
    fi
    tmp="$REGISTRY_HOME.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    tar -xzf "$tarball" -C "$tmp" || die "could not unpack $tarball"
    [[ -f $tmp/quarkus-run.jar ]] || die "$tarball has no quarkus-run.jar"
    rm -rf "$REGISTRY_HOME"
    mv "$tmp" "$REGISTRY_HOME"
    touch "$REGISTRY_HOME/.complete"
    log "Apicurio Registry $REGISTRY_VERSION ready in $REGISTRY_HOME ($(($(now_ms) - t0)) ms)"
}

# registry_ready: the Confluent API answers.
registry_ready() {
    curl -fsS -m 2 -o /dev/null "$(registry_url)/subjects" 2>/dev/null
}

do_start() {
    local pid t0 java i
    t0=$(now_ms)
    if pid="$(svc_pid registry)"; then
        registry_ready || die "our registry (pid $pid) runs but $(registry_url)/subjects does not answer"
        log "already running (pid $pid) at $(registry_url)"
        start_auth_proxy
        return 0
    fi
    command -v curl >/dev/null || apt_install curl
    ensure_registry
    java="$(find_java)"
    for i in "$REGISTRY_PORT" "$REGISTRY_MGMT_PORT"; do
        if port_open "$REGISTRY_HOST" "$i"; then
            die "port $i is taken by a process we did not start: $(port_owner "$i")"
        fi
    done
    local jvm=(-Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
        -XX:+AutoCreateSharedArchive "-XX:SharedArchiveFile=$REGISTRY_HOME/app.jsa" -Xlog:cds=off -Xlog:cds+dynamic=off)
    # shellcheck disable=SC2206
    [[ -z ${REGISTRY_JAVA_OPTS:-} ]] || jvm+=($REGISTRY_JAVA_OPTS)
    local props=(
        "-Dquarkus.http.host=$REGISTRY_HOST"
        "-Dquarkus.http.port=$REGISTRY_PORT"
        "-Dquarkus.management.host=$REGISTRY_HOST"
        "-Dquarkus.management.port=$REGISTRY_MGMT_PORT"
        # In-memory storage (the default, spelled out): state is gone when the process stops.
        -Dapicurio.storage.kind=sql
        -Dapicurio.storage.sql.kind=h2
        # Let tests DELETE subjects/versions as they can on a Confluent registry.
        -Dapicurio.rest.deletion.artifact.enabled=true
        -Dapicurio.rest.deletion.artifact-version.enabled=true
        -Dapicurio.rest.deletion.group.enabled=true
    )
    log "starting Apicurio Registry $REGISTRY_VERSION with $java ($(java_major "$java"))"
    # 9>&-: the daemon must not inherit with_lock's lock descriptor, or it would hold the
    # lock for its whole life and `registry.sh stop` would wait for it forever.
    pid="$(cd "$REGISTRY_HOME" && start_daemon registry "$REGISTRY_LOG" \
        "$java" "${jvm[@]}" "${props[@]}" -jar "$REGISTRY_HOME/quarkus-run.jar" 8>&- 9>&-)"
    local deadline=$(($(now_ms) + REGISTRY_START_TIMEOUT_S * 1000))
    until registry_ready; do
        pid_running "$pid" || die "registry exited during start-up; see $REGISTRY_LOG: $(tail -n 30 "$REGISTRY_LOG")"
        (($(now_ms) < deadline)) || die "registry not ready within ${REGISTRY_START_TIMEOUT_S}s; see $REGISTRY_LOG: $(tail -n 30 "$REGISTRY_LOG")"
        sleep 0.1
    done
    log "started (pid $pid) at $(registry_url) in $(($(now_ms) - t0)) ms"
    start_auth_proxy
}

do_status() {
    local pid
    if pid="$(svc_pid registry 2>/dev/null)" && registry_ready; then
        printf 'registry running (pid %s) at %s\n' "$pid" "$(registry_url)"
        return 0
    fi
    printf 'registry stopped\n'
    return 3
}

case "${1:-}" in
start) with_lock registry do_start ;;
stop) with_lock registry do_stop ;;
status) do_status ;;
url) registry_url ;;
env) do_env ;;
fetch) with_lock registry ensure_registry ;;
*) usage_die "$0 start|stop|status|url|env|fetch" ;;
esac
