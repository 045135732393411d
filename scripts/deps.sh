#!/usr/bin/env bash
# Installs the Debian 12 packages Ordo builds, runs and tests with. Idempotent.
set -euo pipefail
# libgrpc++-dev: Debian's gRPC CMake config (from libgrpc-dev) names
# libgrpc++.so.1.51.1 among its imported targets and find_package(gRPC) fails
# without it, although Ordo links only the C core; --no-install-recommends
# would otherwise leave it out on a fresh machine.
PACKAGES=(
  build-essential cmake pkg-config
  libgrpc-dev libgrpc++-dev protobuf-compiler protobuf-c-compiler libprotobuf-c-dev
  libnats-dev libssl-dev nats-server postgresql libpq-dev libjansson-dev libmicrohttpd-dev libgnutls28-dev
  libcmocka-dev uuid-dev curl openssl
  python3 python3-grpcio python3-protobuf protobuf-compiler-grpc python3-psycopg2 python3-jsonschema
  chromium chromium-driver python3-selenium fonts-dejavu-core
  prometheus
)
# prometheus (promtool and a server the tests start on loopback): Debian's
# package would start its own server on every address at :9090 where
# services start on install; it is installed apart, kept from starting
# (policy-rc.d for that one install) and left disabled.
install_quietly() {   # install_quietly PACKAGE...: installed, none of their services started
    local own=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || { [ -z "$own" ] || rm -f /usr/sbin/policy-rc.d; return 1; }
    [ -z "$own" ] || rm -f /usr/sbin/policy-rc.d
    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
}
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the OpenAPI validator the tests run (tests/openapi, pinned by its
# package-lock.json): Debian's nodejs and npm, unless the machine has an npm
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    quiet=() others=()
    for p in "${missing[@]}"; do [ "$p" = prometheus ] && quiet+=("$p") || others+=("$p"); done
    [ ${#others[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${others[@]}" >/dev/null
    [ ${#quiet[@]} -eq 0 ] || install_quietly "${quiet[@]}"
fi
