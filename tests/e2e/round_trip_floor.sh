#!/usr/bin/env bash
# The floor under #18's goal, in one run and interleaved rounds: what one round trip costs on
# each side before any lookup work, from one client on an open connection.
#   - PostgreSQL: `pgbench -n -M prepared -c 1` of `SELECT 1` (p50/p99 from its per-transaction log);
#   - Redis: `redis-benchmark -c 1` of `PING`, of `EVAL "return 1" 0` (a script that does
#     nothing), and of a script shaped like the email lookup (one GET, three HGETALLs of a
#     small hash, cjson.encode) on keys of a random prefix, deleted afterwards.
# A lookup "2x faster than pooled PostgreSQL" must fit in half of PostgreSQL's p50 for the
# whole query; compare that with the Redis round trip alone here.
#
#   tests/e2e/round_trip_floor.sh        # DATABASE_URL, REDIS_HOST/REDIS_PORT (127.0.0.1:6379)
#
# Environment: BENCH_ROUNDS (3), BENCH_SECONDS (3) for pgbench, BENCH_REQUESTS (30000) per
# redis-benchmark test.
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL (source the stack env)}"
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}
rounds=${BENCH_ROUNDS:-3}
seconds=${BENCH_SECONDS:-3}
requests=${BENCH_REQUESTS:-30000}
work=$(mktemp -d)
prefix="floor$RANDOM$RANDOM"
cleanup() {
  redis-cli -h "$host" -p "$port" DEL "$prefix:idx" "$prefix:row" "$prefix:types" "$prefix:fresh" >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis-cli -h "$host" -p "$port" SET "$prefix:idx" 1 >/dev/null
redis-cli -h "$host" -p "$port" HSET "$prefix:row" id 1 email jane@example.com first_name Jane last_name Doe created_at 2024-01-01T00:00:00Z >/dev/null
redis-cli -h "$host" -p "$port" HSET "$prefix:types" id int8 email text first_name text last_name text created_at timestamptz >/dev/null
redis-cli -h "$host" -p "$port" HSET "$prefix:fresh" lsn 123 ts_ms 1700000000000 applied_at_ms 1700000000000 >/dev/null
lookup_shape='local id = redis.call("GET", KEYS[1]) local r = redis.call("HGETALL", KEYS[2]) local t = redis.call("HGETALL", KEYS[3]) local f = redis.call("HGETALL", KEYS[4]) return cjson.encode({t, f, {r}, id})'

echo 'SELECT 1;' >"$work/select1.sql"
pg_floor() {
  (cd "$work" && rm -f pgbench_log.* && pgbench -n -M prepared -c 1 -T "$seconds" -f select1.sql --log "$DATABASE_URL" >/dev/null 2>&1)
  # Per transaction: the interval between consecutive completions (columns 5-6, epoch s and
  # µs). Not column 3: pgbench takes its clock lazily, so a sub-10-µs transaction's logged
  # latency is often 0 (most of them, for `SELECT 1`); with -c 1 the interval is the cycle.
  cat "$work"/pgbench_log.* | awk '{t = $5 * 1000000 + $6; if (NR > 1) print t - prev; prev = t}' | sort -n |
    awk '{a[NR]=$1; s+=$1} END {printf "%.3f / %.3f / %.3f ms (%d)", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, s/NR/1000, NR}'
}
redis_floor() {
  redis-benchmark -h "$host" -p "$port" -c 1 -n "$requests" --csv "$@" | tail -1 |
    awk -F, '{gsub(/"/, ""); printf "%.3f / %.3f / %.3f ms", $(NF-3), $(NF-1), $(NF-5)}'
}

echo "machine: $(nproc) cores, $(uname -sr), redis $(redis-cli -h "$host" -p "$port" INFO server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r'), $(pgbench --version)"
echo
echo "| round (load) | PostgreSQL \`SELECT 1\` p50 / p99 / mean | Redis \`PING\` | Redis \`EVAL return 1\` | Redis email-shaped script (GET + 3 HGETALL + cjson) |"
echo "|---|---:|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  if (( round % 2 )); then
    pg=$(pg_floor); ping=$(redis_floor PING); ret=$(redis_floor EVAL "return 1" 0)
    shape=$(redis_floor EVAL "$lookup_shape" 4 "$prefix:idx" "$prefix:row" "$prefix:types" "$prefix:fresh")
  else
    shape=$(redis_floor EVAL "$lookup_shape" 4 "$prefix:idx" "$prefix:row" "$prefix:types" "$prefix:fresh")
    ret=$(redis_floor EVAL "return 1" 0); ping=$(redis_floor PING); pg=$(pg_floor)
  fi
  echo "| $round ($load) | $pg | $ping | $ret | $shape |"
done
