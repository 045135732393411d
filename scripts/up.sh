#!/usr/bin/env bash
# The run command: installs packages, builds, starts PostgreSQL, nats-server
# (JetStream), the event store, two orderquery instances, paymentsvc,
# restaurantsvc and orderapi locally, and sends orders down every saga path.
# Everything runs on 127.0.0.1; every gRPC connection is TLS with client
# certificates from a local CA, and every service has its own NATS user
# allowed exactly what it needs (.cluster/certs). State lives in .cluster/.
# Stop with scripts/down.sh.
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
echo "== certificates: a local CA and one identity per service (.cluster/certs, mode 0600)"
certs=$cluster/certs
ordo_secure_identities "$certs"
staff_key=$(cat "$certs/staff.key")
auth=(--cacert "$certs/ca.pem" -H "Authorization: Bearer $staff_key")
echo "== PostgreSQL (fsync on)"
ordo_pg_start "$cluster/pg" on
echo "   $DATABASE_URL"
echo "== schema (ordoctl migrate, as the owner), least-privilege roles, TLS (ordo_pg_secure in scripts/lib.sh)"
ordo_pg_secure "$cluster/pg" "$certs"
echo "   TLS (verify-full); eventstore as ordo_eventstore, orderquery as ordo_readmodel"
echo "== nats-server -js (TLS, a user per service: .cluster/certs/nats.conf)"
port=4222
(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && port=$(ordo_free_port)
ordo_nats_start "$cluster" "$port" "$certs/nats.conf"
echo "   $NATS_URL"

echo "== eventstore"
es_port=50051
(exec 3<>/dev/tcp/127.0.0.1/$es_port) 2>/dev/null && es_port=0
ordo_tls_args "$certs" eventstore
"$root/build/eventstore/eventstore" --listen 127.0.0.1:$es_port --database-url "$ES_DATABASE_URL" --nats-url "$NATS_URL" \
    --metrics-addr 127.0.0.1:0 "${TLS[@]}" >"$cluster/eventstore.out" 2>"$cluster/eventstore.log" &
echo $! >"$cluster/eventstore.pid"
for _ in $(seq 100); do grep -q '^port=' "$cluster/eventstore.out" && break; sleep 0.1; done
EVENTSTORE_ADDR=127.0.0.1:$(sed -n 's/^port=//p' "$cluster/eventstore.out")
[ "$EVENTSTORE_ADDR" != "127.0.0.1:" ] || { cat "$cluster/eventstore.log"; exit 1; }
echo "   $EVENTSTORE_ADDR (log: .cluster/eventstore.log)"
cat >"$cluster/env" <<ENV
export DATABASE_URL=$DATABASE_URL   # the superuser (administration); the services use their roles
export PGPASSFILE=$certs/pgpass
export NATS_URL=$NATS_URL
export EVENTSTORE_ADDR=$EVENTSTORE_ADDR
# gRPC is TLS: the CA, and an admin identity (ordoctl reads ORDO_CA, ORDO_CERT, ORDO_KEY)
export ORDO_CA=$certs/ca.pem
export ORDO_ADMIN_CERT=$certs/admin.pem
export ORDO_ADMIN_KEY=$certs/admin.key
export ORDO_CERT=\$ORDO_ADMIN_CERT
export ORDO_KEY=\$ORDO_ADMIN_KEY
# NATS (TLS): a user that may only read the stream and the consumers (ordoctl bus-dump, consumers)
export NATS_USER=reader
export NATS_PASSWORD_FILE=$certs/nats-reader.pass
export NATS_CA=$certs/ca.pem
ENV
chmod 600 "$cluster/env"
export EVENTSTORE_ADDR NATS_URL

# start NAME BINARY ARGS...: runs one daemon in the background with its
# /metrics on a free loopback port, and records its PID.
start() {   # (with the TLS options of the identity named by the binary's folder)
    local name=$1 binary=$2; shift 2
    ordo_tls_args "$certs" "${binary%%/*}"
    "$root/build/$binary" "$@" --metrics-addr 127.0.0.1:0 "${TLS[@]}" >"$cluster/$name.out" 2>"$cluster/$name.log" &
    echo $! >"$cluster/$name.pid"
}
# wait_line NAME KEY: the value of the KEY=value line the daemon prints when it serves
wait_line() {
    local name=$1 key=$2
    for _ in $(seq 100); do grep -q "^$key=" "$cluster/$name.out" 2>/dev/null && break; sleep 0.1; done
    sed -n "s/^$key=//p" "$cluster/$name.out"
}
wait_port_line() { wait_line "$1" port; }
echo "== orderquery x2 (one durable consumer shared as a queue group)"
start orderquery-1 orderquery/orderquery --listen 127.0.0.1:0 --database-url "$RM_DATABASE_URL"
start orderquery-2 orderquery/orderquery --listen 127.0.0.1:0 --database-url "$RM_DATABASE_URL"
oq1=$(wait_port_line orderquery-1); oq2=$(wait_port_line orderquery-2)
[ -n "$oq1" ] && [ -n "$oq2" ] || { cat "$cluster"/orderquery-*.log; exit 1; }
ORDERQUERY_ADDR="ipv4:127.0.0.1:$oq1,127.0.0.1:$oq2"
echo "   $ORDERQUERY_ADDR"
echo "== paymentsvc (limit 500 per order), restaurantsvc (SOLD-OUT items are rejected)"
start paymentsvc paymentsvc/paymentsvc --limit 500
start restaurantsvc restaurantsvc/restaurantsvc --unavailable SOLD-OUT
echo "== orderapi (HTTPS, API keys)"
http_port=8080
(exec 3<>/dev/tcp/127.0.0.1/$http_port) 2>/dev/null && http_port=0
start orderapi orderapi/orderapi --http-addr 127.0.0.1:$http_port --orderquery-addr "$ORDERQUERY_ADDR" \
    --api-keys-file "$certs/api-keys" --https-cert "$certs/orderapi.pem" --https-key "$certs/orderapi.key"
API=https://127.0.0.1:$(wait_port_line orderapi)
echo "   $API"
echo "== /metrics of every daemon (Prometheus text format; .cluster/prometheus.yml scrapes them all)"
scrape=""
for name in eventstore orderquery-1 orderquery-2 paymentsvc restaurantsvc orderapi; do
    mport=$(wait_line "$name" metrics_port)
    [ -n "$mport" ] || { cat "$cluster/$name.log"; exit 1; }
    var=ORDO_METRICS_$(echo "${name//-/_}" | tr '[:lower:]' '[:upper:]')
    echo "export $var=127.0.0.1:$mport" >>"$cluster/env"
    scrape+="  - job_name: $name"$'\n'"    static_configs: [{targets: ['127.0.0.1:$mport']}]"$'\n'
    printf '   %-14s http://127.0.0.1:%s/metrics\n' "$name" "$mport"
done
printf 'global: {scrape_interval: 15s}\nrule_files: [%s]\nscrape_configs:\n%s' \
    "'$root/scripts/prometheus/ordo-rules.yml'" "$scrape" >"$cluster/prometheus.yml"
cat >>"$cluster/env" <<ENV
export ORDERQUERY_ADDR=$ORDERQUERY_ADDR
export API=$API
# orderapi's API keys (Authorization: Bearer ...): staff, and customer c-1's
export ORDO_STAFF_KEY=$staff_key
export ORDO_CUSTOMER_KEY=$(cat "$certs/customer.key")
export ORDO_CUSTOMER_ID=c-1
ENV

echo
echo "== demo: orders through every saga path"
order() {   # order LABEL CUSTOMER ITEM_CODE PRICE
    local body
    body=$(printf '{"customer_id":"%s","restaurant_id":"r-1","order_items":[{"code":"%s","name":"%s","unit_price":%s,"quantity":2}]}' "$2" "$3" "$1" "$4")
    curl -s -X POST "$API/api/orders" "${auth[@]}" -H 'Content-Type: application/json' -H "Idempotency-Key: demo-$1" -d "$body" |
        sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p'
}
declare -A ids
ids[approved]=$(order approved c-1 PIZZA 12.5)
ids[payment-failed]=$(order payment-failed c-2 CAVIAR 400)
ids[refunded]=$(order refunded c-3 SOLD-OUT 9.99)
echo "-- submitted 3 orders (POST /api/orders); waiting for the saga to finish"
for label in approved payment-failed refunded; do
    id=${ids[$label]}
    for _ in $(seq 100); do
        status=$(curl -s "${auth[@]}" "$API/api/orders/$id" | sed -n 's/.*"status":"\([^"]*\)".*/\1/p')
        case "$status" in Approved|PaymentFailed|Refunded) break ;; esac
        sleep 0.1
    done
    printf '   %-15s order %s -> %s\n' "$label" "$id" "${status:-?}"
