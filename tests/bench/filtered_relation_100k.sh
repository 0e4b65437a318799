#!/usr/bin/env bash
# Filters and ranges on a customer with 100,000 orders (README, "Filters, ranges"): fills a
# redis-server of its own (port $PORT, default 27300) in the default connectors.yaml layout
# (order hashes, customer:1:orders and the status-filtered relations the sink keeps), then
# times get_customer_orders calls through `agent-cli tool` and reads the lookup script's
# server-side cost from INFO commandstats.
# Usage: bash tests/bench/filtered_relation_100k.sh [path/to/agent-cli]
set -euo pipefail
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/agent-cli}
PORT=${PORT:-27300}
N=${N:-100000}
CALLS=${CALLS:-200}
DIR=$(mktemp -d)
redis-server --port "$PORT" --save '' --appendonly no --dir "$DIR" --daemonize yes --pidfile "$DIR/pid" >/dev/null
trap 'kill "$(cat "$DIR/pid")"; rm -rf "$DIR"' EXIT
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
python3 - "$N" <<'PY' | redis-cli -p "$PORT" --pipe >/dev/null
import sys, datetime
n = int(sys.argv[1]); t0 = 1_790_000_000_000_000
statuses = ["paid", "shipped", "pending", "cancelled"]
def cmd(*a):
    out = [f"*{len(a)}\r\n"]
    for x in a:
        x = str(x); out.append(f"${len(x.encode())}\r\n{x}\r\n")
    return "".join(out)
w = sys.stdout.write
w(cmd("HSET", "sink:types:orders", "id", "int", "customer_id", "int", "status", "string", "total_cents", "int", "created_at", "timestamp"))
for i in range(1, n + 1):
    ts = t0 + i * 1_000_000
    st = statuses[i % 4] if i % 100 else "refunded"   # 1% refunded: a rare value
    iso = datetime.datetime.fromtimestamp(ts / 1e6, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    w(cmd("HSET", f"order:{i}", "id", i, "customer_id", 1, "status", st, "total_cents", i % 9000, "created_at", iso))
    w(cmd("ZADD", "customer:1:orders", ts, i))
    w(cmd("ZADD", f"customer:1:orders:status:{st}", ts, i))
PY
echo "orders: $(redis-cli -p "$PORT" zcard customer:1:orders), refunded: $(redis-cli -p "$PORT" zcard customer:1:orders:status:refunded)"
iso() { python3 -c "import datetime,sys;print(datetime.datetime.fromtimestamp((1_790_000_000_000_000+int(sys.argv[1])*1_000_000)/1e6,datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))" "$1"; }
MID=$(iso $((N / 2)))
EARLY=$(iso 1000)
run() {
  local name=$1 args=$2
  redis-cli -p "$PORT" config resetstat >/dev/null
  local start end
  start=$(date +%s%N)
  for _ in $(seq "$CALLS"); do
    REDIS_URL=redis://127.0.0.1:$PORT "$BIN" --config connectors.yaml tool get_customer_orders "$args" >/dev/null
  done
  end=$(date +%s%N)
  local stats
  stats=$(redis-cli -p "$PORT" info commandstats | grep -E '^cmdstat_eval(sha)?(_ro)?:' | sed 's/\r//' | paste -sd' ')
  printf '%-40s %3d rows  process %6.2f ms/call  %s\n' "$name" \
    "$(REDIS_URL=redis://127.0.0.1:$PORT "$BIN" --config connectors.yaml tool get_customer_orders "$args" | python3 -c 'import json,sys;print(len(json.load(sys.stdin)["result"]))')" \
    "$(echo "($end - $start) / $CALLS / 1000000" | bc -l)" "$stats"
}
run "newest 10 (no filter)" '{"customer_id":1}'
run "status=pending limit 100" '{"customer_id":1,"status":"pending","limit":100}'
run "status=refunded (1%) limit 100" '{"customer_id":1,"status":"refunded","limit":100}'
run "range: mid 100 (since 1000, until mid)" "{\"customer_id\":1,\"created_after\":\"$EARLY\",\"created_before\":\"$MID\",\"limit\":100}"
run "status=refunded + range, limit 10" "{\"customer_id\":1,\"status\":\"refunded\",\"created_after\":\"$EARLY\",\"created_before\":\"$MID\"}"
