#include "ordo/pg.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ordo/log.h"

/* The handle: the connection and what it takes to make it again. */
struct ordo_pg {
    PGconn *conn;
    const char *url;           /* not owned */
    const char *name;          /* application_name (not owned); NULL: the service's name */
    const char *setup_sql;     /* run after every (re)connect; may be NULL */
    const char *optional_sql;  /* then this, if set: a server may refuse it */
    const char *prepared[ORDO_PG_MAX_PREPARED]; /* statement names prepared on this connection */
    int n_prepared;
};

/* What became of a COMMIT sent together with a transaction's last statements. */
typedef enum commit_outcome {
    COMMIT_NONE = 0,   /* not sent with them: ordo_pg_transact commits */
    COMMIT_DONE,       /* committed */
    COMMIT_FAILED,     /* the COMMIT failed (commit_status, commit_err) */
    COMMIT_SKIPPED,    /* a statement failed, so the COMMIT did not run */
    COMMIT_UNKNOWN,    /* the answer was lost with the connection */
} commit_outcome;

/* A transaction in progress: lives on ordo_pg_transact's stack for one attempt. */
struct ordo_pg_tx {
    ordo_pg_t *pg;
    const char *begin_sql;     /* sent with the first statements */
    bool began;                /* the BEGIN was sent */
    commit_outcome commit;
    ordo_status commit_status;
    ordo_error_t commit_err;
};

