#!/usr/bin/env bash
# Old against new end to end, in one sitting: the services of two checkouts
# (each built, binaries in ROOT/build) take turns on one PostgreSQL (fsync
# on), each round orders at a fixed RATE for SECONDS from bench/e2e_load, so
# that the host's spells fall on both alike. After each run's line, the CPU
# per order of every process over its middle (bench/cpu_split.py; less noisy
# than throughput on a shared host), and at the end the medians of both.
#   usage: bench/ab_e2e.sh OLD_ROOT NEW_ROOT [ROUNDS=3] [RATE=350] [SECONDS=10]
# RATE 0: as fast as the side can. OLD_SECURE=1 / NEW_SECURE=1 (environment):
# that side runs secured as scripts/up.sh runs it (TLS on every hop, its own
# identities, NATS users, PostgreSQL roles, HTTPS with an API key), on a
# nats-server of its own; OLD_LABEL / NEW_LABEL name the sides
# (bench/tls_cost_e2e.sh runs one checkout plain against secured this way).
# OLD_LOAD / NEW_LOAD: more bench/e2e_load arguments for that side; API_ARGS:
# more orderapi arguments for both (bench/streams_cost.sh runs one checkout
# without and with open change streams this way). PERF_DIR (environment):
# record every CPU's call graphs (perf) over the run's middle into
# PERF_DIR/LABEL.N.data, to compare where the two sides' time goes
# (PERF_ARGS: what to record instead of call graphs, e.g. "-e sched:sched_switch").
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
old=$(readlink -f "$1") new=$(readlink -f "$2") rounds=${3:-3} rate=${4:-350} secs=${5:-10}
. scripts/lib.sh
dir=$(mktemp -d /tmp/ordo-abe.XXXXXX)
pids=()
stop_all() { for p in "${pids[@]}"; do ordo_kill_wait "$p"; done; pids=(); }
cleanup() { stop_all; ordo_nats_stop "$dir/secure"; ordo_cleanup_dir "$dir"; }
trap cleanup EXIT
ordo_pg_start "$dir/pg" on >/dev/null
ordo_nats_start "$dir" >/dev/null
plain_nats=$NATS_URL
certs=$dir/certs
secure_nats=
if [ "${OLD_SECURE:-0}" = 1 ] || [ "${NEW_SECURE:-0}" = 1 ]; then
    ordo_secure_identities "$certs" >/dev/null
    ordo_pg_secure "$dir/pg" "$certs"
    ordo_nats_start "$dir/secure" "" "$certs/nats.conf" >/dev/null
    secure_nats=$NATS_URL
fi
port_of() { for _ in $(seq 100); do grep -qs '^port=' "$dir/$1.out" && break; sleep 0.1; done; sed -n 's/^port=//p' "$dir/$1.out"; }
svc() {   # svc NAME BINARY ARGS...: one service, secured as the identity named by its folder when $secure
    local name=$1 bin=$2; shift 2
    TLS=()
    [ "$secure" = 1 ] && ordo_tls_args "$certs" "$(basename "$(dirname "$bin")")"
    "$bin" "$@" "${TLS[@]}" >"$dir/$name.out" 2>>"$dir/$name.log" &
    pids+=($!)
}
one() {   # one LABEL ROOT SECURE
    local label=$1 root=$2 secure=$3 extra_load=$4 es_db=$DATABASE_URL rm_db=$DATABASE_URL nats=$plain_nats api_opts=() load_opts=()
    local more_api=() extra=()
    read -r -a more_api <<<"${API_ARGS:-}"
    read -r -a extra <<<"$extra_load"
    if [ "$secure" = 1 ]; then
        es_db=$ES_DATABASE_URL rm_db=$RM_DATABASE_URL nats=$secure_nats
        api_opts=(--api-keys-file "$certs/api-keys" --https-cert "$certs/orderapi.pem" --https-key "$certs/orderapi.key")
        load_opts=(--ca "$certs/ca.pem" --api-key-file "$certs/staff.key")
    fi
    rm -f "$dir"/*.out
    svc es "$root/build/eventstore/eventstore" --listen 127.0.0.1:0 --database-url "$es_db" --nats-url "$nats"
    local addr=127.0.0.1:$(port_of es)
    local common=(--nats-url "$nats" --eventstore-addr "$addr")
    svc oq1 "$root/build/orderquery/orderquery" --listen 127.0.0.1:0 --database-url "$rm_db" "${common[@]}"
    svc oq2 "$root/build/orderquery/orderquery" --listen 127.0.0.1:0 --database-url "$rm_db" "${common[@]}"
    local oqs="ipv4:127.0.0.1:$(port_of oq1),127.0.0.1:$(port_of oq2)"
    svc pay "$root/build/paymentsvc/paymentsvc" --limit 500 "${common[@]}"
    svc rest "$root/build/restaurantsvc/restaurantsvc" --unavailable SOLD-OUT "${common[@]}"
    svc api "$root/build/orderapi/orderapi" --http-addr 127.0.0.1:0 --eventstore-addr "$addr" --orderquery-addr "$oqs" "${api_opts[@]}" "${more_api[@]}"
    local api=127.0.0.1:$(port_of api)
    sleep 1
    /usr/bin/python3 bench/cpu_split.py --delay 2 --seconds $(( secs > 6 ? secs - 4 : 2 )) --unit order \
        --count-sql "SELECT count(*) FROM orders WHERE created_at BETWEEN %s AND %s" --database-url "$DATABASE_URL" \
        >"$dir/cpu.txt" 2>&1 &
    local split=$! res perf=
    if [ -n "${PERF_DIR:-}" ]; then
        mkdir -p "$PERF_DIR"
        (sleep 3; perf record -a ${PERF_ARGS:--g} -q -o "$PERF_DIR/$label.$(ls "$PERF_DIR" | grep -c "^$label\\.").data" \
             -- sleep $(( secs > 8 ? secs - 6 : 2 )) >/dev/null 2>&1) &
        perf=$!
    fi
    res=$(build/bench/e2e_load --api-addr "$api" --database-url "$DATABASE_URL" --seconds "$secs" --threads 16 \
          --rate "$rate" --label "$label" "${load_opts[@]}" "${extra[@]}")
    wait "$split"
    [ -z "$perf" ] || wait "$perf"
    echo "$res" | grep -v '^{' 
    echo "  $(cat "$dir/cpu.txt")"
    echo "$res" | tail -1 | sed -n 's/.*"orders_per_s":\([0-9]*\).*/\1/p' >>"$dir/$label.ops"
    sed -n 's/^cpu ms per order ([^)]*): \([0-9.]*\) in all.*/\1/p' "$dir/cpu.txt" >>"$dir/$label.cpu"
    stop_all
}
median() { sort -n "$dir/$1" | awk '{v[NR]=$1} END{print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
old_side() { one "${OLD_LABEL:-old}" "$old" "${OLD_SECURE:-0}" "${OLD_LOAD:-}"; }
new_side() { one "${NEW_LABEL:-new}" "$new" "${NEW_SECURE:-0}" "${NEW_LOAD:-}"; }
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then old_side; new_side; else new_side; old_side; fi
done
o=${OLD_LABEL:-old} n=${NEW_LABEL:-new}
echo "median orders/s: $o $(median "$o.ops")  $n $(median "$n.ops");" \
     "machine CPU ms per order: $o $(median "$o.cpu")  $n $(median "$n.cpu") (rate $rate, ${secs}s x $rounds rounds each)"
