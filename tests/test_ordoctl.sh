#!/usr/bin/env bash
# The C gRPC client (ordoctl, over libordo) against a real cluster: unary calls,
# errors, server streaming, and the bus dump over cnats.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../scripts/lib.sh"
BUILD=${ORDO_BUILD:-$here/../build}
CTL=$BUILD/tools/ordoctl
dir=$(mktemp -d /tmp/ordo-ctl.XXXXXX)
passed=0 failed=0
es_pid=
trap 'ordo_cleanup_dir "$dir" "$es_pid"' EXIT
check() {   # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then passed=$((passed + 1)); echo "ok - $what"; else failed=$((failed + 1)); echo "FAIL - $what"; fi
}

ordo_pg_start "$dir/pg" off || exit 1
ordo_nats_start "$dir" || exit 1
"$BUILD/eventstore/eventstore" --listen 127.0.0.1:0 >"$dir/es.out" 2>"$dir/es.log" &
es_pid=$!
for _ in $(seq 100); do grep -q '^port=' "$dir/es.out" && break; sleep 0.1; done
export EVENTSTORE_ADDR=127.0.0.1:$(sed -n 's/^port=//p' "$dir/es.out")

out=$("$CTL" append --aggregate-id c-1 --aggregate-type order --type order-created --data '{"x":1}' --expected 0)
check "append answers version 1" grep -q '"version":1' <<<"$out"
out=$("$CTL" append --aggregate-id c-1 --aggregate-type order --type order-created --data '{"x":1}' --expected 0)
check "a conflict is reported with its code" grep -q '"code":"conflict"' <<<"$out"
out=$("$CTL" append --aggregate-id c-1 --aggregate-type order --type t --data 'nope')
check "bad JSON is reported as invalid" grep -q '"code":"invalid"' <<<"$out"
"$CTL" tail --from 0 --count 3 --timeout-ms 15000 >"$dir/tail.out" &
tail_pid=$!
sleep 0.3
"$CTL" append --aggregate-id c-2 --aggregate-type order --type t --data '[1]' >/dev/null
"$CTL" append --aggregate-id c-3 --aggregate-type order --type t --data '[2]' >/dev/null
wait "$tail_pid"
check "tail streams catch-up then live events" test "$(grep -c event_id "$dir/tail.out")" -eq 3
check "get by aggregate" test "$("$CTL" get --aggregate-id c-1 | grep -c '"version":1')" -eq 1
stats=$("$CTL" stats)
check "stats counts 3 events" grep -q '"events":3' <<<"$stats"
for _ in $(seq 50); do "$CTL" stats | grep -q '"outbox_backlog":0' && break; sleep 0.1; done
check "bus-dump shows the 3 events" test "$("$CTL" bus-dump --nats-url "$NATS_URL" | grep -c Nats-Msg-Id)" -eq 3
"$CTL" get --addr 127.0.0.1:1 --timeout-ms 2000 >"$dir/down.out"
check "an unreachable store is reported, not hung" grep -q '"code":"unavailable"\|"code":"timeout"' "$dir/down.out"
help=$("$CTL" --help)
for c in append get tail stats republish bus-dump consumers consumer-reset; do
    check "--help says what $c does" grep -Eq "^  $c +[a-z]{4,}" <<<"$help"
done
"$CTL" frobnicate >/dev/null 2>"$dir/unknown.err"
check "an unknown command exits 2" test $? -eq 2
check "an unknown command is named, with the command list" \
    grep -q 'unknown command "frobnicate"' "$dir/unknown.err"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
