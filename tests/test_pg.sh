#!/usr/bin/env bash
# Runs unit_pg (lib/pg.c's transactions) against a real PostgreSQL started here
# on a free loopback port, and stops it afterwards.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../scripts/lib.sh"
BUILD=${ORDO_BUILD:-$here/../build}
dir=$(mktemp -d /tmp/ordo-pg.XXXXXX)
trap 'ordo_cleanup_dir "$dir"' EXIT
ordo_pg_start "$dir/pg" off || exit 1
ORDO_TEST_DATABASE_URL=$DATABASE_URL "$BUILD/tests/unit_pg"