ordo_status ordo_pg_create(const char *url, const char *name, const char *setup_sql, ordo_pg_t **out,
                           ordo_error_t *err)
{
    ordo_pg_t *pg = calloc(1, sizeof *pg);

    *out = pg;
    if (pg == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    pg->url = url;
    pg->name = name;
    pg->setup_sql = setup_sql;
    return ORDO_OK;
}

ordo_status ordo_pg_open(const char *url, const char *name, const char *setup_sql, ordo_pg_t **out,
                         ordo_error_t *err)
{
    ordo_status st = ordo_pg_create(url, name, setup_sql, out, err);
    return st == ORDO_OK ? ordo_pg_ensure(*out, err) : st;
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

/* Drops the connection (the next ordo_pg_ensure connects again). */
static void disconnect(ordo_pg_t *pg)
{
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->n_prepared = 0;
}

void ordo_pg_destroy(ordo_pg_t *pg)
{
    if (pg == NULL)
        return;
    disconnect(pg);
    free(pg);
}

/* SQLSTATEs of a server that cannot do the work now but may later: a
 * failover's read-only standby (25006), a shutdown or crash (57P), resources
 * (53), the operating system or disk (58), an internal error (XX), a lock
 * not available (55P03), and CockroachDB's ambiguous result (40003: the
 * statement may or may not have taken effect; appends are idempotent by
 * event id, so trying again, or reading back, settles it). */
static bool sqlstate_passes(const char *state)
{
    static const char *const prefixes[] = {"08", "57P", "53", "58", "XX", "25006", "55P03", "40003"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(state, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

ordo_status ordo_pg_status_of_sqlstate(const char *state)
{
    if (state == NULL)
        return ORDO_INTERNAL;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return ORDO_RETRY;
    if (strcmp(state, "23505") == 0)
        return ORDO_CONFLICT;
    if (strcmp(state, "57014") == 0)
        return ORDO_TIMEOUT;
    if (sqlstate_passes(state))
        return ORDO_UNAVAILABLE;
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)
        return ORDO_INVALID;
    return ORDO_INTERNAL;
}

/* Whether @p res failed because the connection did: libpq says so, or the
 * error did not come from the server (no SQLSTATE: libpq's own, such as
 * "server closed the connection unexpectedly" on a connection a server's
 * immediate shutdown or crash left behind, which libpq may not yet have
 * marked bad). */
static bool connection_lost(PGconn *conn, const PGresult *res)
{
    return PQstatus(conn) != CONNECTION_OK ||
           (res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR &&
            PQresultErrorField(res, PG_DIAG_SQLSTATE) == NULL);
}

/* The one mapping from a libpq result to ordo_status (see
 * ordo_pg_status_of_sqlstate), with the server's message. Does not clear @p res. */
static ordo_status check_result(PGconn *conn, const PGresult *res, ordo_error_t *err)
{
    ExecStatusType rs = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *state, *text;
    ordo_status st;

    if (rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK || rs == PGRES_EMPTY_QUERY)
        return ORDO_OK;
    if (connection_lost(conn, res))
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    text = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    st = ordo_pg_status_of_sqlstate(state);
    return ordo_error_set(err, st, "database error %s: %s", state ? state : "?",
                          text ? text : PQerrorMessage(conn));
}

/* check_result for a result nobody keeps: @p res is cleared, and a connection
 * it shows lost is dropped even when libpq still calls it good (the next
 * call connects again). */
static ordo_status settle_result(ordo_pg_t *pg, PGresult *res, ordo_error_t *err)
{
    ordo_status st = check_result(pg->conn, res, err);
    bool lost = st != ORDO_OK && connection_lost(pg->conn, res);

    PQclear(res);
    if (lost)
        disconnect(pg);
    return st;
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
    disconnect(pg);
    {
        /* The URL may name its own application_name; ours is the fallback.
         * GSSAPI encryption is off unless the URL or PGGSSENCMODE asks for it:
         * libpq's default ("prefer") looks for a Kerberos credential cache on
         * every connect, which initialises libkrb5 (~1 MB of resident pages in
         * each service) for a mode neither our local PostgreSQL nor CockroachDB
         * offers. A server that is gone or cut off is noticed in seconds, not
         * minutes: a connect timeout, TCP keepalives (idle 10 s, then 3 probes
         * 3 s apart) and a TCP user timeout (sent data unacknowledged for
         * 15 s). Keywords listed before "dbname" are overridden by the URL's. */
        const char *keys[] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                              "keepalives_count", "tcp_user_timeout", "gssencmode", "dbname",
                              "fallback_application_name", NULL};
        const char *values[] = {"5", "1", "10", "3", "3", "15000",
                                getenv("PGGSSENCMODE") == NULL ? "disable" : getenv("PGGSSENCMODE"), pg->url,
                                pg->name != NULL ? pg->name : ordo_log_service(), NULL};
        pg->conn = PQconnectdbParams(keys, values, 1);
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        ordo_error_set(err, ORDO_UNAVAILABLE, "database unreachable: %s", PQerrorMessage(pg->conn));
        /* libpq messages end in a newline: keep log lines whole */
        if (err != NULL)
            err->msg[strcspn(err->msg, "\n")] = '\0';
        disconnect(pg);
        return ORDO_UNAVAILABLE;
    }
    PQsetNoticeReceiver(pg->conn, on_notice, NULL);
    if (pg->setup_sql != NULL) {
        PGresult *res = PQexec(pg->conn, pg->setup_sql);
        ordo_status st = check_result(pg->conn, res, err);
        PQclear(res);
        if (st != ORDO_OK) {
            disconnect(pg);
            return st;
        }
    }
    if (pg->optional_sql != NULL)
        run_optional(pg);
    return ORDO_OK;
}

/* Records what became of a COMMIT sent with a transaction's last statements:
 * @p stmt is the last statement's result (NULL when one failed or none came
 * back), @p commit the COMMIT's (NULL when its answer was lost). */
static void note_commit(ordo_pg_tx_t *tx, PGconn *conn, PGresult *stmt, PGresult *commit)
{
    if (stmt == NULL || PQresultStatus(stmt) == PGRES_FATAL_ERROR || PQresultStatus(stmt) == PGRES_PIPELINE_ABORTED)
        tx->commit = COMMIT_SKIPPED;          /* a statement failed: the body says so */
    else if (commit == NULL)
        tx->commit = COMMIT_UNKNOWN;          /* the answer was lost */
    else if (PQresultStatus(commit) == PGRES_COMMAND_OK)
        tx->commit = COMMIT_DONE;
    else {
        tx->commit = COMMIT_FAILED;
        tx->commit_status = check_result(conn, commit, &tx->commit_err);
    }
}

/* Where the i-th of the results of a pipeline goes: the BEGIN's, each
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
 * pipeline mode): @p begin (may be NULL) before them, and when @p commit_of
 * is set the COMMIT after them, whose outcome it records. Fills each
 * stmts[i].result (NULL when it did not run); when the BEGIN failed, its
 * result takes stmts[0]'s place. When the connection broke, it is dropped
 * and only the results that still tell something are kept: an error, or an
 * answer whose COMMIT went through or was lost (ordo_pg_transact resolves
 * that). */
static void pipeline(ordo_pg_t *pg, const char *begin, ordo_pg_stmt_t *stmts, int n, ordo_pg_tx_t *commit_of)
{
    PGconn *c = pg->conn;
    PGresult *begin_res = NULL, *commit_res = NULL;
    bool commit = commit_of != NULL, synced = false, sent;
    int want = (begin != NULL) + n + commit, got = 0;

    /* (our calls are synchronous, so the connection is idle here; if it is
     * not, it is in no state to trust: the sends below fail and it is dropped) */
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
        note_commit(commit_of, c, n > 0 && all_succeeded(stmts, n) ? stmts[n - 1].result : NULL,
                    synced ? commit_res : NULL);
    PQclear(begin_res);
    PQclear(commit_res);
    if (!synced || PQexitPipelineMode(c) != 1) {
        bool answered = commit && (commit_of->commit == COMMIT_DONE || commit_of->commit == COMMIT_UNKNOWN);
        disconnect(pg);             /* the next call connects again */
        for (int i = 0; i < n; i++) {
            PGresult *r = stmts[i].result;
            if (r != NULL && (PQresultStatus(r) == PGRES_FATAL_ERROR || answered))
                continue;
            PQclear(r);             /* the transaction is gone with the connection */
            stmts[i].result = NULL;
        }
    }
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
    st = settle_result(pg, res, err);
    if (st == ORDO_OK)
        pg->prepared[pg->n_prepared++] = name;
    return st;
}

/* Runs @p n statements (named ones prepared first), with @p begin (may be
 * NULL) before them and, for @p commit_of, its COMMIT after them: one
 * statement alone goes out as it is, several in one pipeline. *@p sent
 * tells whether anything went out. On ORDO_OK every result is set, on
 * failure none. */
static ordo_status run(ordo_pg_t *pg, const char *begin, ordo_pg_stmt_t *stmts, int n, ordo_pg_tx_t *commit_of,
                       bool *sent, ordo_error_t *err)
{
    ordo_status st = ORDO_OK;

    *sent = false;
    for (int i = 0; i < n; i++)
        stmts[i].result = NULL;
    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    for (int i = 0; i < n && st == ORDO_OK; i++)
        if (stmts[i].name != NULL)
            st = prepare(pg, stmts[i].name, stmts[i].sql, stmts[i].n, err);
    if (st != ORDO_OK || n == 0)
        return st;
    *sent = true;
    if (begin == NULL && commit_of == NULL && n == 1)
        stmts[0].result = stmts[0].name != NULL
                              ? PQexecPrepared(pg->conn, stmts[0].name, stmts[0].n, stmts[0].values, NULL, NULL, 0)
                              : PQexecParams(pg->conn, stmts[0].sql, stmts[0].n, NULL, stmts[0].values, NULL, NULL, 0);
    else
        pipeline(pg, begin, stmts, n, commit_of);
    for (int i = 0; i < n && st == ORDO_OK; i++)
        st = check_result(pg->conn, stmts[i].result, err);
    if (st != ORDO_OK) {
        bool lost = false;
        for (int i = 0; i < n; i++) {
            lost = lost || (pg->conn != NULL && connection_lost(pg->conn, stmts[i].result));
            PQclear(stmts[i].result);
            stmts[i].result = NULL;
        }
        if (lost)
            disconnect(pg);   /* libpq may still call it good: the next call connects again */
    }
    return st;
}

ordo_status ordo_pg_query(ordo_pg_t *pg, const char *sql, int n, const char *const *values, PGresult **out,
                          ordo_error_t *err)
{
    ordo_pg_stmt_t stmt = {.sql = sql, .n = n, .values = values};
    bool sent;
    ordo_status st = run(pg, NULL, &stmt, 1, NULL, &sent, err);

    if (out != NULL)
        *out = stmt.result;
    else
        PQclear(stmt.result);
    return st;
}

ordo_status ordo_pg_query_idempotent(ordo_pg_t *pg, const char *sql, int n, const char *const *values,
                                     PGresult **out, ordo_error_t *err)
{
    ordo_status st = ordo_pg_ensure(pg, err);

    if (out != NULL)
        *out = NULL;
    if (st != ORDO_OK)
        return st;
    st = ordo_pg_query(pg, sql, n, values, out, err);
    if (st == ORDO_UNAVAILABLE && PQstatus(pg->conn) != CONNECTION_OK && (st = ordo_pg_ensure(pg, err)) == ORDO_OK)
        st = ordo_pg_query(pg, sql, n, values, out, err);
    return st;
}

/* One simple-protocol string (several statements allowed), results discarded. */
static ordo_status exec_simple(ordo_pg_t *pg, const char *sql, ordo_error_t *err)
{
    if (pg->conn == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
    return settle_result(pg, PQexec(pg->conn, sql), err);
}

ordo_status ordo_pg_exec(ordo_pg_t *pg, const char *sql, ordo_error_t *err)
{
    return exec_simple(pg, sql, err);
}

/* ------------------------------------------------------------ transactions */

static ordo_status tx_run(ordo_pg_tx_t *tx, ordo_pg_stmt_t *stmts, int n, bool commit, ordo_error_t *err)
{
    bool sent;
    ordo_status st = run(tx->pg, tx->began ? NULL : tx->begin_sql, stmts, n, commit ? tx : NULL, &sent, err);

    tx->began = tx->began || sent;
    return st;
}

ordo_status ordo_pg_tx_run(ordo_pg_tx_t *tx, ordo_pg_stmt_t *stmts, int n, ordo_error_t *err)
{
    return tx_run(tx, stmts, n, false, err);
}

ordo_status ordo_pg_tx_run_and_commit(ordo_pg_tx_t *tx, ordo_pg_stmt_t *stmts, int n, ordo_error_t *err)
{
    return tx_run(tx, stmts, n, true, err);
}

ordo_status ordo_pg_tx_query(ordo_pg_tx_t *tx, const char *name, const char *sql, int n,
                             const char *const *values, PGresult **out, ordo_error_t *err)
{
    ordo_pg_stmt_t stmt = {.name = name, .sql = sql, .n = n, .values = values};
    ordo_status st = tx_run(tx, &stmt, 1, false, err);

    if (out != NULL)
        *out = stmt.result;
    else
        PQclear(stmt.result);
    return st;
}

ordo_status ordo_pg_tx_exec(ordo_pg_tx_t *tx, const char *sql, ordo_error_t *err)
{
    ordo_status st;

    if (!tx->began) {   /* a simple-protocol string cannot join a pipeline: BEGIN goes on its own */
        if (tx->pg->conn == NULL)
            return ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost");
        tx->began = true;
        if ((st = exec_simple(tx->pg, tx->begin_sql, err)) != ORDO_OK)
            return st;
    }
    return exec_simple(tx->pg, sql, err);
}

/* After a COMMIT whose answer was lost: did it commit? */
static ordo_status resolve_commit(ordo_pg_t *pg, const ordo_pg_transaction_t *t, ordo_error_t *err)
{
    if (t->resolve == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "commit outcome unknown: connection lost");
    for (int attempt = 1; attempt <= t->policy.max_attempts; attempt++) {
        if (ordo_pg_ensure(pg, err) == ORDO_OK) {
            ordo_status st = t->resolve(pg, t->arg, err);
            if (st == ORDO_OK || st == ORDO_RETRY)
                return st;
        }
        ordo_backoff_sleep(&t->policy, attempt);
    }
    return ordo_error_set(err, ORDO_UNAVAILABLE, "commit outcome unknown and the database stays unreachable");
}

/* Ends an attempt whose body succeeded: commits unless its last statements
 * did (or tells what became of that COMMIT). */
static ordo_status finish(ordo_pg_t *pg, const ordo_pg_transaction_t *t, const ordo_pg_tx_t *tx, ordo_error_t *err)
{
    ordo_status st;

    switch (tx->commit) {
    case COMMIT_DONE:
        return ORDO_OK;
    case COMMIT_FAILED:     /* a failed COMMIT ends the transaction; an ambiguous one (40003) is resolved */
        *err = tx->commit_err;
        st = tx->commit_status;
        break;
    case COMMIT_UNKNOWN:    /* sent with the last statements; its answer was lost */
        st = ordo_error_set(err, ORDO_UNAVAILABLE, "database connection lost at COMMIT");
        break;
    default:
        st = exec_simple(pg, "COMMIT", err);
    }
    return st == ORDO_UNAVAILABLE ? resolve_commit(pg, t, err) : st;
}

/* Whether the connection is inside a transaction block (open or failed). */
static bool in_transaction(const ordo_pg_t *pg)
{
    PGTransactionStatusType ts = pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK
                                     ? PQtransactionStatus(pg->conn)
                                     : PQTRANS_UNKNOWN;
    return ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
}

ordo_status ordo_pg_transact(ordo_pg_t *pg, const ordo_pg_transaction_t *t, int *retries, ordo_error_t *err)
{
    ordo_status st = ORDO_UNAVAILABLE;
    ordo_error_t last;

    ordo_error_set(&last, ORDO_UNAVAILABLE, "no attempt made");
    for (int attempt = 1; attempt <= t->policy.max_attempts; attempt++) {
        ordo_pg_tx_t tx = {.pg = pg, .begin_sql = t->begin_sql};

        if (attempt > 1) {
            if (retries != NULL)
                (*retries)++;
            ordo_backoff_sleep(&t->policy, attempt - 1);
        }
        if ((st = ordo_pg_ensure(pg, &last)) == ORDO_OK) {
            st = t->body(&tx, t->arg, &last);
            if (st == ORDO_OK && !tx.began)
                return ORDO_OK;             /* the body ran no statement: nothing to commit */
            if (st == ORDO_OK && (st = finish(pg, t, &tx, &last)) == ORDO_OK)
                return ORDO_OK;
            if (st != ORDO_OK && tx.began && in_transaction(pg)) {
                PGresult *res = PQexec(pg->conn, "ROLLBACK");   /* the body gave up inside it */
                PQclear(res);
            }
        }
        if (st != ORDO_RETRY && st != ORDO_UNAVAILABLE)
            break;
        ORDO_DEBUG("transaction retry", "attempt=%d status=%s err=\"%s\"", attempt, ordo_status_text(st), last.msg);
    }
    if (st == ORDO_RETRY)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "gave up after %d attempts: %s", t->policy.max_attempts,
                              last.msg);
    if (err != NULL)
        *err = last;
    return st;
}
