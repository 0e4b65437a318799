#!/usr/bin/env bash
# Where the machine's CPU goes while `sink-bench` applies 1,000,000 events with plain
# `sink run`: Redis's run time and its time runnable but waiting for a core
# (/proc/PID/schedstat), the bench process's CPU (the sink, utime + stime) and the JVMs'
# (the broker, the registry), over 8 s of the sink phase (BENCHMARKS.md, *Where the two
# cores go*).
#
# Usage: sink/benches/cpu-split.sh SINK_BENCH_BINARY
#   with the stack up (`tests/stack/up.sh redis kafka registry`, its exports evaluated) and a
#   private Redis on port 6391 (`redis-server --port 6391 --save '' --appendonly no
#   --daemonize yes`), which this script empties first. Linux only.
set -euo pipefail

bench=${1:?usage: cpu-split.sh SINK_BENCH_BINARY}
redis_pid=$(pgrep -f 'redis-server.*:6391' | head -1)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

jvm_ticks() {
    local total=0 pid
    for pid in $(pgrep java); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

redis-cli -p 6391 flushall > /dev/null
REDIS_URL=redis://127.0.0.1:6391 "$bench" --events 1000000 --skip-ceiling > "$log" 2>&1 &
bench_pid=$!
until grep -q 'produced in' "$log"; do
    kill -0 "$bench_pid" 2> /dev/null || { cat "$log"; exit 1; }
    sleep 0.1
done
read -r ran0 waited0 _ < "/proc/$redis_pid/schedstat"
sink0=$(awk '{print $14 + $15}' "/proc/$bench_pid/stat")
jvm0=$(jvm_ticks)
sleep 8
read -r ran1 waited1 _ < "/proc/$redis_pid/schedstat"
sink1=$(awk '{print $14 + $15}' "/proc/$bench_pid/stat")
jvm1=$(jvm_ticks)
wait "$bench_pid"
grep -E '^sink:|from start to caught' "$log"
tick_ms=$((1000 / $(getconf CLK_TCK)))
echo "over 8 s: redis ran $(((ran1 - ran0) / 1000000)) ms, waited runnable $(((waited1 - waited0) / 1000000)) ms;" \
    "sink process CPU $(((sink1 - sink0) * tick_ms)) ms; JVMs (broker, registry) $(((jvm1 - jvm0) * tick_ms)) ms"
