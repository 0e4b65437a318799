#!/usr/bin/env bash
# The fault suite (tests/faults/faults.py has the details): the real sink, both writers, under
# SIGKILLs and Redis, broker and registry outages, with poison records; its Redis state
# compared key by key with a clean replay. Starts and stops its own services on its own ports.
#
#   bash tests/faults/run.sh [--profile short|full] [--seed N] [--port-base P] [--keep] [--faults LIST]
#
# Needs the test venv (tests/run.sh makes it: ~/.cache/agent-context/venv) and a built sink:
# SINK_BIN, else $CARGO_TARGET_DIR/debug/sink, else target/debug/sink.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv="${AGENT_CONTEXT_CACHE:-$HOME/.cache/agent-context}/venv"
python="$venv/bin/python"
[ -x "$python" ] || { echo "faults: no test venv at $venv (tests/run.sh creates it)" >&2; exit 2; }
exec "$python" "$here/faults.py" "$@"
