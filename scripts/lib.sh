# Shared shell functions: free ports, a throw-away PostgreSQL, nats-server,
# and waiting for ports. Sourced by the other scripts and by tests.
# Every process started here is recorded by PID and only those are stopped.

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

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
# FSYNC=off relaxes durability (tests only); benchmarks keep it on.
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
            -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=$fsync -c max_connections=200" \
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
