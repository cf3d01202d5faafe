#!/usr/bin/env bash
# Runs each fuzz target for FUZZ_SECONDS (default 60) with libFuzzer, as
# `make fuzz` does: spec/fuzz/run.sh BUILD_DIR [TARGET...].
# New inputs go to BUILD_DIR/fuzz-corpus/<target> (not to the committed seed
# corpus); a crash or hang to BUILD_DIR/fuzz-artifacts/<target>-crash-*.
set -uo pipefail
build=${1:?usage: run.sh BUILD_DIR [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(json smallcaps bundle store)
secs=${FUZZ_SECONDS:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$build/fuzz-corpus/$t" "$build/fuzz-artifacts"
  echo "== fuzz/$t for ${secs}s"
  if ! OCAP_SOURCE_DIR="$src" "$build/fuzz_$t" -max_total_time="$secs" -timeout=20 -max_len=8192 -detect_leaks=0 \
      -dict="$src/spec/fuzz/$t.dict" -artifact_prefix="$build/fuzz-artifacts/$t-" \
      -print_final_stats=1 "$build/fuzz-corpus/$t" "$src/spec/fuzz/corpus/$t"; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed: ${failed[*]} (inputs in $build/fuzz-artifacts/)" >&2
  exit 1
fi
