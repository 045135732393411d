#!/usr/bin/env bash
# Fuzzing campaigns: builds the targets of tests/fuzz with clang's libFuzzer
# and ASan+UBSan in build-fuzz (ORDO_FUZZ=ON), runs each for SECONDS from
# its seed corpus, and merges the inputs that reached new code into the seed
# corpus (tests/fuzz/corpus/TARGET, minimised). A crash stops that target;
# its input is left in build-fuzz/crashes/ (add it to the corpus once fixed:
# the test suite replays the corpus on every build).
#   usage: bench/fuzz.sh [SECONDS per target, default 60] [TARGET...]
#   targets: order json create_event envelope config
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(order json create_event envelope config)
bash scripts/deps.sh
command -v clang >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang >/dev/null; }
CC=clang cmake -S . -B build-fuzz -DORDO_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null
cmake --build build-fuzz -j2 --target "${targets[@]/#/fuzz_}" >/dev/null
mkdir -p build-fuzz/crashes
export ASAN_OPTIONS="abort_on_error=0:halt_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
status=0
for t in "${targets[@]}"; do
    work=build-fuzz/corpus-$t
    mkdir -p "$work"
    echo "== fuzz_$t, ${secs}s"
    if ! build-fuzz/tests/fuzz_"$t" "$work" "tests/fuzz/corpus/$t" -max_total_time="$secs" -max_len=65536 \
        -artifact_prefix="build-fuzz/crashes/$t-" -print_final_stats=1 >"build-fuzz/fuzz_$t.log" 2>&1; then
        status=1
        echo "   CRASH: $(grep -m1 -E 'ERROR|runtime error|SUMMARY' "build-fuzz/fuzz_$t.log")"
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ +DONE' "build-fuzz/fuzz_$t.log" | sed 's/^/   /'
    build-fuzz/tests/fuzz_"$t" -merge=1 "tests/fuzz/corpus/$t" "$work" >/dev/null 2>&1 || true
    echo "   corpus: $(ls "tests/fuzz/corpus/$t" | wc -l) inputs"
done
exit $status
