# Shared shell functions: free ports, a throw-away PostgreSQL, nats-server,
# and waiting for ports. Sourced by the other scripts and by tests.
# Every process started here is recorded by PID and only those are stopped.

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
ORDO_ROOT=${ORDO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

ordo_free_port() {
    /usr/bin/python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# ordo_wait_port PORT [SECONDS]: until something listens on 127.0.0.1:PORT.
ordo_wait_port() {
    local port=$1 limit=${2:-20} i
    for ((i = 0; i < limit * 10; i++)); do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$port after ${limit}s" >&2
    return 1
}

# ordo_pg_start DIR [FSYNC]: initdb + start on a free port; sets PG_PORT and DATABASE_URL.
# FSYNC=off relaxes durability (tests only); benchmarks keep it on. WAL: room
# for 4 GB between checkpoints (the default 1 GB forced one every ~50 s of a
# full-speed write load, and the full-page images after each slowed every
# commit for a while).
ordo_pg_start() {
    local dir=$1 fsync=${2:-on} try
    mkdir -p "$dir"
    chmod o+x "$(dirname "$dir")"   # postgres must be able to enter it
    chown postgres: "$dir"
    chmod 700 "$dir"
    (cd / && runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 >"$dir/initdb.log" 2>&1) || { cat "$dir/initdb.log" >&2; return 1; }
    for try in 1 2 3 4 5; do
        PG_PORT=$(ordo_free_port)
        if (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
            -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=$fsync -c max_connections=200 -c max_wal_size=4GB" \
            start >/dev/null); then
            DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/ordo"
            runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt \
                -c "CREATE DATABASE ordo" >/dev/null || return 1
            export PG_PORT DATABASE_URL
            return 0
        fi
        grep -q "already in use" "$dir/log" 2>/dev/null || { tail -n 20 "$dir/log" >&2; return 1; }
    done
    return 1
}

# ordo_cleanup_dir DIR [PID...]: stops PIDs (those started here), then DIR's
# nats-server and PostgreSQL, and removes DIR. For a test's or a benchmark's trap.
ordo_cleanup_dir() {
    local dir=$1 p
    shift
    for p in "$@"; do [ -n "$p" ] && ordo_kill_wait "$p"; done
    ordo_nats_stop "$dir"
    ordo_pg_stop "$dir/pg"
    rm -rf "$dir"
}

ordo_pg_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1) || true
}

# ordo_nats_start DIR [PORT] [CONF]: nats-server with JetStream, storage under DIR (and the
# configuration file CONF: users, permissions); sets NATS_PORT, NATS_URL, NATS_PID.
ordo_nats_start() {
    local dir=$1 conf=()
    NATS_PORT=${2:-$(ordo_free_port)}
    [ -n "${3:-}" ] && conf=(-c "$3")
    mkdir -p "$dir/js"
    nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$dir/js" "${conf[@]}" >>"$dir/nats.log" 2>&1 &
    NATS_PID=$!
    echo "$NATS_PID" >"$dir/nats.pid"
    NATS_URL="nats://127.0.0.1:$NATS_PORT"
    export NATS_PORT NATS_URL NATS_PID
    ordo_wait_port "$NATS_PORT" 20
}

ordo_nats_stop() {
    local dir=$1 pid
    pid=$(cat "$dir/nats.pid" 2>/dev/null) || return 0
    ordo_kill_wait "$pid"
    rm -f "$dir/nats.pid"
}

# ordo_kill_wait PID [SIGNAL]: signal one process we started and wait until it is gone (10 s, then KILL).
ordo_kill_wait() {
    local pid=$1 sig=${2:-TERM} i
    kill -s "$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# The secured cluster, as scripts/up.sh runs it (and bench/run.sh measures it).
# ordo_secure_identities CERTS: a local CA and a certificate for every Ordo
# identity, the NATS users (CERTS/nats.conf) and orderapi's API keys (staff,
# and customer c-1), all mode 0600 under CERTS.
ordo_secure_identities() {
    bash "$ORDO_ROOT/scripts/certs.sh" "$1" eventstore orderquery orderapi paymentsvc restaurantsvc admin nats postgres
    bash "$ORDO_ROOT/scripts/nats-conf.sh" "$1"
    bash "$ORDO_ROOT/scripts/api-keys.sh" "$1" c-1
}

# ordo_pg_secure PGDIR CERTS (after ordo_pg_start PGDIR): the schema, migrated
# as the owner; the services' least-privilege roles (scripts/pg-roles.sh);
# the server on TLS with CERTS/postgres.pem. The roles log in only over TLS
# (hostssl) with scram-sha-256 passwords from PGPASSFILE (never a command
# line) and check the server (verify-full); the superuser keeps local trust
# for administration. Sets and exports PGPASSFILE, ES_DATABASE_URL (the event
# store's role) and RM_DATABASE_URL (the read model's).
ordo_pg_secure() {
    local pg=$1 certs=$2 f tls_db
    "$ORDO_ROOT/build/tools/ordoctl" migrate --database-url "$DATABASE_URL" >/dev/null
    bash "$ORDO_ROOT/scripts/pg-roles.sh" "$DATABASE_URL" "$certs"
    for f in crt:pem key:key; do
        install -o postgres -g postgres -m 600 "$certs/postgres.${f#*:}" "$pg/server.${f%%:*}"
    done
    sed -i "1i hostssl all ordo_eventstore,ordo_readmodel 127.0.0.1/32 scram-sha-256" "$pg/data/pg_hba.conf"
    runuser -u postgres -- psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt \
        -c "ALTER SYSTEM SET ssl = on" -c "ALTER SYSTEM SET ssl_cert_file = '$pg/server.crt'" \
        -c "ALTER SYSTEM SET ssl_key_file = '$pg/server.key'" -c "SELECT pg_reload_conf()" >/dev/null
    PGPASSFILE=$certs/pgpass
    tls_db="sslmode=verify-full&sslrootcert=$certs/ca.pem"
    ES_DATABASE_URL="postgresql://ordo_eventstore@127.0.0.1:$PG_PORT/ordo?$tls_db"
    RM_DATABASE_URL="postgresql://ordo_readmodel@127.0.0.1:$PG_PORT/ordo?$tls_db"
    export PGPASSFILE ES_DATABASE_URL RM_DATABASE_URL
}

# ordo_tls_args CERTS NAME: the --tls-* options of the identity NAME, and its
# --nats-* options when CERTS/nats.conf has a user NAME, in the array TLS.
ordo_tls_args() {
    local certs=$1 name=$2
    TLS=(--tls-ca "$certs/ca.pem" --tls-cert "$certs/$name.pem" --tls-key "$certs/$name.key")
    [ -f "$certs/nats-$name.pass" ] &&
        TLS+=(--nats-user "$name" --nats-password-file "$certs/nats-$name.pass" --nats-ca "$certs/ca.pem")
    return 0
}
