#!/usr/bin/env bash
# The test command: installs what is missing, builds Ordo twice (release, and
# AddressSanitizer + UndefinedBehaviorSanitizer) and runs every test (ctest)
# against real PostgreSQL, nats-server and Ordo processes on loopback.
#   scripts/test.sh            both builds
#   scripts/test.sh release    one build only (release or asan)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
kinds=("${@:-release asan}")
read -r -a kinds <<<"${kinds[*]}"
status=0
for kind in "${kinds[@]}"; do
    echo "=== build: $kind"
    bash scripts/build.sh "$kind"
    dir=build; [ "$kind" = asan ] && dir=build-asan
    echo "=== tests: $kind"
    # ASan: abort on the first error; leaks are checked with the suppressions
    # for the C libraries we link (gRPC, cnats keep process-wide caches).
    ASAN_OPTIONS="abort_on_error=0:halt_on_error=1:detect_leaks=1" \
    LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        ctest --test-dir "$dir" -j 2 --output-on-failure || status=1
done
exit $status
