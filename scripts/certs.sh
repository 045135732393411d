#!/usr/bin/env bash
# Makes a local certificate authority and certificates signed by it, for
# running Ordo with TLS on one machine (scripts/up.sh, the tests).
#   scripts/certs.sh DIR NAME...
# DIR/ca.pem and DIR/ca.key: the CA (made once, kept if present). For each
# NAME: DIR/NAME.pem and DIR/NAME.key, a P-256 key and a certificate with
# common name NAME (the identity a server maps to a role), valid for
# 127.0.0.1, ::1 and localhost, for both server and client use, 825 days.
# Every file is created mode 0600 in a 0700 directory.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
dir=$1
shift
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
if [ ! -f "$dir/ca.pem" ]; then
    key "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -out "$dir/ca.pem" -days 825 -subj "/O=Ordo/CN=Ordo local CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
ext=$(mktemp)
trap 'rm -f "$ext" "$dir"/*.csr' EXIT
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" >"$ext"
for name in "$@"; do
    key "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -out "$dir/$name.csr" -subj "/O=Ordo/CN=$name" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$dir/$name.pem" -days 825 -extfile "$ext" 2>/dev/null
done
