#!/usr/bin/env bash
# CreateEvent latency at a fixed rate on new WAL segments against recycled
# ones. Each run is a fresh cluster (PostgreSQL with fsync on, nats-server,
# the event store, plaintext): 10 s of CreateEvent at full speed with 64
# clients (bench/es_load), then, with or without a CHECKPOINT between (which
# recycles the segments the first run filled, as a database that has run a
# while has them), 10 s at RATE with --timeline. A fresh cluster creates
# each 16 MB segment as writes reach it and zero-fills it, and commits wait
# on that. Turns alternate, ROUNDS each; the timelines go to /tmp.
#   usage: bench/wal_segments.sh [ROUNDS=3] [RATE=5600]
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} rate=${2:-5600}
. scripts/lib.sh
[ -x build/bench/es_load ] || bash scripts/build.sh release >/dev/null
dir=
es=
cleanup() {
    [ -n "$es" ] && ordo_kill_wait "$es"
    es=
    [ -n "$dir" ] && { ordo_nats_stop "$dir"; ordo_pg_stop "$dir/pg"; ordo_cleanup_dir "$dir"; }
    dir=
}
trap cleanup EXIT
one() {   # one LABEL CHECKPOINT(0/1)
    dir=$(mktemp -d /tmp/ordo-wal.XXXXXX)
    ordo_pg_start "$dir/pg" on >/dev/null
    ordo_nats_start "$dir" >/dev/null
    build/eventstore/eventstore --listen 127.0.0.1:0 --database-url "$DATABASE_URL" --nats-url "$NATS_URL" \
        >"$dir/es.out" 2>"$dir/es.log" &
    es=$!
    for _ in $(seq 100); do grep -q '^port=' "$dir/es.out" && break; sleep 0.1; done
    local addr=127.0.0.1:$(sed -n 's/^port=//p' "$dir/es.out") timeline
    build/bench/es_load --addr "$addr" --label fill --seconds 10 --clients 64 | head -n 1
    [ "$2" = 1 ] && runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt -c CHECKPOINT
    timeline=$(mktemp "/tmp/wal-segments-$1.XXXXXX")
    build/bench/es_load --addr "$addr" --label "$1" --seconds 10 --clients 64 --rate "$rate" --timeline \
        2>"$timeline" | head -n 1
    echo "  (timeline: $timeline)"
    cleanup
}
for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then one new-segments 0; one recycled 1; else one recycled 1; one new-segments 0; fi
done
