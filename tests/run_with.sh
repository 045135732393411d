#!/usr/bin/env bash
# Runs a C test against a real server started here on a free loopback port,
# and stops it afterwards (only what it started):
#   tests/run_with.sh pg   BINARY    BINARY gets ORDO_TEST_DATABASE_URL (PostgreSQL)
#   tests/run_with.sh nats BINARY    BINARY gets ORDO_TEST_NATS_URL (nats-server with JetStream)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../scripts/lib.sh"
[ $# -eq 2 ] || { sed -n '2,6p' "$0"; exit 2; }
server=$1 binary=$2
dir=$(mktemp -d /tmp/ordo-unit.XXXXXX)
trap 'ordo_cleanup_dir "$dir"' EXIT
case "$server" in
    pg) ordo_pg_start "$dir/pg" off || exit 1; ORDO_TEST_DATABASE_URL=$DATABASE_URL "$binary" ;;
    nats) ordo_nats_start "$dir" || exit 1; ORDO_TEST_NATS_URL=$NATS_URL "$binary" ;;
    *) echo "run_with.sh: no server named $server" >&2; exit 2 ;;
esac
