#!/usr/bin/env bash
# Time from "start the Connect worker" to the first Debezium record on Kafka, and from
# "register a connector on a running worker" to its first record.
#
#   tests/e2e/connect_start_bench.sh [RUNS]      (default 3)
#
# Needs the stack (postgres, kafka, registry) running and the Connect worker STOPPED; leaves
# it stopped. Uses databases bench_start_N (dropped afterwards). Python with confluent-kafka
# and fastavro ($PYTHON, default python3) reads the records. Env as for the stack scripts.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stack="$here/../stack"
runs="${1:-3}"
py="${PYTHON:-python3}"
now_ms() { date +%s%3N; }

if bash "$stack/connect.sh" status >/dev/null 2>&1; then
    echo "stop the Connect worker first (tests/stack/connect.sh stop)" >&2
    exit 1
fi

first_record() { "$py" "$here/dbz_probe.py" --topic "$1" --count 1 --timeout 120 >/dev/null; }

for i in $(seq "$runs"); do
    db="bench_start_$i"
    prefix="bench$(date +%H%M%S)s$i"
    bash "$stack/postgres.sh" reset "$db" 2>/dev/null
    t0=$(now_ms)
    CONNECT_REGISTER_DEFAULT=0 bash "$stack/connect.sh" start 2>/dev/null
    t1=$(now_ms)
    bash "$stack/connect.sh" register "bench-$i" "database.dbname=$db" "slot.name=dbz_$db" "topic.prefix=$prefix" 2>/dev/null
    t2=$(now_ms)
    first_record "$prefix.public.customers"
    t3=$(now_ms)
    # A second connector on the now running (warm) worker.
    bash "$stack/connect.sh" register "bench-$i-warm" "database.dbname=$db" "slot.name=dbz_${db}_w" "topic.prefix=${prefix}w" 2>/dev/null
    t4=$(now_ms)
    first_record "${prefix}w.public.customers"
    t5=$(now_ms)
    printf 'run %s: worker start -> REST %5d ms, -> connector RUNNING %5d ms, -> first record %5d ms | warm worker: register -> RUNNING %5d ms, -> first record %5d ms\n' \
        "$i" $((t1 - t0)) $((t2 - t0)) $((t3 - t0)) $((t4 - t3)) $((t5 - t3))
    bash "$stack/connect.sh" unregister "bench-$i" 2>/dev/null
    bash "$stack/connect.sh" unregister "bench-$i-warm" 2>/dev/null
    bash "$stack/connect.sh" stop 2>/dev/null
    bash "$stack/postgres.sh" drop "$db" >/dev/null 2>&1
done
