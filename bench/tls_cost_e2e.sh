#!/usr/bin/env bash
# What securing the whole system costs, in one sitting: bench/ab_e2e.sh with
# the same binaries on both sides, plaintext without credentials against the
# cluster as scripts/up.sh runs it (gRPC TLS with client certificates, NATS
# TLS with a user per service, PostgreSQL roles over TLS, HTTPS with an API
# key), orders as fast as they go (RATE 0) or at a fixed RATE.
#   usage: bench/tls_cost_e2e.sh [ROUNDS=3] [RATE=0] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_LABEL=e2e-plain NEW_LABEL=e2e-secured NEW_SECURE=1 \
    bash bench/ab_e2e.sh . . "${1:-3}" "${2:-0}" "${3:-10}"
