/**
 * @file pg.h
 * PostgreSQL / CockroachDB access over libpq: one connection per ordo_pg_t
 * (opaque; not thread-safe: one thread at a time), reconnect on loss,
 * SQLSTATE mapped to ordo_status in one place, and transactions retried as
 * a whole on 40001/40P01 or a lost connection, with jittered exponential
 * backoff.
 *
 * Outside a transaction a statement runs once (ordo_pg_query), or, when it
 * may safely run twice, once more on a connection found lost
 * (ordo_pg_query_idempotent). A transaction is ordo_pg_transact() with a
 * body; the body runs its statements on the ordo_pg_tx_t it is handed, and
 * says which of them are the last (ordo_pg_tx_run_and_commit), so that BEGIN
 * goes out with the first and COMMIT with the last, in their round trips.
 */
#ifndef ORDO_PG_H
#define ORDO_PG_H

#include <libpq-fe.h>

#include "ordo/retry.h"
#include "ordo/status.h"

#define ORDO_PG_MAX_PREPARED 16

/** A connection and what it needs to connect again. */
typedef struct ordo_pg ordo_pg_t;

/**
 * A handle for @p url (not owned: it must outlive the handle), named @p name
 * in pg_stat_activity (NULL: the service's name), running @p setup_sql (may
 * be NULL; not owned) after every (re)connect. Does not connect: the first
 * ordo_pg_ensure() (or ordo_pg_query_idempotent, ordo_pg_transact) does.
 * Fails only for memory. Free with ordo_pg_destroy().
 */
ordo_status ordo_pg_create(const char *url, const char *name, const char *setup_sql, ordo_pg_t **out,
                           ordo_error_t *err);

/** ordo_pg_create() and a first connect. Unless the status is ORDO_NO_MEMORY,
 *  *@p out is a valid handle even when the connect failed (later calls try
 *  again). */
ordo_status ordo_pg_open(const char *url, const char *name, const char *setup_sql, ordo_pg_t **out,
                         ordo_error_t *err);

/** Closes the connection and frees the handle. Accepts NULL. */
void ordo_pg_destroy(ordo_pg_t *pg);

/** Runs @p sql (not owned) on the connection now and after every reconnect,
 *  after the setup: settings a server may not know (a CockroachDB that lacks
 *  a PostgreSQL setting), so its refusal is logged at debug and ignored. */
void ordo_pg_set_optional(ordo_pg_t *pg, const char *sql);

/** Connects when the connection is missing or broken. */
ordo_status ordo_pg_ensure(ordo_pg_t *pg, ordo_error_t *err);

/**
 * The one mapping from a SQLSTATE (NULL: none) to ordo_status: ORDO_RETRY
 * for 40001/40P01; ORDO_UNAVAILABLE for whatever a later attempt can get
 * past (08xxx, 57Pxx, 53xxx, 58xxx, XXxxx, 25006 read-only, 55P03, and
 * 40003 ambiguous result: a COMMIT that answers it is resolved like a lost
 * one); ORDO_CONFLICT for 23505 (unique violation), ORDO_INVALID for other
 * 22xxx/23xxx, ORDO_TIMEOUT for 57014, ORDO_INTERNAL otherwise. (A lost
 * connection is ORDO_UNAVAILABLE whatever the SQLSTATE.)
 */
ordo_status ordo_pg_status_of_sqlstate(const char *sqlstate);

/** One statement: text parameters, prepared under @c name when set. */
typedef struct ordo_pg_stmt {
    const char *name;           /**< prepared-statement name (a string constant), or NULL: unnamed */
    const char *sql;
    int n;                      /**< text parameters in @c values */
    const char *const *values;
    PGresult *result;           /**< out: on ORDO_OK, owned by the caller (PQclear) */
} ordo_pg_stmt_t;

/**
 * Runs @p sql with @p n text parameters once, outside a transaction. On
 * ORDO_OK, *@p out (if not NULL) receives the result, which the caller
 * PQclear()s; on error nothing is returned. Does not connect.
 */
