#!/bin/sh
# tools/flake_hunt.sh - runs every unit-test program of a build directory again
# and again, to find a flaky test before CI does (a flaky test is fixed, never
# retried into green).
#
#   sh tools/flake_hunt.sh BUILD_DIR [REPS] [-- PREFIX...]
#
#   sh tools/flake_hunt.sh build 10
#   sh tools/flake_hunt.sh build-tsan 3
#   sh tools/flake_hunt.sh build 5 -- taskset -c 0     (the onecpu stage's setting)
#   HOGS=2 sh tools/flake_hunt.sh build 5              (with 2 CPU hogs beside it)
#
# Each run of a program that fails keeps its output in FLAKE_DIR (default
# /tmp/kit-flakes); the failing lines are also printed. Fuzz programs are skipped.
# Last line: "flake_hunt: BUILD_DIR: N runs, N failed". Exit 0 only if none failed.

set -u
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILD_DIR [REPS] [-- PREFIX...]" >&2
    exit 2
fi
B=$(cd "$1" && pwd)
shift
REPS=10
case ${1:-} in
    '' | --) ;;
    *[!0-9]*) echo "$0: REPS must be a number" >&2; exit 2 ;;
    *) REPS=$1; shift ;;
esac
[ "${1:-}" = "--" ] && shift
OUT=${FLAKE_DIR:-/tmp/kit-flakes}
mkdir -p "$OUT" || exit 2

hogs=""
i=0
while [ "$i" -lt "${HOGS:-0}" ]; do
    sh -c 'while :; do :; done' &
    hogs="$hogs $!"
    i=$((i + 1))
done
trap '[ -n "$hogs" ] && kill $hogs 2>/dev/null' EXIT
trap 'exit 1' HUP INT TERM

runs=0
fails=0
r=1
while [ "$r" -le "$REPS" ]; do
    for t in "$B"/test_*; do
        [ -x "$t" ] && [ -f "$t" ] || continue
        n=$(basename "$t")
        case $n in *fuzz*) continue ;; esac
        log="$OUT/$(basename "$B").$n.$r.log"
        runs=$((runs + 1))
        if (cd "$B" && timeout 600 "$@" "./$n" >"$log" 2>&1); then
            rm -f "$log"
        else
            fails=$((fails + 1))
            echo "FAIL: $n (rep $r), output in $log"
            grep -E "FAIL|failed|TIMEOUT|ERROR|WARNING" "$log" | head -5
        fi
    done
    r=$((r + 1))
done
echo "flake_hunt: $B: $runs runs, $fails failed"
[ "$fails" -eq 0 ]
