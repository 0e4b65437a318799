#!/usr/bin/env bash
# The long fuzz run of the sink's decoders (RELIABILITY.md, "Fuzzing"):
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [DIFFERENTIAL_CASES]
# runs each cargo-fuzz target (wire_avro, json) for SECONDS_PER_TARGET (default 300), one
# after another, from the recorded records as seeds (seeds.py) plus the corpus kept in
# fuzz/corpus/, then the differential proptest (compiled readers against apache-avro on
# random schemas, sink/src/decode/readers_agree.rs) for DIFFERENTIAL_CASES cases (default
# 20000). Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). A crash
# leaves its input in fuzz/artifacts/<target>/ and fails the script; libFuzzer's log of
# each target is in fuzz/logs/.
set -euo pipefail

seconds=${1:-300}
cases=${2:-20000}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
target_dir=${CARGO_TARGET_DIR:-$here/target}/cargo-fuzz
mkdir -p logs
python3 seeds.py corpus >/dev/null

for target in wire_avro json; do
  # No sanitizer: the product code forbids `unsafe`; debug assertions catch overflows.
  cargo +nightly fuzz build --sanitizer none --debug-assertions \
    --target-dir "$target_dir" "$target"
  echo "== $target: ${seconds}s"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: the process as a whole;
  # the per-input allocation bound is asserted by the target itself (src/lib.rs).
  cargo +nightly fuzz run --sanitizer none --debug-assertions \
    --target-dir "$target_dir" "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 2>&1 | tee "logs/$target.log" | grep -E "^(#[0-9]+ +(INITED|DONE)|Done|==|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb|new_units_added))" || true
  if ! grep -q "^Done " "logs/$target.log"; then
    echo "$target failed: see fuzz/logs/$target.log and fuzz/artifacts/$target/" >&2
    exit 1
  fi
  echo "$target corpus: $(ls "corpus/$target" | wc -l) inputs"
done

echo "== differential: $cases cases"
cd "$here/.."
PROPTEST_CASES=$cases cargo test -p sink --lib decode::readers_agree 2>&1 | tail -3
