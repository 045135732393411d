#!/usr/bin/env bash
# Runs unit_consumer (lib/consumer.c's decisions) against a real nats-server
# started here on a free loopback port, and stops it afterwards.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../scripts/lib.sh"
BUILD=${ORDO_BUILD:-$here/../build}
dir=$(mktemp -d /tmp/ordo-consumer.XXXXXX)
trap 'ordo_cleanup_dir "$dir"' EXIT
ordo_nats_start "$dir" || exit 1
ORDO_TEST_NATS_URL=$NATS_URL "$BUILD/tests/unit_consumer"
