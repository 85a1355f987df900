#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets/) for [seconds] (default 20) from the
# seeds in fuzz/seeds/, with a scratch corpus so the checkout stays clean. A crash
# fails the script and leaves its input in $FUZZ_ARTIFACTS (printed).
#   bash ci/fuzz.sh 600       # ten minutes per target by hand
# cargo-fuzz needs nightly-only compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1
# unlocks them. No sanitizer (-s none): the code under test forbids unsafe, and it
# keeps the instrumented build fast.
#   FUZZ_PROFILE=dev bash ci/fuzz.sh 15   # CI: an unoptimised build compiles in a fraction
#                                           # of the time; slower fuzzing, fine for a smoke run
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${1:-20}"
profile_flag=()
[[ "${FUZZ_PROFILE:-release}" == dev ]] && profile_flag=(--dev)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/todo-system/target}"
FUZZ_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || INSTALL_CARGO_FUZZ=1 bash ../ci/install-test-tools.sh >/dev/null

SCRATCH="$(mktemp -d)"
FUZZ_ARTIFACTS="${FUZZ_ARTIFACTS:-$SCRATCH/artifacts}"
mkdir -p "$FUZZ_ARTIFACTS"
trap 'rm -rf "$SCRATCH/corpus"' EXIT

cargo fuzz build -s none "${profile_flag[@]}" --target-dir "$FUZZ_TARGET_DIR"
status=0
for target in $(cargo fuzz list); do
  corpus="$SCRATCH/corpus/$target"
  mkdir -p "$corpus"
  [[ -d "seeds/$target" ]] && cp -r "seeds/$target/." "$corpus/"
  echo "=== fuzz $target for ${SECONDS_PER_TARGET}s"
  if ! cargo fuzz run -s none "${profile_flag[@]}" --target-dir "$FUZZ_TARGET_DIR" "$target" "$corpus" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$FUZZ_ARTIFACTS/$target-" -print_final_stats=1 2>"$SCRATCH/$target.log"; then
    status=1
    tail -40 "$SCRATCH/$target.log"
    echo "fuzz $target FAILED; inputs in $FUZZ_ARTIFACTS"
  fi
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^Done|cov:' "$SCRATCH/$target.log" | tail -3
  echo "corpus: $(ls "$corpus" | wc -l) inputs"
done
exit "$status"
