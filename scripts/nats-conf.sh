#!/usr/bin/env bash
# Writes DIR/nats.conf: a NATS user per Ordo service, each allowed exactly
# what it needs, and DIR/nats-USER.pass with each password (random, mode
# 0600; the configuration holds them too and is 0600). Only the event
# store's relay may publish on events.>; a consumer may use only its own
# durables' JetStream API and acknowledgements, and park a message only on
# parked.<its durable>; "reader" may read the stream and the consumers'
# state (ordoctl bus-dump, consumers). Every user
# gets its replies under its own inbox prefix (_INBOX_USER). When DIR holds
# nats.pem and nats.key (scripts/certs.sh DIR nats), clients must use TLS
# with the CA DIR/ca.pem.
#   scripts/nats-conf.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { sed -n '2,9p' "$0"; exit 2; }
dir=$1
mkdir -p "$dir"
umask 077
password() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }
# consumer_permissions DURABLE...: what a service with these durables may publish
consumer_publish() {
    local d out='"$JS.API.STREAM.INFO.EVENTS", "$JS.API.STREAM.INFO.PARKED"'
    for d in "$@"; do
        out+=", \"parked.$d\""
        out+=", \"\$JS.API.CONSUMER.CREATE.EVENTS.$d\", \"\$JS.API.CONSUMER.CREATE.EVENTS.$d.>\""
        out+=", \"\$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.$d\", \"\$JS.API.CONSUMER.INFO.EVENTS.$d\""
        out+=", \"\$JS.API.CONSUMER.MSG.NEXT.EVENTS.$d\", \"\$JS.ACK.EVENTS.$d.>\""
    done
    echo "$out"
}
user() {   # user NAME PUBLISH-LIST
    local pass
    pass=$(password)
    printf '%s\n' "$pass" >"$dir/nats-$1.pass"
    printf '    { user: "%s", password: "%s", permissions: { publish: { allow: [%s] }, subscribe: { allow: ["_INBOX_%s.>"] } } }\n' \
        "$1" "$pass" "$2" "$1"
}
{
    if [ -f "$dir/nats.pem" ]; then
        printf 'tls {\n  cert_file: "%s"\n  key_file: "%s"\n  ca_file: "%s"\n  timeout: 2\n}\n' \
            "$dir/nats.pem" "$dir/nats.key" "$dir/ca.pem"
    fi
    echo "authorization {"
    echo "  users = ["
    user eventstore '"events.>", "$JS.API.>"'
    user paymentsvc "$(consumer_publish paymentsvc-order-created paymentsvc-order-rejected)"
    user restaurantsvc "$(consumer_publish restaurantsvc)"
    user orderquery "$(consumer_publish orderquery)"
    user reader '"$JS.API.STREAM.INFO.EVENTS", "$JS.API.STREAM.INFO.PARKED", "$JS.API.STREAM.MSG.GET.EVENTS", "$JS.API.CONSUMER.LIST.EVENTS", "$JS.API.CONSUMER.NAMES.EVENTS", "$JS.API.CONSUMER.INFO.EVENTS.*"'
    echo "  ]"
    echo "}"
} >"$dir/nats.conf"
