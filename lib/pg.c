#include "ordo/pg.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ordo/log.h"

ordo_status ordo_pg_open(ordo_pg_t *pg, const char *url, const char *name, const char *setup_sql,
                         ordo_error_t *err)
{
    pg->conn = NULL;
    pg->url = url;
    pg->name = name;
    pg->n_prepared = 0;
    pg->pending_begin = NULL;
    pg->setup_sql = setup_sql;
    return ordo_pg_ensure(pg, err);
}

void ordo_pg_close(ordo_pg_t *pg)
{
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->n_prepared = 0;
    pg->pending_begin = NULL;
}

ordo_status ordo_pg_ensure(ordo_pg_t *pg, ordo_error_t *err)
{
    if (pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK)
        return ORDO_OK;
    ordo_pg_close(pg);
    {
        /* the URL may name its own application_name; ours is the fallback */
        const char *keys[] = {"dbname", "fallback_application_name", NULL};
        const char *values[] = {pg->url, pg->name != NULL ? pg->name : ordo_log_service(), NULL};
        pg->conn = PQconnectdbParams(keys, values, 1);
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        ordo_error_set(err, ORDO_UNAVAILABLE, "database unreachable: %s", PQerrorMessage(pg->conn));
        /* libpq messages end in a newline: keep log lines whole */
        if (err != NULL)
            err->msg[strcspn(err->msg, "\n")] = '\0';
        ordo_pg_close(pg);
        return ORDO_UNAVAILABLE;
    }
    if (pg->setup_sql != NULL) {
        PGresult *res = PQexec(pg->conn, pg->setup_sql);
        ordo_status st = ordo_pg_check(pg->conn, res, err);
        PQclear(res);
        if (st != ORDO_OK) {
            ordo_pg_close(pg);
            return st;
        }
    }
    return ORDO_OK;
}

static ordo_status status_of_sqlstate(const char *state)
{
    if (state == NULL)
        return ORDO_INTERNAL;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return ORDO_RETRY;
    if (strcmp(state, "23505") == 0)
        return ORDO_CONFLICT;
    if (strcmp(state, "57014") == 0)
        return ORDO_TIMEOUT;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 || strncmp(state, "53", 2) == 0)
        return ORDO_UNAVAILABLE;
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
        return ORDO_INVALID;
    return ORDO_INTERNAL;
}

ordo_status ordo_pg_check(PGconn *conn, const PGresult *res, ordo_error_t *err)
{
    ExecStatusType rs = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *state, *text;
    ordo_status st;

    if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK || rs == PGRES_EMPTY_QUERY)
        return ORDO_OK;
    if (PQstatus(conn) != CONNECTION_OK)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    text = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    st = status_of_sqlstate(state);
    return ordo_error_set(err, st, "database error %s: %s", state ? state : "?",
                          text ? text : PQerrorMessage(conn));
}

/* A transaction's BEGIN and its first statement in one round trip (libpq
 * pipeline mode). Returns the statement's result, or the BEGIN's when that
 * failed; NULL (and the connection closed) when the connection broke. */
static PGresult *begin_and_run(ordo_pg_t *pg, const char *begin, const char *name, const char *sql, int n,
                               const char *const *values)
{
    PGconn *c = pg->conn;
    PGresult *results[2] = {NULL, NULL};
    int got = 0;
    bool synced = false;

    if (PQenterPipelineMode(c) != 1) {   /* not idle: no pipeline, two round trips */
        PGresult *r = PQexec(c, begin);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            return r;
        PQclear(r);
        return name != NULL ? PQexecPrepared(c, name, n, values, NULL, NULL, 0)
                            : PQexecParams(c, sql, n, NULL, values, NULL, NULL, 0);
    }
    if (PQsendQueryParams(c, begin, 0, NULL, NULL, NULL, NULL, 0) == 1 &&
        (name != NULL ? PQsendQueryPrepared(c, name, n, values, NULL, NULL, 0)
                      : PQsendQueryParams(c, sql, n, NULL, values, NULL, NULL, 0)) == 1 &&
        PQpipelineSync(c) == 1) {
        /* BEGIN's result, NULL, the statement's, NULL, then the sync point */
        for (int i = 0; i < 8 && !synced && PQstatus(c) == CONNECTION_OK; i++) {
            PGresult *r = PQgetResult(c);
            if (r == NULL)
                continue;
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC)
                synced = true;
            else if (got < 2)
                results[got++] = r;
            else
                PQclear(r);
            if (synced)
                PQclear(r);
        }
    }
    if (!synced || PQexitPipelineMode(c) != 1) {
        PQclear(results[0]);
        PQclear(results[1]);
        ordo_pg_close(pg);          /* the next call reconnects */
        return NULL;
    }
    if (results[0] == NULL || PQresultStatus(results[0]) != PGRES_COMMAND_OK) {
        PQclear(results[1]);
        return results[0];
    }
    PQclear(results[0]);
    return results[1];
}

/* Runs one statement (prepared when @p name is set), with the pending BEGIN
 * of a transaction if there is one. */
static PGresult *run(ordo_pg_t *pg, const char *name, const char *sql, int n, const char *const *values)
{
    const char *begin = pg->pending_begin;

    pg->pending_begin = NULL;
    if (begin != NULL)
        return begin_and_run(pg, begin, name, sql, n, values);
    return name != NULL ? PQexecPrepared(pg->conn, name, n, values, NULL, NULL, 0)
                        : PQexecParams(pg->conn, sql, n, NULL, values, NULL, NULL, 0);
}

