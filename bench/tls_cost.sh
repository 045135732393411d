#!/usr/bin/env bash
# What gRPC TLS costs the event store, in one sitting: bench/ab.sh with the
# same eventstore binary on both sides, plaintext against TLS with a client
# certificate (scripts/certs.sh), CreateEvent with 64 clients.
#   usage: bench/tls_cost.sh [ROUNDS=3] [SECONDS=8]
set -euo pipefail
cd "$(dirname "$0")/.."
certs=$(mktemp -d /tmp/ordo-tlscost.XXXXXX)
trap 'rm -rf "$certs"' EXIT
bash scripts/certs.sh "$certs" eventstore orderapi
OLD_LABEL=plain NEW_LABEL=tls \
NEW_ARGS="--tls-ca $certs/ca.pem --tls-cert $certs/eventstore.pem --tls-key $certs/eventstore.key" \
NEW_LOAD="--ca $certs/ca.pem --cert $certs/orderapi.pem --key $certs/orderapi.key" \
    bash bench/ab.sh build/eventstore/eventstore build/eventstore/eventstore "${1:-3}" "${2:-8}"
