#!/usr/bin/env bash
# The benchmark suite: a fresh local cluster with production durability
# (fsync on, synchronous_commit on), then
#   0. the transport's ceiling: gRPC's C core alone against Ordo's generic
#      server, each answering CreateEvent at once (bench/echo_server), and the
#      event store's own path refusing a malformed CreateEvent (no database)
#   1. CreateEvent with group commit, 1, 4, 16, 64 and 256 clients, distinct aggregates,
#      and at half the 64-client throughput (latency at a fixed rate)
#   2. hot aggregates with expected versions; 10 events per call (the batch form);
#      a catch-up read of the whole store over GetEventsStream (bench/es_read)
#   3. the naive path: one transaction per call (--group-commit-max 1), taking
#      turns with group commit at 64 clients
#   4. end to end: orderapi + paymentsvc + restaurantsvc + 2 orderquery,
#      orders as fast as possible and at half that rate (bench/e2e_load), then
#      at 25, 75, 100, 125 and 150% of full speed (final orders/s against offered),
#      every service's memory (RSS) idle and under load, the read model's
#      rebuild from the store (events/s), and the CPU per
#      order of each process at full and at half load (bench/cpu_split.py)
#   5. PostgreSQL's ceiling for our rows (pgbench: the writer's statement, 100
#      events a transaction into the store's own tables, 4 clients)
# and prints each figure with its ratio to the references. Results are
# appended to bench/results/<date>.txt, with two plots beside it:
# <date>-createevent.png (events/s and p99 against clients) and
# <date>-saga.png (final orders/s against the rate offered).
# The cluster is secured as scripts/up.sh runs it: gRPC TLS with client
# certificates, NATS over TLS with a user per service, the services' own
# PostgreSQL roles over TLS, orderapi on HTTPS with an API key
# (ORDO_BENCH_PLAIN=1: everything plaintext, no credentials; bench/tls_cost.sh
# and bench/tls_cost_e2e.sh put the two side by side).
#   usage: bench/run.sh [SECONDS per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-10}
bash scripts/deps.sh
bash scripts/build.sh release >/dev/null
. scripts/lib.sh
dir=$(mktemp -d /tmp/ordo-bench.XXXXXX)
es_pid=
svc_pids=()
cleanup() {
    for p in "${svc_pids[@]}"; do ordo_kill_wait "$p"; done
    [ -n "$es_pid" ] && ordo_kill_wait "$es_pid"
    ordo_nats_stop "$dir"
    ordo_pg_stop "$dir/pg"
    # keep the logs with the results, for the next look at a tail
    [ -n "${out:-}" ] && mkdir -p "${out%.txt}-logs" && cp "$dir"/*.log "$dir/pg/log" "${out%.txt}-logs/" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
ordo_pg_start "$dir/pg" on
certs=$dir/certs
if [ "${ORDO_BENCH_PLAIN:-0}" = 1 ]; then
    security=plaintext
    ordo_nats_start "$dir"
    ES_DATABASE_URL=$DATABASE_URL RM_DATABASE_URL=$DATABASE_URL
    id_args() { TLS=(); }
    load_tls=() admin_tls=() api_scheme=() api_tls=()
else
    security="TLS everywhere, per-service identities (as scripts/up.sh)"
    ordo_secure_identities "$certs" >/dev/null
    ordo_pg_secure "$dir/pg" "$certs"
    ordo_nats_start "$dir" "" "$certs/nats.conf"
    id_args() { ordo_tls_args "$certs" "$1"; }
    load_tls=(--ca "$certs/ca.pem" --cert "$certs/orderapi.pem" --key "$certs/orderapi.key")
    admin_tls=(--ca "$certs/ca.pem" --cert "$certs/admin.pem" --key "$certs/admin.key")
    api_scheme=(--api-keys-file "$certs/api-keys" --https-cert "$certs/orderapi.pem" --https-key "$certs/orderapi.key")
    api_tls=(--ca "$certs/ca.pem" --api-key-file "$certs/staff.key")
fi
psql="runuser -u postgres -- psql -h 127.0.0.1 -p $PG_PORT -U postgres -qAt ordo"
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).txt
say() { echo "$*" | tee -a "$out"; }

say "# Ordo benchmarks $(date -u +%FT%TZ) on $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; fsync=on synchronous_commit=on; ${secs}s per run; $security"
say "# commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
# The machine's speed swings (shared host): CPU time of a fixed loop, here
# and before the end-to-end part; lower is faster. Figures of runs whose
# probes differ much are not comparable.
speed_probe() {
    say "speed probe ($1): $(/usr/bin/python3 -c 'import time
t = time.process_time()
s = 0
for i in range(3000000):
    s += i * i
print(f"{(time.process_time() - t) * 1000:.0f}")') ms CPU for a fixed loop"
}
speed_probe start

start_es() {
    $psql -c CHECKPOINT
    id_args eventstore
    "$root/build/eventstore/eventstore" --listen 127.0.0.1:0 --database-url "$ES_DATABASE_URL" "${TLS[@]}" "$@" \
        >"$dir/es.out" 2>"$dir/es.log" &
    es_pid=$!
    for _ in $(seq 100); do grep -q '^port=' "$dir/es.out" && break; sleep 0.1; done
    addr=127.0.0.1:$(sed -n 's/^port=//p' "$dir/es.out")
}
stop_es() { ordo_kill_wait "$es_pid"; es_pid=; }
# VmRSS, and in parentheses the anonymous part (the rest is shared library
# pages) and PSS (shared pages divided among the processes mapping them)
rss_kb() {
    local pss
    pss=$(awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup")
    awk -v pss="$pss" '/VmRSS/{r=$2} /RssAnon/{a=$2} END{printf "%skB(anon %skB, pss %skB)", r, a, pss}' "/proc/$1/status"
}
load() {   # load LABEL ARGS... → prints the human line, remembers events/s in $eps and p99 (ms) in $p99
    local label=$1; shift
    local res
    res=$("$root/build/bench/es_load" --addr "$addr" --label "$label" --seconds "$secs" "${load_tls[@]}" "$@" || true)
    say "$(echo "$res" | head -n 1)  eventstore_rss=$(rss_kb "$es_pid")"
    eps=$(echo "$res" | tail -n 1 | sed -n 's/.*"events_per_s":\([0-9]*\).*/\1/p')
    p99=$(echo "$res" | tail -n 1 | sed -n 's/.*"p99_ms":\([0-9.]*\).*/\1/p')
}
# the figures the plots are drawn from (bench/results/<time>-*.dat, -*.png)
curve_createevent=${out%.txt}-createevent.dat
curve_saga=${out%.txt}-saga.dat