done
echo "-- one order as the read model has it:"
curl -s "${auth[@]}" "$API/api/orders/${ids[approved]}"; echo
echo "-- its events in the store (ordoctl over TLS as admin):"
ORDO_CA=$certs/ca.pem ORDO_CERT=$certs/admin.pem ORDO_KEY=$certs/admin.key \
    "$root/build/tools/ordoctl" get --aggregate-id "${ids[refunded]}" | sed 's/"event_data".*"version"/... "version"/'
echo "-- bad input gets a clear error:"
curl -s -X POST "$API/api/orders" "${auth[@]}" -H 'Content-Type: application/json' -d '{"customer_id":"c-1","order_items":[]}'; echo
echo "-- and no key, no order:"
curl -s --cacert "$certs/ca.pem" "$API/api/orders?limit=1"; echo
echo
echo "-- the web console: $API/console (its CA: .cluster/certs/ca.pem; the staff key: \$ORDO_STAFF_KEY in .cluster/env)"
echo "-- live changes as Server-Sent Events: curl -sN --cacert .cluster/certs/ca.pem -H \"Authorization: Bearer \$ORDO_STAFF_KEY\" $API/api/orders/changes"
echo
echo "Ordo is running: API $API  (source .cluster/env for the addresses; logs in .cluster/)"
echo "Stop everything with: bash scripts/down.sh"
