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
  python3 python3-grpcio python3-protobuf protobuf-compiler-grpc python3-psycopg2
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
