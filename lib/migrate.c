#include "ordo/migrate.h"

#include <stdlib.h>
#include <string.h>

#include "ordo/buf.h"
#include "ordo/log.h"

typedef struct migrate_arg {
    const ordo_migration_t *m;
    int applied;
} migrate_arg_t;

static ordo_status apply_one(ordo_pg_tx_t *tx, void *arg, ordo_error_t *err)
{
    migrate_arg_t *a = arg;
    const char *params[1] = {a->m->name};
    PGresult *res;
    ordo_status st;

    /* The row both records and locks the migration: a concurrent migrator
     * waits here, then sees it applied. */
    st = ordo_pg_tx_query(tx, NULL, "INSERT INTO schema_migrations (name) VALUES ($1) "
                                    "ON CONFLICT (name) DO NOTHING RETURNING name", 1, params, &res, err);
    if (st != ORDO_OK)
        return st == ORDO_CONFLICT ? ORDO_RETRY : st;
    a->applied = PQntuples(res);
    PQclear(res);
    return a->applied ? ordo_pg_tx_exec(tx, a->m->sql, err) : ORDO_OK;
}

/* A migration for PostgreSQL alone ("NNN_name.pg.sql": a guard CockroachDB cannot run). */
static bool postgres_only(const ordo_migration_t *m)
{
    size_t n = strlen(m->name);
    return n > 7 && strcmp(m->name + n - 7, ".pg.sql") == 0;
}

/* Whether the server is CockroachDB (which skips .pg.sql migrations). */
static bool cockroach(ordo_pg_t *pg)
{
    PGresult *res;
    bool yes = false;
    if (ordo_pg_query_idempotent(pg, "SELECT version()", 0, NULL, &res, NULL) == ORDO_OK) {
        yes = strstr(PQgetvalue(res, 0, 0), "CockroachDB") != NULL;
        PQclear(res);
    }
    return yes;
}

/* Whether every migration this server runs is recorded: then nothing needs
 * DDL rights, and a service connected as a role without them (docs/security.md)
 * starts as well. Any error (no table yet) means no. */
static bool up_to_date(ordo_pg_t *pg, bool crdb)
{
    ordo_buf_t names = ORDO_BUF_INIT;
    const char *params[1];
    PGresult *res;
    size_t want = 0;
    bool yes = false;

    ordo_buf_pg_array_begin(&names);
    for (size_t i = 0; i < ordo_migrations_count; i++)
        if (!(crdb && postgres_only(&ordo_migrations[i]))) {
            ordo_buf_pg_array_text(&names, ordo_migrations[i].name);
            want++;
        }
    ordo_buf_pg_array_end(&names);
    params[0] = ordo_buf_str(&names);
    if (ordo_pg_query(pg, "SELECT count(*) FROM schema_migrations WHERE name = ANY($1::text[])", 1, params, &res,
                      NULL) == ORDO_OK) {
        yes = strtoull(PQgetvalue(res, 0, 0), NULL, 10) == want;
        PQclear(res);
    }
    ordo_buf_free(&names);
    return yes;
}

ordo_status ordo_migrate(ordo_pg_t *pg, ordo_error_t *err)
{
    ordo_status st;
    ordo_pg_transaction_t tx = {.begin_sql = "BEGIN", .body = apply_one, .policy = {10, 20, 500}};
    bool crdb;

    if ((st = ordo_pg_ensure(pg, err)) != ORDO_OK)
        return st;
    crdb = cockroach(pg);
    if (up_to_date(pg, crdb))
        return ORDO_OK;
    st = ordo_pg_exec(pg, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                          " name TEXT NOT NULL PRIMARY KEY,"
                          " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())", err);
    /* two processes creating it at once may collide once; the table exists then */
    if (st == ORDO_CONFLICT)
        st = ORDO_OK;
    for (size_t i = 0; st == ORDO_OK && i < ordo_migrations_count; i++) {
        migrate_arg_t a = {&ordo_migrations[i], 0};
        if (crdb && postgres_only(a.m))
            continue;
        tx.arg = &a;
        st = ordo_pg_transact(pg, &tx, NULL, err);
        if (st == ORDO_OK && a.applied)
            ORDO_INFO("migration applied", "name=%s", a.m->name);
    }
    return st;
}

ordo_status ordo_migrate_url(const char *url, ordo_error_t *err)
{
    ordo_pg_t *pg;
    ordo_status st = ordo_pg_open(url, "ordo migrate", NULL, &pg, err);
    if (st == ORDO_OK)
        st = ordo_migrate(pg, err);
    ordo_pg_destroy(pg);
    return st;
}