# 0. the transport's ceiling: gRPC's C core alone and Ordo's generic server
# answering CreateEvent at once (bench/echo_server), both driven by es_load
# with the same requests and the suite's TLS, taking turns (bare, ordo, ordo,
# bare); each side's figure is the better of its two runs
echo_run() {   # echo_run MODE → the human line; events/s in $eps
    local pid
    id_args eventstore
    "$root/build/bench/echo_server" --mode "$1" "${TLS[@]:0:6}" >"$dir/echo.out" 2>"$dir/echo.log" &   # (its TLS files, no NATS)
    pid=$!
    for _ in $(seq 100); do grep -q '^port=' "$dir/echo.out" && break; sleep 0.1; done
    addr=127.0.0.1:$(sed -n 's/^port=//p' "$dir/echo.out")
    local res
    res=$("$root/build/bench/es_load" --addr "$addr" --label "echo-$1" --seconds "$secs" --clients 64 "${load_tls[@]}" || true)
    ordo_kill_wait "$pid"
    say "$(echo "$res" | head -n 1)"
    eps=$(echo "$res" | tail -n 1 | sed -n 's/.*"events_per_s":\([0-9]*\).*/\1/p')
}
best() { [ "${1:-0}" -ge "${2:-0}" ] && echo "${1:-0}" || echo "${2:-0}"; }
echo_run bare; bare1=$eps
echo_run ordo; ordo1=$eps
echo_run ordo; ordo2=$eps
echo_run bare; bare2=$eps
echo_bare=$(best "$bare1" "$bare2") echo_ordo=$(best "$ordo1" "$ordo2")

start_es
say "eventstore idle rss=$(rss_kb "$es_pid")"
# the event store's own gRPC path without the database: CreateEvent refused as malformed before any write
load eventstore-refused --clients 64 --mode invalid; es_refused=$eps
load group-commit --clients 1;  gc1=$eps
echo "1 $eps $p99" >"$curve_createevent"
load group-commit --clients 4;  echo "4 $eps $p99" >>"$curve_createevent"
load group-commit --clients 16; echo "16 $eps $p99" >>"$curve_createevent"
load group-commit --clients 64; gc64=$eps
echo "64 $eps $p99" >>"$curve_createevent"
load group-commit --clients 256; echo "256 $eps $p99" >>"$curve_createevent"
# the latency runs on recycled WAL segments, as in a database that has run a
# while: a CHECKPOINT first recycles the segments the runs above filled (on a
# fresh cluster's new segments, each zero-filled as it is reached, p99 at
# this rate was 5.6-11.3 ms against 3.5-3.6 on recycled ones; BENCHMARKS.md)
$psql -c CHECKPOINT
load group-commit-half --clients 64 --rate $(( (gc64 + 1) / 2 )) --timeline 2>"$dir/half-timeline.log"
load group-commit-hot --clients 64 --mode hot --hot 8
load group-commit-batch10 --clients 64 --events-per-call 10; gcb=$eps
# a new subscriber catching up: one GetEventsStream over everything the runs above stored
say "$("$root/build/bench/es_read" --addr "$addr" --label catch-up "${admin_tls[@]}" | head -n 1)"
stop_es
# the naive path takes turns with group commit at 64 clients (each side's
# better run counts), so that neither always meets the larger table
start_es --group-commit-max 1 --writers 16
load naive --clients 1;  nv1=$eps
load naive --clients 64; nv64a=$eps
stop_es
start_es
load group-commit --clients 64; gc64b=$eps
stop_es
start_es --group-commit-max 1 --writers 16
load naive --clients 64; nv64b=$eps
stop_es
gc64=$(best "$gc64" "$gc64b") nv64=$(best "$nv64a" "$nv64b")

