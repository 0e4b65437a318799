#!/usr/bin/env bash
# In-process agent-cli lookups (`Lookups::call`, release build) next to the same question asked of
# PostgreSQL on an open prepared connection (pgbench -M prepared -c 1), in one run, on the same
# data (PostgreSQL -> Debezium -> Kafka -> the real sink -> Redis), in interleaved rounds; plus MCP
# `tools/call` round trips through the MCP Python SDK. Prints a markdown table with p50/p99/mean
# of both sides and their ratios. Details: tests/e2e/lookup_vs_pgbench.py.
#
#   tests/e2e/lookup_vs_pgbench.sh          # starts what is missing: redis kafka registry postgres connect
#
# Environment: BENCH_ROUNDS (3), BENCH_SECONDS (5) per side, question and round, BENCH_MCP_CALLS
# (1000) per question and round, BENCH_CHANGES_PER_S (50) database changes a second flowing
# through the pipeline while the read cache is measured, BENCH_RUNTIME (mcp: the reconnecting Redis connection of
# `agent-cli mcp`; embedded: `Store::connect`); AGENT_CLI_BIN (default: the release build, built here),
# SINK_BIN (default: the debug build, built here); the stack's variables (tests/stack/*.sh
# --help). The stack is left running.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agent-context/target}

command -v pgbench >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client; }
venv="${AGENT_CONTEXT_CACHE:-$HOME/.cache/agent-context}/venv"
if ! "$venv/bin/python" -c 'import psycopg, confluent_kafka, fastavro, redis, yaml, mcp' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/requirements.txt
fi

if [[ -z ${AGENT_CLI_BIN:-} ]]; then
  cargo build --release -q -p agent-cli
  export AGENT_CLI_BIN=$CARGO_TARGET_DIR/release/agent-cli
fi
if [[ -z ${SINK_BIN:-} ]]; then
  cargo build -q -p sink
  export SINK_BIN=$CARGO_TARGET_DIR/debug/sink
fi
# The bench binary `cargo bench -p agent-cli --bench lookup_latency` would run.
LOOKUP_BENCH_BIN=$(cargo bench -q -p agent-cli --bench lookup_latency --no-run --message-format=json |
  "$venv/bin/python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "lookup_latency" and m.get("executable"):
        print(m["executable"])')
export LOOKUP_BENCH_BIN

eval "$(bash tests/stack/up.sh redis kafka registry postgres connect)"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$venv/bin/python" tests/e2e/lookup_vs_pgbench.py
