#!/usr/bin/env bash
# Old against new end to end, in one sitting: the services of two checkouts
# (each built, binaries in ROOT/build) take turns on one PostgreSQL (fsync
# on) and nats-server, each round orders at a fixed RATE for SECONDS from
# bench/e2e_load, so that the host's spells fall on both alike.
#   usage: bench/ab_e2e.sh OLD_ROOT NEW_ROOT [ROUNDS=3] [RATE=350] [SECONDS=10]
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,6p' "$0"; exit 2; }
old=$(readlink -f "$1") new=$(readlink -f "$2") rounds=${3:-3} rate=${4:-350} secs=${5:-10}
. scripts/lib.sh
dir=$(mktemp -d /tmp/ordo-abe.XXXXXX)
pids=()
stop_all() { for p in "${pids[@]}"; do ordo_kill_wait "$p"; done; pids=(); }
trap 'stop_all; ordo_cleanup_dir "$dir"' EXIT
ordo_pg_start "$dir/pg" on >/dev/null
ordo_nats_start "$dir" >/dev/null
port_of() { for _ in $(seq 100); do grep -qs '^port=' "$dir/$1.out" && break; sleep 0.1; done; sed -n 's/^port=//p' "$dir/$1.out"; }
svc() { local name=$1 bin=$2; shift 2; "$bin" "$@" >"$dir/$name.out" 2>>"$dir/$name.log" & pids+=($!); }
one() {
    local label=$1 root=$2
    rm -f "$dir"/*.out
    svc es "$root/build/eventstore/eventstore" --listen 127.0.0.1:0 --database-url "$DATABASE_URL" --nats-url "$NATS_URL"
    local addr=127.0.0.1:$(port_of es)
    local common=(--nats-url "$NATS_URL" --eventstore-addr "$addr")
    svc oq1 "$root/build/orderquery/orderquery" --listen 127.0.0.1:0 --database-url "$DATABASE_URL" "${common[@]}"
    svc oq2 "$root/build/orderquery/orderquery" --listen 127.0.0.1:0 --database-url "$DATABASE_URL" "${common[@]}"
    local oqs="ipv4:127.0.0.1:$(port_of oq1),127.0.0.1:$(port_of oq2)"
    svc pay "$root/build/paymentsvc/paymentsvc" --limit 500 "${common[@]}"
    svc rest "$root/build/restaurantsvc/restaurantsvc" --unavailable SOLD-OUT "${common[@]}"
    svc api "$root/build/orderapi/orderapi" --http-addr 127.0.0.1:0 --eventstore-addr "$addr" --orderquery-addr "$oqs"
    local api=127.0.0.1:$(port_of api)
    sleep 1
    build/bench/e2e_load --api-addr "$api" --database-url "$DATABASE_URL" --seconds "$secs" --threads 16 --rate "$rate" --label "$label" | head -1
    stop_all
}
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then one old "$old"; one new "$new"; else one new "$new"; one old "$old"; fi
done