# 4. end to end
speed_probe "before end to end"
start_es
svc() {   # svc NAME BINARY ARGS...: starts a service (as the identity named by the binary's folder)
    local name=$1 bin=$2; shift 2
    id_args "${bin%%/*}"
    "$root/build/$bin" "$@" "${TLS[@]}" >"$dir/$name.out" 2>"$dir/$name.log" &
    svc_pids+=($!)
    eval "pid_${name//-/_}=$!"
}
port_of() { for _ in $(seq 100); do grep -qs '^port=' "$dir/$1.out" && break; sleep 0.1; done; sed -n 's/^port=//p' "$dir/$1.out"; }
common=(--nats-url "$NATS_URL" --eventstore-addr "$addr")
svc oq1 orderquery/orderquery --listen 127.0.0.1:0 --database-url "$RM_DATABASE_URL" "${common[@]}"
svc oq2 orderquery/orderquery --listen 127.0.0.1:0 --database-url "$RM_DATABASE_URL" "${common[@]}"
oqs="ipv4:127.0.0.1:$(port_of oq1),127.0.0.1:$(port_of oq2)"
svc pay paymentsvc/paymentsvc --limit 500 "${common[@]}"
svc rest restaurantsvc/restaurantsvc --unavailable SOLD-OUT "${common[@]}"
svc api orderapi/orderapi --http-addr 127.0.0.1:0 --eventstore-addr "$addr" --orderquery-addr "$oqs" "${api_scheme[@]}"
api=127.0.0.1:$(port_of api)
sleep 1
rss_all() { echo "eventstore=$(rss_kb "$es_pid") orderapi=$(rss_kb "$pid_api") paymentsvc=$(rss_kb "$pid_pay") restaurantsvc=$(rss_kb "$pid_rest") orderquery=$(rss_kb "$pid_oq1"),$(rss_kb "$pid_oq2")"; }
say "rss idle: $(rss_all)"
e2e() {   # → the human line; orders/s taken in $ops, the saga's final orders/s in $fps
    local res
    res=$("$root/build/bench/e2e_load" --api-addr "$api" --database-url "$DATABASE_URL" --seconds "$secs" "${api_tls[@]}" "$@" || true)
    say "$(echo "$res" | head -n 1)"
    ops=$(echo "$res" | tail -n 1 | sed -n 's/.*"orders_per_s":\([0-9]*\).*/\1/p')
    fps=$(echo "$res" | tail -n 1 | sed -n 's/.*"final_per_s":\([0-9]*\).*/\1/p')
}
# where the machine's time goes: CPU per order by process over the middle
# of a run (started before it, read after it)
cpu_split_start() {
    /usr/bin/python3 "$root/bench/cpu_split.py" --delay 2 --seconds $(( secs > 6 ? secs - 4 : 2 )) --unit order \
        --count-sql "SELECT count(*) FROM orders WHERE created_at BETWEEN %s AND %s" --database-url "$DATABASE_URL" >"$dir/cpu_split.txt" 2>&1 &
    split_pid=$!
}
cpu_split_say() { wait "$split_pid" || true; say "$1 $(cat "$dir/cpu_split.txt")"; }
cpu_split_start
# 32 connections: since orderapi holds no thread per request (2026-12-04), 16
# closed-loop connections were the limit (16 / ~14 ms), not the system
e2e --label e2e-max --threads 32; e2e_max=$ops
cpu_split_say e2e-max
say "rss under load: $(rss_all)"
half=$(( (e2e_max + 1) / 2 ))
$psql -c CHECKPOINT   # (recycled WAL segments for the latency run, as above)
cpu_split_start
e2e --label e2e-half --threads 32 --rate "$half" --timeline 2>"$dir/e2e-half-timeline.log"
cpu_split_say e2e-half
# the saga's final orders/s against the rate offered: a quarter of full speed to half over it
echo "$half $fps" >"$curve_saga"
for pct in 25 75 100 125 150; do
    rate=$(( (e2e_max * pct + 99) / 100 ))
    e2e --label "e2e-offered-$pct%" --threads 32 --rate "$rate"
    echo "$rate $fps" >>"$curve_saga"
