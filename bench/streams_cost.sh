#!/usr/bin/env bash
# What open GET /api/orders/changes streams cost order intake, in one
# sitting: bench/ab_e2e.sh with the same binaries on both sides, both secured
# as scripts/up.sh runs them (HTTPS, API keys, TLS on every hop), without
# streams and with STREAMS of them held open by bench/e2e_load through each
# run (it prints their events and delivery delay), orders as fast as they go
# (RATE 0) or at a fixed RATE.
#   usage: bench/streams_cost.sh [STREAMS=300] [ROUNDS=3] [RATE=0] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
OLD_LABEL=streams-0 NEW_LABEL=streams-$n OLD_SECURE=1 NEW_SECURE=1 NEW_LOAD="--streams $n" \
API_ARGS="--changes-max-streams $((n + 16)) --http-max-per-address $((n + 64)) --http-max-connections $((n + 1024))" \
    bash bench/ab_e2e.sh . . "${2:-3}" "${3:-0}" "${4:-10}"
