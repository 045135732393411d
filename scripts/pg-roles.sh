#!/usr/bin/env bash
# Creates (or updates) the least-privilege PostgreSQL roles of Ordo in the
# database of URL, which must name a role that owns Ordo's tables (the one
# that ran the migrations) and may create roles:
#   ordo_eventstore  the event store: reads and appends the log (INSERT and
#                    SELECT on events, never UPDATE, DELETE or TRUNCATE), keeps
#                    stream heads, the outbox and the relay lease
#   ordo_readmodel   orderquery: owns the read model's rows (orders,
#                    order_items); no access to the log at all
# Neither may run DDL. Each gets a random scram-sha-256 password, written
# with the others to DIR/pgpass (libpq's PGPASSFILE format, mode 0600).
#   scripts/pg-roles.sh URL DIR      (run after the migrations)
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,13p' "$0"; exit 2; }
url=$1 dir=$2
mkdir -p "$dir"
umask 077
password() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }
psql_url() { psql "$url" -v ON_ERROR_STOP=1 -qAt "$@"; }
db=$(psql_url -c "SELECT current_database()")
hostport=$(psql_url -c "SELECT coalesce(host(inet_server_addr()), 'localhost') || ':' || current_setting('port')")
: >"$dir/pgpass"
for role in ordo_eventstore ordo_readmodel; do
    pw=$(password)
    psql_url -v role="$role" -v pw="$pw" <<'SQL'
SET password_encryption = 'scram-sha-256';
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
SQL
    printf '%s:%s:%s:%s\n' "${hostport%%:*}" "${hostport##*:}" "$db" "$role:$pw" >>"$dir/pgpass"
    printf '*:*:%s:%s\n' "$db" "$role:$pw" >>"$dir/pgpass"
done
psql_url -v db="$db" <<'SQL'
GRANT CONNECT ON DATABASE :"db" TO ordo_eventstore, ordo_readmodel;
GRANT USAGE ON SCHEMA public TO ordo_eventstore, ordo_readmodel;
REVOKE ALL ON events, streams, outbox, outbox_rejected, relay_lease, redrives, orders, order_items, schema_migrations
    FROM PUBLIC, ordo_eventstore, ordo_readmodel;
GRANT SELECT ON schema_migrations TO ordo_eventstore, ordo_readmodel;
-- the log: read and append, nothing else
GRANT SELECT, INSERT ON events TO ordo_eventstore;
GRANT USAGE, SELECT ON SEQUENCE events_position_seq TO ordo_eventstore;
GRANT SELECT, INSERT, UPDATE ON streams, outbox_rejected, relay_lease TO ordo_eventstore;
GRANT SELECT, INSERT, DELETE ON outbox TO ordo_eventstore;
GRANT SELECT, INSERT, UPDATE, DELETE ON redrives TO ordo_eventstore;
-- the read model: its own rows (a rebuild empties them)
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON orders, order_items TO ordo_readmodel;
SQL
