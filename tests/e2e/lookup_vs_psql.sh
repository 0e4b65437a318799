#!/usr/bin/env bash
# Whole-process lookup latency: `agent-cli tool ...` (release build) next to `psql -c` answering
# the same question from PostgreSQL, in one run, on the same data (PostgreSQL -> Debezium ->
# Kafka -> the real sink -> Redis). Prints hyperfine's output and a markdown table of the means,
# medians and psql/agent-cli ratios. Details: tests/e2e/lookup_vs_psql.py.
#
#   tests/e2e/lookup_vs_psql.sh            # starts what is missing: redis kafka registry postgres connect
#
# Environment: BENCH_RUNS (200) and BENCH_WARMUP (10) per command; AGENT_CLI_BIN (default: the
# release build, built here), SINK_BIN (default: the debug build, built here); the stack's
# variables (tests/stack/*.sh --help). The stack is left running.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agent-context/target}

command -v hyperfine >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine; }
venv="${AGENT_CONTEXT_CACHE:-$HOME/.cache/agent-context}/venv"
if ! "$venv/bin/python" -c 'import psycopg, confluent_kafka, fastavro, redis, yaml' 2>/dev/null; then
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

eval "$(bash tests/stack/up.sh redis kafka registry postgres connect)"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exec "$venv/bin/python" tests/e2e/lookup_vs_psql.py
