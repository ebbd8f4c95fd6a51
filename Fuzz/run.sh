#!/usr/bin/env bash
# Fuzz/run.sh [SECONDS] [TARGET…] — builds the libFuzzer targets (release, -sanitize=fuzzer) and runs each for SECONDS
# (default 60) from the committed seed corpus in Fuzz/corpus/TARGET. New inputs go to a scratch corpus, not into the
# repository. Prints one line per target with its executions; exits non-zero if any target crashed, leaked past the
# memory limit or hung on one input, leaving the input as Fuzz/findings/TARGET-* (make it a unit test).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
all=(json yaml selectors quantity tunnel pem kubeconfig sync)
targets=("${@:-${all[@]}}")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
scratch=${VMSYNC_FUZZ_SCRATCH:-/var/tmp/vmsync-fuzz}

swift build -c release --sanitize fuzzer --scratch-path "$scratch" 2>&1 \
    | grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Wrapping|Merging|Planning)' || true
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz: build failed"; exit 1; }
bin=$scratch/release

mkdir -p findings
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for target in "${targets[@]}"; do
    [ -d "corpus/$target" ] || { echo "fuzz: no target \"$target\" (known: ${all[*]})"; exit 2; }
    mkdir -p "$work/$target"
    log=$work/$target.log
    status=0
    # Swift's backtracer would take the crash from libFuzzer, which then writes no reproducer.
    SWIFT_BACKTRACE=enable=no "$bin/fuzz-$target" "$work/$target" "corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        -artifact_prefix="findings/$target-" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    coverage=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    if [ "$status" -eq 0 ]; then
        echo "fuzz-$target: ${runs:-0} executions in ${seconds} s, ${coverage:-cov: ?}, 0 crashes"
    else
        failed=1
        echo "fuzz-$target: FAILED after ${runs:-?} executions (exit $status)"
        grep -E 'ERROR|Fatal error|SUMMARY|Test unit written|timeout|out-of-memory' "$log" | head -10 | sed 's/^/    /'
    fi
done
exit $failed
