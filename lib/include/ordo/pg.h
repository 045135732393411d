/**
 * @file pg.h
 * PostgreSQL / CockroachDB access over libpq: one connection per ordo_pg_t
 * (not thread-safe: one thread at a time), reconnect on loss, SQLSTATE
 * mapped to ordo_status in one place, and transactions retried as a whole
 * on 40001/40P01 or a lost connection, with jittered exponential backoff.
 */
#ifndef ORDO_PG_H
#define ORDO_PG_H

#include <libpq-fe.h>

#include "ordo/retry.h"
#include "ordo/status.h"

#define ORDO_PG_MAX_PREPARED 16

/** What became of a COMMIT sent together with a transaction's last statement. */
typedef enum ordo_pg_commit {
    ORDO_PG_COMMIT_NONE = 0,   /**< not asked for: ordo_pg_transact commits */
    ORDO_PG_COMMIT_NEXT,       /**< asked for: goes out with the next statement */
    ORDO_PG_COMMIT_DONE,       /**< committed */
    ORDO_PG_COMMIT_FAILED,     /**< the COMMIT failed (commit_status, commit_err) */
    ORDO_PG_COMMIT_SKIPPED,    /**< the statement failed, so the COMMIT did not run */
    ORDO_PG_COMMIT_UNKNOWN,    /**< the answer was lost with the connection */
} ordo_pg_commit;

typedef struct ordo_pg {
    PGconn *conn;
    const char *url;        /**< not owned: must outlive the handle */
    const char *name;       /**< application_name in pg_stat_activity (not owned); NULL: the service's name */
    const char *setup_sql;  /**< run after every (re)connect, e.g. session timeouts; may be NULL */
    const char *optional_sql; /**< then this, if set: a server may refuse it (see ordo_pg_set_optional()) */
    const char *pending_begin; /**< ordo_pg_transact's BEGIN, sent together with the next statement */
    ordo_pg_commit commit;     /**< see ordo_pg_commit_with_next() */
    ordo_status commit_status;
    ordo_error_t commit_err;
    const char *prepared[ORDO_PG_MAX_PREPARED]; /**< statement names prepared on this connection */
    int n_prepared;
} ordo_pg_t;

/** Connects as @p name (application_name; NULL: the service's name) and runs
 *  @p setup_sql. On failure @p pg is still valid and later calls try to
 *  reconnect. Close with ordo_pg_close(). */
ordo_status ordo_pg_open(ordo_pg_t *pg, const char *url, const char *name, const char *setup_sql,
                         ordo_error_t *err);

/** Runs @p sql (not owned) on the connection now and after every reconnect,
 *  after the setup: settings a server may not know (a CockroachDB that lacks
 *  a PostgreSQL setting), so its refusal is logged at debug and ignored. */
void ordo_pg_set_optional(ordo_pg_t *pg, const char *sql);

/** Closes the connection. Accepts a never-opened or already closed handle. */
void ordo_pg_close(ordo_pg_t *pg);

/** Reconnects when the connection is missing or broken. */
ordo_status ordo_pg_ensure(ordo_pg_t *pg, ordo_error_t *err);

/**
 * The one mapping from a libpq result to ordo_status: ORDO_RETRY for
 * 40001/40P01, ORDO_UNAVAILABLE for a lost connection or 08xxx/57P0x/53xxx,
 * ORDO_CONFLICT for 23505 (unique violation), ORDO_INVALID for other 22xxx/23xxx,
 * ORDO_TIMEOUT for 57014, ORDO_INTERNAL otherwise. Does not clear @p res.
 */
ordo_status ordo_pg_check(PGconn *conn, const PGresult *res, ordo_error_t *err);

/**
 * Runs @p sql with @p n text parameters. On ORDO_OK, *@p out (if not NULL)
 * receives the result, which the caller PQclear()s; on error nothing is returned.
 */
ordo_status ordo_pg_query(ordo_pg_t *pg, const char *sql, int n, const char *const *values,
                          PGresult **out, ordo_error_t *err);

/**
 * ordo_pg_query() for a statement that may safely run twice (a read, an
 * idempotent write) outside a transaction: connects if needed, and when the
 * connection turns out to have been lost since its last use (the database
 * restarted meanwhile), reconnects and runs the statement once more, so the
 * first request after a restart does not fail.
 */
ordo_status ordo_pg_read(ordo_pg_t *pg, const char *sql, int n, const char *const *values, PGresult **out,
                         ordo_error_t *err);

/**
 * Like ordo_pg_query(), as the prepared statement @p name (a string constant),
 * prepared from @p sql on first use on each connection: no parse and plan per call.
 */
ordo_status ordo_pg_query_prepared(ordo_pg_t *pg, const char *name, const char *sql, int n,
                                   const char *const *values, PGresult **out, ordo_error_t *err);

/** One statement of ordo_pg_query_pipeline(). */
typedef struct ordo_pg_stmt {
    const char *name;           /**< prepared-statement name (a string constant), or NULL: unnamed */
    const char *sql;
    int n;                      /**< text parameters in @c values */
    const char *const *values;
    PGresult *result;           /**< out: on ORDO_OK, owned by the caller (PQclear) */
} ordo_pg_stmt_t;

/**
 * Runs @p n statements in one round trip (libpq pipeline mode), in order, on
 * one connection: inside a transaction body, the pending BEGIN goes before
 * them and, after ordo_pg_commit_with_next(), the COMMIT after the last.
 * Named statements are prepared first (once per connection). On ORDO_OK every
 * stmts[i].result is set; otherwise none is, and the status is the first
 * failure's (a failed statement aborts the transaction: the ones after it do
 * not run).
 */
ordo_status ordo_pg_query_pipeline(ordo_pg_t *pg, ordo_pg_stmt_t *stmts, int n, ordo_error_t *err);

/** Runs one or more statements without parameters, discarding results. */
ordo_status ordo_pg_exec(ordo_pg_t *pg, const char *sql, ordo_error_t *err);

typedef ordo_status (*ordo_pg_tx_cb)(ordo_pg_t *pg, void *arg, ordo_error_t *err);

typedef struct ordo_pg_tx {
    const char *begin_sql;    /**< e.g. "BEGIN ISOLATION LEVEL REPEATABLE READ" */
    ordo_pg_tx_cb body;       /**< the statements; ORDO_OK commits, ORDO_RETRY retries, other aborts */
    /** After a COMMIT whose outcome is unknown (connection lost): ORDO_OK if
     *  it did commit, ORDO_RETRY if it did not. NULL: report ORDO_UNAVAILABLE. */
    ordo_pg_tx_cb resolve;
    void *arg;
    ordo_retry_policy_t policy;
} ordo_pg_tx_t;

/**
 * Inside a transaction body: the next statement is the body's last, so the
 * COMMIT goes out with it in one round trip. Only for a body that does not
 * need to undo anything after that statement returns: once it has, the
 * transaction is committed.
 */
void ordo_pg_commit_with_next(ordo_pg_t *pg);

/**
 * Runs @p tx, retrying as a whole on ORDO_RETRY (40001/40P01) and on a lost
 * connection before COMMIT. *@p retries (may be NULL) is increased by the
 * number of retries. The body runs once per attempt and must reset any state
 * it fills.
 */
ordo_status ordo_pg_transact(ordo_pg_t *pg, const ordo_pg_tx_t *tx, int *retries, ordo_error_t *err);

#endif
