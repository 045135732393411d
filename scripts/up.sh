#!/usr/bin/env bash
# The run command: installs packages, builds, starts PostgreSQL, nats-server
# (JetStream) and the event store locally, and runs a short demo.
# Everything runs on 127.0.0.1; state lives in .cluster/. Stop with scripts/down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/deps.sh
bash scripts/build.sh release >/dev/null
bash scripts/down.sh >/dev/null 2>&1 || true
. scripts/lib.sh

cluster=$root/.cluster
rm -rf "$cluster"
mkdir -p "$cluster"
echo "== PostgreSQL (fsync on)"
ordo_pg_start "$cluster/pg" on
echo "   $DATABASE_URL"
echo "== nats-server -js"
port=4222
(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && port=$(ordo_free_port)
ordo_nats_start "$cluster" "$port"
echo "   $NATS_URL"

echo "== eventstore"
es_port=50051
(exec 3<>/dev/tcp/127.0.0.1/$es_port) 2>/dev/null && es_port=0
"$root/build/eventstore/eventstore" --listen 127.0.0.1:$es_port --database-url "$DATABASE_URL" --nats-url "$NATS_URL" \
    >"$cluster/eventstore.out" 2>"$cluster/eventstore.log" &
echo $! >"$cluster/eventstore.pid"
for _ in $(seq 100); do grep -q '^port=' "$cluster/eventstore.out" && break; sleep 0.1; done
EVENTSTORE_ADDR=127.0.0.1:$(sed -n 's/^port=//p' "$cluster/eventstore.out")
[ "$EVENTSTORE_ADDR" != "127.0.0.1:" ] || { cat "$cluster/eventstore.log"; exit 1; }
echo "   $EVENTSTORE_ADDR (log: .cluster/eventstore.log)"
cat >"$cluster/env" <<ENV
export DATABASE_URL=$DATABASE_URL
export NATS_URL=$NATS_URL
export EVENTSTORE_ADDR=$EVENTSTORE_ADDR
ENV
export EVENTSTORE_ADDR NATS_URL

ctl() { echo "\$ ordoctl $*" | sed "s|$root/||"; "$root/build/tools/ordoctl" "$@"; }
order=$(cat /proc/sys/kernel/random/uuid)
echo
echo "== demo: an order's life as events"
ctl append --aggregate-id "$order" --aggregate-type order --type order-created \
    --data '{"customer_id":"c-1","amount":42.5}' --expected 0 --metadata correlation_id=demo-1
ctl append --aggregate-id "$order" --aggregate-type order --type order-payment-debited \
    --data '{"amount":42.5}' --expected 1
echo "-- a stale writer (expected version 1 again) is refused:"
ctl append --aggregate-id "$order" --aggregate-type order --type order-payment-debited --data '{}' --expected 1 || true
echo "-- bad input gets a clear error:"
ctl append --aggregate-id "$order" --aggregate-type order --type oops --data '{not json' || true
echo "-- the order's stream:"
ctl get --aggregate-id "$order"
sleep 0.5
echo "-- on the bus (JetStream stream EVENTS):"
"$root/build/tools/ordoctl" bus-dump | tail -n 2
echo "-- store statistics:"
ctl stats
echo
echo "Ordo is running. Environment: source .cluster/env; client: build/tools/ordoctl --help"
echo "Stop everything with: bash scripts/down.sh"
