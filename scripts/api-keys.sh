#!/usr/bin/env bash
# Makes two API keys for orderapi: one for staff (every customer's orders)
# and one for CUSTOMER (that customer's orders alone). Writes the keys to
# DIR/staff.key and DIR/customer.key, and their SHA-256 with their scopes to
# DIR/api-keys (orderapi --api-keys-file: it stores no key). Mode 0600.
# More keys: append "sha256:$(printf %s KEY | sha256sum | cut -d' ' -f1) customer:ID".
#   scripts/api-keys.sh DIR CUSTOMER
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,8p' "$0"; exit 2; }
dir=$1 customer=$2
mkdir -p "$dir"
umask 077
newkey() { printf 'ordo_%s' "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }
hash() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
staff=$(newkey)
cust=$(newkey)
printf '%s\n' "$staff" >"$dir/staff.key"
printf '%s\n' "$cust" >"$dir/customer.key"
{
    echo "# orderapi API keys: sha256:<hash of the key> staff|customer:<id>"
    echo "sha256:$(hash "$staff") staff"
    echo "sha256:$(hash "$cust") customer:$customer"
} >"$dir/api-keys"