ordo_status ordo_pg_query(ordo_pg_t *pg, const char *sql, int n, const char *const *values,
                          PGresult **out, ordo_error_t *err)
{
    PGresult *res;
    ordo_status st;

    if (out != NULL)
        *out = NULL;
    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    res = run(pg, NULL, sql, n, values);
    st = ordo_pg_check(pg->conn, res, err);
    if (st == ORDO_OK && out != NULL)
        *out = res;
    else
        PQclear(res);
    return st;
}

static ordo_status prepare(ordo_pg_t *pg, const char *name, const char *sql, int n, ordo_error_t *err)
{
    PGresult *res;
    ordo_status st;

    for (int i = 0; i < pg->n_prepared; i++)
        if (pg->prepared[i] == name)
            return ORDO_OK;
    if (pg->n_prepared == ORDO_PG_MAX_PREPARED)
        return ordo_error_set(err, ORDO_INTERNAL, "too many prepared statements");
    res = PQprepare(pg->conn, name, sql, n, NULL);
    st = ordo_pg_check(pg->conn, res, err);
    PQclear(res);
    if (st == ORDO_OK)
        pg->prepared[pg->n_prepared++] = name;
    return st;
}

ordo_status ordo_pg_query_prepared(ordo_pg_t *pg, const char *name, const char *sql, int n,
                                   const char *const *values, PGresult **out, ordo_error_t *err)
{
    PGresult *res;
    ordo_status st;

    if (out != NULL)
        *out = NULL;
    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    if ((st = prepare(pg, name, sql, n, err)) != ORDO_OK)
        return st;
    res = run(pg, name, sql, n, values);
    st = ordo_pg_check(pg->conn, res, err);
    if (st == ORDO_OK && out != NULL)
        *out = res;
    else
        PQclear(res);
    return st;
}

ordo_status ordo_pg_exec(ordo_pg_t *pg, const char *sql, ordo_error_t *err)
{
    PGresult *res;
    ordo_status st;

    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    if (pg->pending_begin != NULL) {    /* a simple-protocol string cannot join a pipeline */
        const char *begin = pg->pending_begin;
        pg->pending_begin = NULL;
        res = PQexec(pg->conn, begin);
        st = ordo_pg_check(pg->conn, res, err);
        PQclear(res);
        if (st != ORDO_OK)
            return st;
    }
    res = PQexec(pg->conn, sql);
    st = ordo_pg_check(pg->conn, res, err);
    PQclear(res);
    return st;
}

/* After a COMMIT whose answer was lost: did it commit? */
static ordo_status resolve_commit(ordo_pg_t *pg, const ordo_pg_tx_t *tx, ordo_error_t *err)
{
    if (tx->resolve == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "commit outcome unknown: connection lost");
    for (int attempt = 1; attempt <= tx->policy.max_attempts; attempt++) {
        if (ordo_pg_ensure(pg, err) == ORDO_OK) {
            ordo_status st = tx->resolve(pg, tx->arg, err);
            if (st == ORDO_OK || st == ORDO_RETRY)
                return st;
        }
        ordo_backoff_sleep(&tx->policy, attempt);
    }
    return ordo_error_set(err, ORDO_UNAVAILABLE, "commit outcome unknown and the database stays unreachable");
}

ordo_status ordo_pg_transact(ordo_pg_t *pg, const ordo_pg_tx_t *tx, int *retries, ordo_error_t *err)
{
    ordo_status st = ORDO_UNAVAILABLE;
    ordo_error_t last;

    ordo_error_set(&last, ORDO_UNAVAILABLE, "no attempt made");
    for (int attempt = 1; attempt <= tx->policy.max_attempts; attempt++) {
        if (attempt > 1) {
            if (retries != NULL)
                (*retries)++;
            ordo_backoff_sleep(&tx->policy, attempt - 1);
        }
        st = ordo_pg_ensure(pg, &last);
        /* BEGIN goes out with the body's first statement (one round trip) */
        bool began = false;
        if (st == ORDO_OK) {
            pg->pending_begin = tx->begin_sql;
            st = tx->body(pg, tx->arg, &last);
            began = pg->pending_begin == NULL;
            pg->pending_begin = NULL;
            if (st == ORDO_OK && !began)
                return ORDO_OK;             /* the body ran no statement: nothing to commit */
        }
        if (st == ORDO_OK) {
            st = ordo_pg_exec(pg, "COMMIT", &last);
            if (st == ORDO_OK)
                return ORDO_OK;
            if (st == ORDO_UNAVAILABLE) {
                st = resolve_commit(pg, tx, &last);
                if (st == ORDO_OK)
                    return ORDO_OK;
            }
        } else if (began && pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK) {
            PGresult *res = PQexec(pg->conn, "ROLLBACK");
            PQclear(res);
        }
        if (st != ORDO_RETRY && st != ORDO_UNAVAILABLE)
            break;
        ORDO_DEBUG("transaction retry", "attempt=%d status=%s err=\"%s\"", attempt, ordo_status_text(st), last.msg);
    }
    if (st == ORDO_RETRY)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "gave up after %d attempts: %s",
                              tx->policy.max_attempts, last.msg);
    if (err != NULL)
        *err = last;
    return st;
}