done
sort -n -o "$curve_saga" "$curve_saga"
# the read model rebuilt from the store (every order event of the two runs), the services still running
t0=$(date +%s%N)
id_args orderquery
res=$("$root/build/orderquery/orderquery" --rebuild --database-url "$RM_DATABASE_URL" "${common[@]}" "${TLS[@]}" 2>"$dir/rebuild.log" || true)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
ev=$(echo "$res" | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
say "rebuild              events=${ev:-?} in ${ms} ms: events/s=$(awk -v e="${ev:-0}" -v m="$ms" 'BEGIN{printf "%.0f", (m > 0 ? e*1000/m : 0)}')"
for p in "${svc_pids[@]}"; do ordo_kill_wait "$p"; done
svc_pids=()
stop_es

# PostgreSQL ceiling last: its million rows would leave checkpoint work behind for the others
# (into the store's own tables, as its writer writes them: bench/pg_ceiling.sql)
tps=$(cd / && runuser -u postgres -- "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared \
      -c 4 -j 2 -T "$secs" -f "$root/bench/pg_ceiling.sql" ordo 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
ceiling=$(awk -v t="$tps" 'BEGIN{printf "%.0f", t*100}')
say "postgres-ceiling (pgbench, the store's rows, 100 a transaction, 4 clients): rows/s=$ceiling"

binds=postgres-ceiling; bound=$ceiling
[ "$echo_ordo" -lt "$ceiling" ] && binds=ordo-echo && bound=$echo_ordo
say "transport: ordo-echo@64 / bare-echo@64    = $(awk -v a="$echo_ordo" -v b="$echo_bare" 'BEGIN{printf "%.2f", a/b}') ($echo_ordo / $echo_bare calls/s)"
say "           eventstore-refused@64 / ordo-echo@64 = $(awk -v a="$es_refused" -v b="$echo_ordo" 'BEGIN{printf "%.2f", a/b}') (the store's own path before the database)"
say "           the ceiling that binds: $binds ($bound/s)"
say "ratios: group-commit@64 / $binds = $(awk -v a="$gc64" -v b="$bound" 'BEGIN{printf "%.2f", a/b}')"
[ "$binds" = postgres-ceiling ] ||
    say "        group-commit@64 / postgres-ceiling = $(awk -v a="$gc64" -v b="$ceiling" 'BEGIN{printf "%.2f", a/b}')"
say "        group-commit@64 / naive@64         = $(awk -v a="$gc64" -v b="$nv64" 'BEGIN{printf "%.2f", a/b}')"
say "        10 events per call @64 / ceiling   = $(awk -v a="$gcb" -v b="$ceiling" 'BEGIN{printf "%.2f", a/b}')"
say "        group-commit@1  / naive@1          = $(awk -v a="$gc1" -v b="$nv1" 'BEGIN{printf "%.2f", a/b}')"
# the pictures (gnuplot, installed here if missing: the suite's own need)
command -v gnuplot >/dev/null || apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null || true
if command -v gnuplot >/dev/null; then
    gnuplot -e "set terminal pngcairo size 800,480 font 'DejaVu Sans,10'; set output '${out%.txt}-createevent.png';
        set title 'CreateEvent with group commit ($security, $(nproc) cores)'; set logscale x 2; set xlabel 'clients (calls in flight)';
        set ylabel 'events/s'; set y2label 'p99 (ms)'; set ytics nomirror; set y2tics; set yrange [0:*]; set y2range [0:*];
        set key top left; set grid;
        plot '$curve_createevent' using 1:2 with linespoints lw 2 title 'events/s', '' using 1:3 axes x1y2 with linespoints lw 2 title 'p99 (ms)'" &&
    gnuplot -e "set terminal pngcairo size 800,480 font 'DejaVu Sans,10'; set output '${out%.txt}-saga.png';
        set title 'The whole saga: final orders/s against the rate offered ($security)'; set xlabel 'orders/s offered';
        set ylabel 'final orders/s'; set xrange [0:*]; set yrange [0:*]; set key top left; set grid;
        plot '$curve_saga' using 1:2 with linespoints lw 2 title 'final orders/s', x with lines dt 2 title 'offered'" &&
    say "plots: ${out%.txt}-createevent.png ${out%.txt}-saga.png"
fi
echo "results: $out"
