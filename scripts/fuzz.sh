#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a bounded time, each from a
# scratch copy of its committed seed corpus (test/fuzz/corpus/<target>/), so
# nothing tracked changes. One line per target:
#   fuzz config: 151234 runs in 30 s, corpus 7 -> 212 inputs, 0 findings
# A finding (crash, sanitizer report, leak, timeout, out-of-memory) prints the
# fuzzer's report and the reproducer's path, and the exit status is 1.
#
#   scripts/fuzz.sh [build-fuzz] [seconds per target, 30] [target ...]
# Env: KEEP=dir keeps the grown corpora and reproducers there; SEED=n fixes
# libFuzzer's seed (make test uses one so that CI repeats the same
# exploration; bench/fuzz.sh leaves it random to find new inputs).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-fuzz}
SECS=${2:-30}
shift 2 2>/dev/null || shift $#
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in "$BUILD"/test/fuzz/fuzz_*; do [ -f "$f" ] && [ -x "$f" ] && targets+=("$(basename "$f" | sed 's/^fuzz_//')"); done
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets in $BUILD/test/fuzz (make fuzz)"; exit 1; }
W=${KEEP:-$(mktemp -d /tmp/sharp-fuzz.XXXXXX)}
mkdir -p "$W"
rc=0
for t in "${targets[@]}"; do
    bin="$BUILD/test/fuzz/fuzz_$t"
    corpus="$W/$t-corpus"
    art="$W/$t-findings"
    mkdir -p "$corpus" "$art"
    seeds=0
    if [ -d "test/fuzz/corpus/$t" ]; then
        cp test/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
        seeds=$(ls test/fuzz/corpus/"$t" | wc -l)
    fi
    log="$W/$t.log"
    # Every committed reproducer must run clean before fuzzing starts: a
    # fixed finding that comes back fails here on every run, not only when
    # the fuzzer happens to find it again.
    if [ -d "test/fuzz/findings/$t" ] && [ -n "$(ls "test/fuzz/findings/$t")" ]; then
        if ! timeout 120 "$bin" -timeout=10 -rss_limit_mb=2048 test/fuzz/findings/"$t"/* > "$log" 2>&1; then
            rc=1
            echo "fuzz $t: 0 runs in $SECS s, corpus $seeds -> 0 inputs, 1 findings: a committed reproducer in test/fuzz/findings/$t fails again"
            grep -E -A40 "Running: |ERROR: |SUMMARY: |runtime error" "$log" | head -80
            continue
        fi
    fi
    opts=()
    [ -n "${SEED:-}" ] && opts+=("-seed=$SEED")
    [ -f "test/fuzz/$t.dict" ] && opts+=("-dict=test/fuzz/$t.dict")
    # -timeout: one input taking over 10 s is a finding (a hang); -rss_limit_mb
    # bounds memory; leaks are findings (ASan's LeakSanitizer).
    timeout $((SECS + 120)) "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$art/" "${opts[@]}" "$corpus" > "$log" 2>&1
    code=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    found=$(ls "$art" | wc -l)
    grown=$(ls "$corpus" | wc -l)
    echo "fuzz $t: ${runs:-0} runs in $SECS s, corpus $seeds -> $grown inputs, $found findings"
    if [ "$code" -ne 0 ] || [ "$found" -ne 0 ]; then
        rc=1
        grep -E -A40 "ERROR: |SUMMARY: |==[0-9]+==" "$log" | head -80
        echo "fuzz $t: reproducer(s): $(ls -d "$art"/* 2>/dev/null | tr '\n' ' ') (run: $bin <file>)"
        KEEP=${KEEP:-$W}
    fi
done
[ -z "${KEEP:-}" ] && rm -rf "$W"
exit $rc
