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
    pg->commit = ORDO_PG_COMMIT_NONE;
    pg->setup_sql = setup_sql;
    pg->optional_sql = NULL;
    return ordo_pg_ensure(pg, err);
}

static void run_optional(ordo_pg_t *pg)
{
    PGresult *res = PQexec(pg->conn, pg->optional_sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        ORDO_DEBUG("database refused an optional setting", "sql=\"%s\" err=\"%.200s\"", pg->optional_sql,
                   PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                                                                    : "");
    PQclear(res);
}

void ordo_pg_set_optional(ordo_pg_t *pg, const char *sql)
{
    pg->optional_sql = sql;
    if (sql != NULL && pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK)
        run_optional(pg);
}

void ordo_pg_close(ordo_pg_t *pg)
{
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->n_prepared = 0;
    pg->pending_begin = NULL;   /* (commit keeps what became of a COMMIT lost with the connection) */
}

/* The server's notices (a migration's "already exists, skipping", a
 * WARNING) go to the log as one line each, instead of raw on stderr as
 * libpq prints them by default. */
static void on_notice(void *arg, const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *text = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    (void)arg;
    if (severity != NULL && strcmp(severity, "WARNING") == 0)
        ORDO_WARN("database warning", "text=\"%s\"", text != NULL ? text : "");
    else
        ORDO_DEBUG("database notice", "severity=%s text=\"%s\"", severity != NULL ? severity : "?",
                   text != NULL ? text : "");
}

ordo_status ordo_pg_ensure(ordo_pg_t *pg, ordo_error_t *err)
{
    if (pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK)
        return ORDO_OK;
    ordo_pg_close(pg);
    {
        /* The URL may name its own application_name; ours is the fallback.
         * GSSAPI encryption is off unless the URL or PGGSSENCMODE asks for it:
         * libpq's default ("prefer") looks for a Kerberos credential cache on
         * every connect, which initialises libkrb5 (~1 MB of resident pages in
         * each service) for a mode neither our local PostgreSQL nor CockroachDB
         * offers. Keywords listed before "dbname" are overridden by the URL's. */
        const char *gssenc = getenv("PGGSSENCMODE") == NULL ? "disable" : NULL;
        const char *keys[] = {"gssencmode", "dbname", "fallback_application_name", NULL};
        const char *values[] = {gssenc, pg->url, pg->name != NULL ? pg->name : ordo_log_service(), NULL};
        pg->conn = PQconnectdbParams(gssenc != NULL ? keys : keys + 1, gssenc != NULL ? values : values + 1, 1);
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        ordo_error_set(err, ORDO_UNAVAILABLE, "database unreachable: %s", PQerrorMessage(pg->conn));
        /* libpq messages end in a newline: keep log lines whole */
        if (err != NULL)
            err->msg[strcspn(err->msg, "\n")] = '\0';
        ordo_pg_close(pg);
        return ORDO_UNAVAILABLE;
    }
    PQsetNoticeReceiver(pg->conn, on_notice, NULL);
    if (pg->setup_sql != NULL) {
        PGresult *res = PQexec(pg->conn, pg->setup_sql);
        ordo_status st = ordo_pg_check(pg->conn, res, err);
        PQclear(res);
        if (st != ORDO_OK) {
            ordo_pg_close(pg);
            return st;
        }
    }
    if (pg->optional_sql != NULL)
        run_optional(pg);
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

/* Records what became of a COMMIT sent with the last statement. */
static void note_commit(ordo_pg_t *pg, PGresult *stmt, PGresult *commit)
{
    if (stmt == NULL || PQresultStatus(stmt) == PGRES_FATAL_ERROR || PQresultStatus(stmt) == PGRES_PIPELINE_ABORTED)
        pg->commit = ORDO_PG_COMMIT_SKIPPED;          /* the statement failed: the body says so */
    else if (commit == NULL)
        pg->commit = ORDO_PG_COMMIT_UNKNOWN;          /* the answer was lost */
    else if (PQresultStatus(commit) == PGRES_COMMAND_OK)
        pg->commit = ORDO_PG_COMMIT_DONE;
    else {
        pg->commit = ORDO_PG_COMMIT_FAILED;
        pg->commit_status = ordo_pg_check(pg->conn, commit, &pg->commit_err);
    }
}

/* Where the i-th of @p want results of a pipeline goes: the BEGIN's, each
 * statement's, the COMMIT's. */
static PGresult **result_slot(ordo_pg_stmt_t *stmts, int n, bool begin, PGresult **begin_res,
                              PGresult **commit_res, int i)
{
    if (begin && i == 0)
        return begin_res;
    i -= begin;
    return i < n ? &stmts[i].result : commit_res;
}

/* Whether every statement ran and succeeded. */
static bool all_succeeded(const ordo_pg_stmt_t *stmts, int n)
{
    for (int i = 0; i < n; i++) {
        ExecStatusType s = stmts[i].result != NULL ? PQresultStatus(stmts[i].result) : PGRES_FATAL_ERROR;
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
            return false;
    }
    return true;
}

/* The statements with what goes out with them in one round trip (libpq
 * pipeline mode): the transaction's pending BEGIN before them, its COMMIT
 * after them. Fills each stmts[i].result (NULL when it did not run); when
 * the BEGIN failed, its result takes stmts[0]'s place. When the connection
 * broke, it is closed and only the results that still tell something are
 * kept: an error, or an answer whose COMMIT went through or was lost
 * (ordo_pg_transact resolves that). */
static void pipeline(ordo_pg_t *pg, const char *begin, ordo_pg_stmt_t *stmts, int n, bool commit)
{
    PGconn *c = pg->conn;
    PGresult *begin_res = NULL, *commit_res = NULL;
    int want = (begin != NULL) + n + commit, got = 0;
    bool synced = false, sent;

    for (int i = 0; i < n; i++)
        stmts[i].result = NULL;
    /* (our calls are synchronous, so the connection is idle here; if it is
     * not, it is in no state to trust: the sends below fail and it is closed) */
    sent = PQenterPipelineMode(c) == 1 &&
           (begin == NULL || PQsendQueryParams(c, begin, 0, NULL, NULL, NULL, NULL, 0) == 1);
    for (int i = 0; sent && i < n; i++)
        sent = (stmts[i].name != NULL
                    ? PQsendQueryPrepared(c, stmts[i].name, stmts[i].n, stmts[i].values, NULL, NULL, 0)
                    : PQsendQueryParams(c, stmts[i].sql, stmts[i].n, NULL, stmts[i].values, NULL, NULL, 0)) == 1;
    sent = sent && (!commit || PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) == 1) &&
           PQpipelineSync(c) == 1;
    /* each command's result and a NULL after it, then the sync point */
    for (int i = 0; sent && i < 2 * want + 2 && !synced && PQstatus(c) == CONNECTION_OK; i++) {
        PGresult *r = PQgetResult(c);
        if (r == NULL)
            continue;
        synced = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        if (!synced && got < want)
            *result_slot(stmts, n, begin != NULL, &begin_res, &commit_res, got++) = r;
        else
            PQclear(r);
    }
    if (begin_res != NULL && PQresultStatus(begin_res) != PGRES_COMMAND_OK && n > 0) {
        PQclear(stmts[0].result);                   /* BEGIN failed: the rest did not run */
        stmts[0].result = begin_res;
        begin_res = NULL;
    }
    if (commit)
        note_commit(pg, n > 0 && all_succeeded(stmts, n) ? stmts[n - 1].result : NULL, synced ? commit_res : NULL);
    PQclear(begin_res);
    PQclear(commit_res);
    if (!synced || PQexitPipelineMode(c) != 1) {
        ordo_pg_close(pg);          /* the next call reconnects */
        for (int i = 0; i < n; i++) {
            PGresult *r = stmts[i].result;
            if (r != NULL && (PQresultStatus(r) == PGRES_FATAL_ERROR || pg->commit == ORDO_PG_COMMIT_DONE ||
                              pg->commit == ORDO_PG_COMMIT_UNKNOWN))
                continue;
            PQclear(r);             /* the transaction is gone with the connection */
            stmts[i].result = NULL;
        }
    }
}

/* Runs one statement (prepared when @p name is set), with the pending BEGIN
 * of a transaction and the COMMIT asked for by ordo_pg_commit_with_next(). */
static PGresult *run(ordo_pg_t *pg, const char *name, const char *sql, int n, const char *const *values)
{
    const char *begin = pg->pending_begin;
    bool commit = pg->commit == ORDO_PG_COMMIT_NEXT;

    pg->pending_begin = NULL;
    if (begin != NULL || commit) {
        ordo_pg_stmt_t stmt = {name, sql, n, values, NULL};
        pipeline(pg, begin, &stmt, 1, commit);
        return stmt.result;
    }
    return name != NULL ? PQexecPrepared(pg->conn, name, n, values, NULL, NULL, 0)
                        : PQexecParams(pg->conn, sql, n, NULL, values, NULL, NULL, 0);
}

void ordo_pg_commit_with_next(ordo_pg_t *pg)
{
    pg->commit = ORDO_PG_COMMIT_NEXT;
}

/* Runs the statement (prepared when @p name is set) and checks its result:
 * on ORDO_OK, *out (if given) owns it. */
static ordo_status query(ordo_pg_t *pg, const char *name, const char *sql, int n, const char *const *values,
                         PGresult **out, ordo_error_t *err)
{
    PGresult *res = run(pg, name, sql, n, values);
    ordo_status st = ordo_pg_check(pg->conn, res, err);

    if (st == ORDO_OK && out != NULL)
        *out = res;
    else
        PQclear(res);
    return st;
}

ordo_status ordo_pg_query(ordo_pg_t *pg, const char *sql, int n, const char *const *values,
                          PGresult **out, ordo_error_t *err)
{
    if (out != NULL)
        *out = NULL;
    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    return query(pg, NULL, sql, n, values, out, err);
}

ordo_status ordo_pg_read(ordo_pg_t *pg, const char *sql, int n, const char *const *values, PGresult **out,
                         ordo_error_t *err)
{
    ordo_status st = ordo_pg_ensure(pg, err);

    if (st != ORDO_OK)
        return st;
    st = ordo_pg_query(pg, sql, n, values, out, err);
    if (st == ORDO_UNAVAILABLE && PQstatus(pg->conn) != CONNECTION_OK && (st = ordo_pg_ensure(pg, err)) == ORDO_OK)
        st = ordo_pg_query(pg, sql, n, values, out, err);
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
    ordo_status st;

    if (out != NULL)
        *out = NULL;
    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    if ((st = prepare(pg, name, sql, n, err)) != ORDO_OK)
        return st;
    return query(pg, name, sql, n, values, out, err);
}

ordo_status ordo_pg_query_pipeline(ordo_pg_t *pg, ordo_pg_stmt_t *stmts, int n, ordo_error_t *err)
{
    const char *begin;
    bool commit;
    ordo_status st = ORDO_OK;

    for (int i = 0; i < n; i++)
        stmts[i].result = NULL;
    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    for (int i = 0; i < n && st == ORDO_OK; i++)
        if (stmts[i].name != NULL)
            st = prepare(pg, stmts[i].name, stmts[i].sql, stmts[i].n, err);
    if (st != ORDO_OK || n == 0)
        return st;
    begin = pg->pending_begin;
    commit = pg->commit == ORDO_PG_COMMIT_NEXT;
    pg->pending_begin = NULL;
    pipeline(pg, begin, stmts, n, commit);
    for (int i = 0; i < n && st == ORDO_OK; i++)
        st = ordo_pg_check(pg->conn, stmts[i].result, err);
    if (st != ORDO_OK)
        for (int i = 0; i < n; i++) {
            PQclear(stmts[i].result);
            stmts[i].result = NULL;
        }
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
        ordo_pg_commit commit = ORDO_PG_COMMIT_NONE;
        if (st == ORDO_OK) {
            pg->pending_begin = tx->begin_sql;
            pg->commit = ORDO_PG_COMMIT_NONE;
            st = tx->body(pg, tx->arg, &last);
            began = pg->pending_begin == NULL;
            commit = pg->commit;
            pg->pending_begin = NULL;
            pg->commit = ORDO_PG_COMMIT_NONE;
            if (st == ORDO_OK && !began)
                return ORDO_OK;             /* the body ran no statement: nothing to commit */
        }
        if (st == ORDO_OK && commit == ORDO_PG_COMMIT_DONE)
            return ORDO_OK;                 /* committed with the last statement */
        if (st == ORDO_OK && commit == ORDO_PG_COMMIT_FAILED) {
            st = pg->commit_status;         /* a failed COMMIT ends the transaction */
            last = pg->commit_err;
        } else if (st == ORDO_OK) {
            if (commit == ORDO_PG_COMMIT_UNKNOWN)   /* sent with the last statement; its answer was lost */
                st = ordo_error_set(&last, ORDO_UNAVAILABLE, "database connection lost at COMMIT");
            else
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
