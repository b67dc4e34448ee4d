#!/usr/bin/env bash
# tests/fuzz/build_and_run.sh - builds the Manager's libFuzzer target with clang and
# runs it for a bounded time (FUZZ_SECONDS, default 60) from the seed corpus plus
# every saved crash. CI runs it as is; any crash fails the run and leaves the input
# in $OUT/artifacts: copy it into tests/fuzz/crashes/ so it stays a test
# (tests/test_manager_fuzz.c runs that directory on every build).
#
#   bash tests/fuzz/build_and_run.sh            # needs clang + libclang-rt (14 here)
#   FUZZ_SECONDS=600 bash tests/fuzz/build_and_run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
OUT=${FUZZ_OUT:-$ROOT/build-fuzz}
SECONDS_BUDGET=${FUZZ_SECONDS:-60}
CC=${FUZZ_CC:-clang}
mkdir -p "$OUT/corpus" "$OUT/artifacts"
FLAGS=(-g -O1 -std=c99 -D_DEFAULT_SOURCE -I"$ROOT" -I"$ROOT/tests")

echo "fuzz: building with $($CC --version | head -1)"
"$CC" "${FLAGS[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    tests/fuzz/fuzz_manager.c -o "$OUT/fuzz_manager" -pthread -lm
"$CC" "${FLAGS[@]}" -DFUZZ_STANDALONE tests/fuzz/fuzz_manager.c -o "$OUT/fuzz_manager_seeds" -pthread -lm
"$OUT/fuzz_manager_seeds" --write-seeds "$OUT/corpus"
for f in tests/fuzz/crashes/*; do
    [[ -f $f && $(basename "$f") != README ]] && cp "$f" "$OUT/corpus/"
done

echo "fuzz: running for ${SECONDS_BUDGET}s"
"$OUT/fuzz_manager" "$OUT/corpus" -max_total_time="$SECONDS_BUDGET" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$OUT/artifacts/" -print_final_stats=1 2>&1 | tail -25
status=${PIPESTATUS[0]}
if [[ $status -ne 0 ]]; then
    echo "fuzz: FAILED (exit $status); inputs in $OUT/artifacts:"
    ls -l "$OUT/artifacts"
    exit 1
fi
echo "fuzz: no crash in ${SECONDS_BUDGET}s"