ordo_status ordo_pg_query(ordo_pg_t *pg, const char *sql, int n, const char *const *values, PGresult **out,
                          ordo_error_t *err);

/**
 * ordo_pg_query() for an idempotent statement (a read, a write that may
 * safely run twice): connects if needed, and when the connection turns out
 * to have been lost since its last use (the database restarted meanwhile),
 * connects again and runs the statement once more, so the first request
 * after a restart does not fail.
 */
ordo_status ordo_pg_query_idempotent(ordo_pg_t *pg, const char *sql, int n, const char *const *values,
                                     PGresult **out, ordo_error_t *err);

/** Runs one or more statements without parameters outside a transaction, discarding results. */
ordo_status ordo_pg_exec(ordo_pg_t *pg, const char *sql, ordo_error_t *err);

/* ------------------------------------------------------------ transactions */

/** A transaction in progress, handed to its body (valid during the body only). */
typedef struct ordo_pg_tx ordo_pg_tx_t;

/** A transaction's statements: ORDO_OK commits, ORDO_RETRY runs it again, anything else aborts. */
typedef ordo_status (*ordo_pg_tx_body_cb)(ordo_pg_tx_t *tx, void *arg, ordo_error_t *err);

/** After a COMMIT whose answer was lost, on a new connection: ORDO_OK if it
 *  did commit, ORDO_RETRY if it did not. */
typedef ordo_status (*ordo_pg_resolve_cb)(ordo_pg_t *pg, void *arg, ordo_error_t *err);

/** What ordo_pg_transact() runs. */
typedef struct ordo_pg_transaction {
    const char *begin_sql;      /**< e.g. "BEGIN ISOLATION LEVEL REPEATABLE READ" */
    ordo_pg_tx_body_cb body;    /**< runs once per attempt and must reset any state it fills */
    ordo_pg_resolve_cb resolve; /**< NULL: a lost COMMIT answer is reported as ORDO_UNAVAILABLE */
    void *arg;
    ordo_retry_policy_t policy;
} ordo_pg_transaction_t;

/**
 * Runs @p t: connects if needed, runs the body, commits (unless the body's
 * last statements did), retrying as a whole on ORDO_RETRY (40001/40P01)
 * and on a lost connection before COMMIT. *@p retries (may be NULL) is
 * increased by the number of retries. A body that runs no statement commits
 * nothing.
 */
ordo_status ordo_pg_transact(ordo_pg_t *pg, const ordo_pg_transaction_t *t, int *retries, ordo_error_t *err);

/**
 * Runs @p n statements of the transaction in one round trip (libpq pipeline
 * mode), in order; the transaction's BEGIN goes with them if none ran yet.
 * Named statements are prepared first (once per connection). On ORDO_OK
 * every stmts[i].result is set; otherwise none is, and the status is the
 * first failure's (a failed statement aborts the transaction: the ones
 * after it do not run).
 */
ordo_status ordo_pg_tx_run(ordo_pg_tx_t *tx, ordo_pg_stmt_t *stmts, int n, ordo_error_t *err);

/**
 * ordo_pg_tx_run() for the body's last statements: the COMMIT goes out with
 * them in the same round trip. On ORDO_OK the transaction is committed (the
 * body must not undo anything after this returns; it may only read the
 * results); a failed COMMIT is reported by ordo_pg_transact().
 */
ordo_status ordo_pg_tx_run_and_commit(ordo_pg_tx_t *tx, ordo_pg_stmt_t *stmts, int n, ordo_error_t *err);

/** One statement of the transaction: ordo_pg_tx_run() of one, its result in
 *  *@p out (if not NULL; the caller PQclear()s it). */
ordo_status ordo_pg_tx_query(ordo_pg_tx_t *tx, const char *name, const char *sql, int n,
                             const char *const *values, PGresult **out, ordo_error_t *err);

/** Statements without parameters in the transaction (the simple protocol:
 *  a migration's script), results discarded. */
ordo_status ordo_pg_tx_exec(ordo_pg_tx_t *tx, const char *sql, ordo_error_t *err);

#endif
