#!/usr/bin/env bash
# Old against new in one sitting: two event store binaries take turns on one
# cluster (PostgreSQL with fsync on, nats-server), each run CreateEvent with
# 64 clients (bench/es_load) for SECONDS, ROUNDS times, so that the host's
# slow and fast spells fall on both alike. Prints each run with the event
# store's own CPU per 1,000 events (utime + stime from /proc, less noisy than
# throughput on a shared host), and the median of each.
#   usage: bench/ab.sh OLD_EVENTSTORE NEW_EVENTSTORE [ROUNDS=4] [SECONDS=8] [es_load options...]
# OLD_ARGS / NEW_ARGS (environment): more options for that side's eventstore,
# OLD_LOAD / NEW_LOAD: for its es_load, OLD_LABEL / NEW_LABEL: its name
# (bench/tls_cost.sh runs one binary plain against TLS this way).
#   e.g.:  git worktree add /tmp/old <commit> && (cd /tmp/old && bash scripts/build.sh release)
#          bash bench/ab.sh /tmp/old/build/eventstore/eventstore build/eventstore/eventstore
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,8p' "$0"; exit 2; }
old=$(readlink -f "$1") new=$(readlink -f "$2") rounds=${3:-4} secs=${4:-8}
shift $(( $# < 4 ? $# : 4 ))
load_opts=("$@")
[ ${#load_opts[@]} -gt 0 ] || load_opts=(--clients 64)
. scripts/lib.sh
dir=$(mktemp -d /tmp/ordo-ab.XXXXXX)
es_pid=
trap 'ordo_cleanup_dir "$dir" "$es_pid"' EXIT
ordo_pg_start "$dir/pg" on >/dev/null
ordo_nats_start "$dir" >/dev/null
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
old_label=${OLD_LABEL:-old} new_label=${NEW_LABEL:-new}
read -r -a old_args <<<"${OLD_ARGS:-}"
read -r -a new_args <<<"${NEW_ARGS:-}"
read -r -a old_load <<<"${OLD_LOAD:-}"
read -r -a new_load <<<"${NEW_LOAD:-}"
run_one() {   # run_one old|new → prints the es_load line, appends events/s and CPU to $dir/SIDE{,.cpu}
    local side=$1 label bin res t0 t1 events cpu args load
    if [ "$side" = old ]; then label=$old_label bin=$old args=("${old_args[@]}") load=("${old_load[@]}")
    else label=$new_label bin=$new args=("${new_args[@]}") load=("${new_load[@]}"); fi
    "$bin" --listen 127.0.0.1:0 --database-url "$DATABASE_URL" --nats-url "$NATS_URL" "${args[@]}" \
        >"$dir/es.out" 2>>"$dir/es.log" &
    es_pid=$!
    for _ in $(seq 100); do grep -q '^port=' "$dir/es.out" && break; sleep 0.1; done
    t0=$(cpu_ticks "$es_pid")
    res=$(build/bench/es_load --addr "127.0.0.1:$(sed -n 's/^port=//p' "$dir/es.out")" --label "$label" \
          --seconds "$secs" "${load_opts[@]}" "${load[@]}" || true)
    t1=$(cpu_ticks "$es_pid")
    ordo_kill_wait "$es_pid"
    es_pid=
    events=$(echo "$res" | tail -n 1 | sed -n 's/.*"events":\([0-9]*\).*/\1/p')
    cpu=$(awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v n="${events:-0}" 'BEGIN{printf "%.1f", n ? t * 1000 / hz / n * 1000 : 0}')
    echo "$(echo "$res" | head -n 1)  eventstore_cpu_ms_per_1k=$cpu"
    echo "$res" | tail -n 1 | sed -n 's/.*"events_per_s":\([0-9]*\).*/\1/p' >>"$dir/$side"
    echo "$cpu" >>"$dir/$side.cpu"
}
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then run_one old; run_one new; else run_one new; run_one old; fi
done
median() { sort -n "$dir/$1" | awk '{v[NR]=$1} END{print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
echo "median events/s: $old_label $(median old)  $new_label $(median new);" \
     "eventstore CPU ms per 1,000 events: $old_label $(median old.cpu)  $new_label $(median new.cpu)" \
     "(${load_opts[*]}, ${secs}s x $rounds rounds each)"
