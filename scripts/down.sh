#!/usr/bin/env bash
# Stops what scripts/up.sh started (by the PIDs it recorded), nothing else.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cluster=$PWD/.cluster
[ -d "$cluster" ] || { echo "nothing to stop"; exit 0; }
for f in "$cluster"/*.pid; do
    [ -f "$f" ] || continue
    case "$(basename "$f")" in nats.pid) continue ;; esac
    ordo_kill_wait "$(cat "$f")" && rm -f "$f"
done
ordo_nats_stop "$cluster"
ordo_pg_stop "$cluster/pg"
echo "stopped"
