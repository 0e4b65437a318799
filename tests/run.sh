#!/usr/bin/env bash
# The whole test suite, end-to-end tests included. `.ci/run` calls exactly this.
#
# On a fresh machine it installs what is missing (apt build dependencies, Python test
# packages), starts the real services (Redis, Apache Kafka in KRaft mode, the schema registry,
# PostgreSQL 15 with logical WAL, Debezium Kafka Connect), runs every test against them and
# stops the services again. Downloads and build outputs are cached under
# ~/.cache/agent-context so a second run is fast.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
source tests/stack/lib.sh

# One build directory per checkout: cargo judges a build fresh by the times of files named
# relative to the package, so two checkouts sharing one target directory can take each
# other's builds (tests then read the other checkout's files).
checkout_key=$(printf '%s' "$repo" | sha1sum | cut -c1-12)
checkouts_dir="$HOME/.cache/agent-context/target/checkouts"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$checkouts_dir/$checkout_key}
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*" >&2; }

# Every fresh clone (each CI run is one) gets a target directory of a few GB, so keep only
# the build directories of checkouts that still exist, and of those the two used last.
prune_build_dirs() {
  [ -d "$checkouts_dir" ] || return 0
  local dir kept=0
  while IFS= read -r dir; do
    [ "$dir" = "$CARGO_TARGET_DIR" ] && continue
    local source
    source=$(cat "$dir/.checkout" 2>/dev/null || true)
    if [ -z "$source" ] || [ ! -d "$source" ] || [ $kept -ge 2 ]; then
      printf 'removing the build directory of %s (%s)\n' "${source:-an unknown checkout}" "$dir" >&2
      rm -rf "$dir"
    else
      kept=$((kept + 1))
    fi
  done < <(ls -dt "$checkouts_dir"/*/ 2>/dev/null | sed 's:/$::')
}
prune_build_dirs
# Cargo never deletes outdated artifacts: a directory that grew past 6 GB starts over.
if [ -d "$CARGO_TARGET_DIR" ] && [ "$(du -sm "$CARGO_TARGET_DIR" | cut -f1)" -gt 6144 ]; then
  printf 'removing %s: over 6 GB of builds\n' "$CARGO_TARGET_DIR" >&2
  rm -rf "$CARGO_TARGET_DIR"
fi
mkdir -p "$CARGO_TARGET_DIR"
printf '%s\n' "$repo" >"$CARGO_TARGET_DIR/.checkout"

step "Installing build and test dependencies (apt, pip) if missing"
missing=()
[ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -e /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
command -v cmake >/dev/null || missing+=(cmake)
# librdkafka's TLS and SASL SCRAM link the system OpenSSL; the stack makes test certificates
# with openssl and checks the TLS Redis with redis-cli.
[ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v openssl >/dev/null || missing+=(openssl)
command -v redis-cli >/dev/null || missing+=(redis-tools)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
venv="${AGENT_CONTEXT_CACHE:-$HOME/.cache/agent-context}/venv"
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import mcp, psycopg, confluent_kafka, fastavro, redis, yaml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/requirements.txt
fi
export PATH="$venv/bin:$PATH"

step "Building the workspace"
cargo build --workspace --all-targets --locked
export SINK_BIN="$CARGO_TARGET_DIR/debug/sink" AGENT_CLI_BIN="$CARGO_TARGET_DIR/debug/agent-cli"

step "Starting the stack"
trap 'step "Stopping the stack"; bash tests/stack/down.sh' EXIT
eval "$(bash tests/stack/up.sh redis kafka registry postgres connect)"

step "Rust tests (unit, golden, integration against the real services)"
cargo test --workspace --locked --no-fail-fast

step "Fault suite, short profile (its own Redis, Kafka and registry on ports 26100-26106)"
bash tests/faults/run.sh --profile short

step "Python tests (MCP client, registry, end-to-end through PostgreSQL and Debezium)"
pytest -q -p no:cacheprovider agent-cli/tests tests
