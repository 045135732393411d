#include "ordo/migrate.h"

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

ordo_status ordo_migrate(ordo_pg_t *pg, ordo_error_t *err)
{
    ordo_status st;
    ordo_pg_transaction_t tx = {.begin_sql = "BEGIN", .body = apply_one, .policy = {10, 20, 500}};

    st = ordo_pg_ensure(pg, err);
    if (st == ORDO_OK)
        st = ordo_pg_exec(pg, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                              " name TEXT NOT NULL PRIMARY KEY,"
                              " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())", err);
    /* two processes creating it at once may collide once; the table exists then */
    if (st == ORDO_CONFLICT)
        st = ORDO_OK;
    for (size_t i = 0; st == ORDO_OK && i < ordo_migrations_count; i++) {
        migrate_arg_t a = {&ordo_migrations[i], 0};
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
