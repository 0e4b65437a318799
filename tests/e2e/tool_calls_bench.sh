#!/usr/bin/env bash
# Tool calls, LLM requests and Redis round trips per support question, with the tools before
# and after issue #16's context tools, through the real `agent-cli query` and a scripted model
# (PostgreSQL -> Debezium -> Kafka -> the real sink -> Redis). Prints a markdown table
# (BENCHMARKS.md, "Tool calls per question"). Details: tests/e2e/tool_calls_bench.py.
#
#   tests/e2e/tool_calls_bench.sh          # starts what is missing: redis kafka registry postgres connect
#
# Environment: BENCH_ORDERS (250) more orders for customer 1; AGENT_CLI_BIN / SINK_BIN (default:
# the debug builds, built here); the stack's variables (tests/stack/*.sh --help). The stack is
# left running.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agent-context/target}

venv="${AGENT_CONTEXT_CACHE:-$HOME/.cache/agent-context}/venv"
if ! "$venv/bin/python" -c 'import psycopg, confluent_kafka, fastavro, redis, yaml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/requirements.txt
fi
if [[ -z ${AGENT_CLI_BIN:-} || -z ${SINK_BIN:-} ]]; then
  cargo build -q -p agent-cli -p sink
  export AGENT_CLI_BIN=${AGENT_CLI_BIN:-$CARGO_TARGET_DIR/debug/agent-cli}
  export SINK_BIN=${SINK_BIN:-$CARGO_TARGET_DIR/debug/sink}
fi

eval "$(bash tests/stack/up.sh redis kafka registry postgres connect)"
exec "$venv/bin/python" tests/e2e/tool_calls_bench.py
