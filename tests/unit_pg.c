/* The transaction state machine of lib/pg.c against a real PostgreSQL
 * (tests/run_with.sh pg starts one and passes ORDO_TEST_DATABASE_URL): where
 * BEGIN and COMMIT go, what a failing body leaves behind, which failures
 * run the transaction again, and a connection lost in the middle (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ordo/pg.h"

static const ordo_retry_policy_t FAST = {5, 1, 10};

typedef struct fixture {
    const char *url;
    ordo_pg_t *pg;       /* the connection under test */
    ordo_pg_t *other;    /* a second session: looks, kills, interferes */
} fixture_t;

static int64_t scalar(ordo_pg_t *pg, const char *sql)
{
    PGresult *res;
    ordo_error_t err;
    int64_t v;
    if (ordo_pg_query_idempotent(pg, sql, 0, NULL, &res, &err) != ORDO_OK)
        fail_msg("%s: %s", sql, err.msg);
    v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

static int setup(void **state)
{
    static fixture_t f;
    ordo_error_t err;

    f.url = getenv("ORDO_TEST_DATABASE_URL");
    if (f.url == NULL)
        return -1;
    if (ordo_pg_open(f.url, "unit_pg", NULL, &f.pg, &err) != ORDO_OK ||
        ordo_pg_open(f.url, "unit_pg other", NULL, &f.other, &err) != ORDO_OK ||
        ordo_pg_exec(f.other, "DROP TABLE IF EXISTS t; CREATE TABLE t (k int PRIMARY KEY, v int NOT NULL)", &err) !=
            ORDO_OK) {
        fprintf(stderr, "unit_pg: %s\n", err.msg);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ordo_pg_destroy(f->pg);
    ordo_pg_destroy(f->other);
    return 0;
}

static int empty_table(void **state)
{
    fixture_t *f = *state;
    ordo_error_t err;
    return ordo_pg_exec(f->other, "TRUNCATE t", &err) == ORDO_OK ? 0 : -1;
}

/* ---- bodies */

typedef struct body_arg {
    fixture_t *f;
    int runs;             /* attempts that ran the body */
    int fail_first;       /* the first attempts that end with... */
    ordo_status fail_with;
    ordo_status last;     /* what the body's last statement returned */
} body_arg_t;

static ordo_status insert(ordo_pg_tx_t *tx, const char *k, ordo_error_t *err)
{
    const char *params[1] = {k};
    return ordo_pg_tx_query(tx, NULL, "INSERT INTO t (k, v) VALUES ($1::int, 1)", 1, params, NULL, err);
}

/* One insert, then (the first fail_first times) gives up with fail_with. */
static ordo_status insert_then_maybe_fail(ordo_pg_tx_t *tx, void *varg, ordo_error_t *err)
{
    body_arg_t *a = varg;
    ordo_status st = insert(tx, "1", err);
    if (st != ORDO_OK)
        return st;
    if (a->runs++ < a->fail_first)
        return ordo_error_set(err, a->fail_with, "the body gives up");
    return ORDO_OK;
}

static ordo_status nothing(ordo_pg_tx_t *tx, void *varg, ordo_error_t *err)
{
    body_arg_t *a = varg;
    (void)tx;
    (void)err;
    a->runs++;
    return ORDO_OK;
}

/* Its statements are the last: the COMMIT goes with them. Then the body
 * reports what the statement said (it may not undo anything). */
static ordo_status two_inserts_and_commit(ordo_pg_tx_t *tx, void *varg, ordo_error_t *err)
{
    body_arg_t *a = varg;
    const char *p1[1] = {"1"}, *p2[1] = {"2"};
    ordo_pg_stmt_t stmts[2] = {{NULL, "INSERT INTO t (k, v) VALUES ($1::int, 1)", 1, p1, NULL},
                               {NULL, "INSERT INTO t (k, v) VALUES ($1::int, 1)", 1, p2, NULL}};
    a->runs++;
    a->last = ordo_pg_tx_run_and_commit(tx, stmts, 2, err);
    for (int i = 0; i < 2; i++)
        PQclear(stmts[i].result);
    return a->last;
}

/* Kills its own connection from the other session after the first
 * statement, the first fail_first times. */
static ordo_status insert_then_lose_connection(ordo_pg_tx_t *tx, void *varg, ordo_error_t *err)
{
    body_arg_t *a = varg;
    ordo_status st = insert(tx, "1", err);
    if (st != ORDO_OK)
        return st;
    if (a->runs++ < a->fail_first)
        scalar(a->f->other, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE application_name = 'unit_pg'");
    return insert(tx, "2", err);
}

static ordo_status run(fixture_t *f, ordo_pg_tx_body_cb body, body_arg_t *a, int *retries, ordo_error_t *err)
{
    ordo_pg_transaction_t t = {.begin_sql = "BEGIN", .body = body, .arg = a, .policy = FAST};
    a->f = f;
    return ordo_pg_transact(f->pg, &t, retries, err);
}

/* ---- tests */

/* A body's statements commit together when it succeeds. */
static void body_commits(void **state)
{
    fixture_t *f = *state;
    body_arg_t a = {0};
    ordo_error_t err;
    int retries = 0;

    assert_int_equal(run(f, insert_then_maybe_fail, &a, &retries, &err), ORDO_OK);
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM t"), 1);
    assert_int_equal(retries, 0);
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'unit_pg'"
                                      " AND state <> 'idle'"), 0);   /* no transaction left open */
}

/* A body that gives up leaves nothing behind and the connection usable
 * (ROLLBACK), and is not run again for a failure that cannot pass. */
static void failed_body_rolls_back(void **state)
{
    fixture_t *f = *state;
    body_arg_t a = {.fail_first = 100, .fail_with = ORDO_INVALID};
    ordo_error_t err;
    int retries = 0;

    assert_int_equal(run(f, insert_then_maybe_fail, &a, &retries, &err), ORDO_INVALID);
    assert_string_equal(err.msg, "the body gives up");
    assert_int_equal(a.runs, 1);
    assert_int_equal(retries, 0);
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM t"), 0);
    assert_int_equal(scalar(f->pg, "SELECT count(*) FROM t"), 0);   /* not inside an aborted transaction */
}

/* ORDO_RETRY runs the whole transaction again: the first attempt's insert
 * is gone, so the second can make it again. */
static void retry_runs_again(void **state)
{
    fixture_t *f = *state;
    body_arg_t a = {.fail_first = 2, .fail_with = ORDO_RETRY};
    ordo_error_t err;
    int retries = 0;

    assert_int_equal(run(f, insert_then_maybe_fail, &a, &retries, &err), ORDO_OK);
    assert_int_equal(a.runs, 3);
    assert_int_equal(retries, 2);
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM t"), 1);
}

/* Retries are bounded: past the policy's attempts the caller is told the
 * database is unavailable, with the last reason. */
static void retries_are_bounded(void **state)
{
    fixture_t *f = *state;
    body_arg_t a = {.fail_first = 100, .fail_with = ORDO_RETRY};
    ordo_error_t err;
    int retries = 0;

    assert_int_equal(run(f, insert_then_maybe_fail, &a, &retries, &err), ORDO_UNAVAILABLE);
    assert_int_equal(a.runs, FAST.max_attempts);
    assert_int_equal(retries, FAST.max_attempts - 1);
    assert_non_null(strstr(err.msg, "gave up after 5 attempts: the body gives up"));
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM t"), 0);
}

/* A body that runs nothing commits nothing and succeeds. */
static void empty_body(void **state)
{
    fixture_t *f = *state;
    body_arg_t a = {0};
    ordo_error_t err;

    assert_int_equal(run(f, nothing, &a, NULL, &err), ORDO_OK);
    assert_int_equal(a.runs, 1);
}

/* The last statements and COMMIT in one round trip: committed when they
 * return; a unique violation among them is a conflict and commits nothing. */
static void run_and_commit(void **state)
{
    fixture_t *f = *state;
    body_arg_t a = {0};
    ordo_error_t err;

    assert_int_equal(run(f, two_inserts_and_commit, &a, NULL, &err), ORDO_OK);
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM t"), 2);
    assert_int_equal(ordo_pg_exec(f->other, "DELETE FROM t WHERE k = 1", &err), ORDO_OK);
    a = (body_arg_t){0};
    assert_int_equal(run(f, two_inserts_and_commit, &a, NULL, &err), ORDO_CONFLICT);   /* k = 2 is there */
    assert_int_equal(a.runs, 1);
    assert_non_null(strstr(err.msg, "23505"));
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM t"), 1);   /* k = 1 was not committed */
    assert_int_equal(scalar(f->pg, "SELECT count(*) FROM t"), 1);      /* and the connection is clean */
}

/* The connection lost in the middle of a body: the transaction runs again
 * on a new connection and commits once. */
static void lost_connection_runs_again(void **state)
{
    fixture_t *f = *state;
    body_arg_t a = {.fail_first = 1};
    ordo_error_t err;
    int retries = 0;

    assert_int_equal(run(f, insert_then_lose_connection, &a, &retries, &err), ORDO_OK);
    assert_int_equal(a.runs, 2);
    assert_int_equal(retries, 1);
    assert_int_equal(scalar(f->other, "SELECT count(*) FROM t"), 2);
}

/* A real serialization failure (40001): two REPEATABLE READ transactions
 * update one row; the one that loses runs again and then succeeds. */
typedef struct race {
    fixture_t *f;
    int runs;
} race_t;

static ordo_status update_after_other_commits(ordo_pg_tx_t *tx, void *varg, ordo_error_t *err)
{
    race_t *r = varg;
    ordo_status st;
    PGresult *res;

    /* the snapshot is taken here */
    if ((st = ordo_pg_tx_query(tx, NULL, "SELECT v FROM t WHERE k = 7", 0, NULL, &res, err)) != ORDO_OK)
        return st;
    PQclear(res);
    if (r->runs++ == 0 && ordo_pg_exec(r->f->other, "UPDATE t SET v = v + 1 WHERE k = 7", err) != ORDO_OK)
        return ORDO_INTERNAL;
    return ordo_pg_tx_query(tx, NULL, "UPDATE t SET v = v + 10 WHERE k = 7", 0, NULL, NULL, err);
}

static void serialization_failure_retried(void **state)
{
    fixture_t *f = *state;
    race_t r = {f, 0};
    ordo_pg_transaction_t t = {.begin_sql = "BEGIN ISOLATION LEVEL REPEATABLE READ",
                               .body = update_after_other_commits, .arg = &r, .policy = FAST};
    ordo_error_t err;
    int retries = 0;

    assert_int_equal(ordo_pg_exec(f->other, "INSERT INTO t VALUES (7, 0)", &err), ORDO_OK);
    assert_int_equal(ordo_pg_transact(f->pg, &t, &retries, &err), ORDO_OK);
    assert_int_equal(r.runs, 2);
    assert_int_equal(retries, 1);
    assert_int_equal(scalar(f->other, "SELECT v FROM t WHERE k = 7"), 11);
}

/* Outside a transaction: an idempotent statement survives a connection
 * lost since its last use; a plain query reports it. */
static void idempotent_after_restart(void **state)
{
    fixture_t *f = *state;
    ordo_error_t err;

    assert_int_equal(scalar(f->pg, "SELECT 1"), 1);
    scalar(f->other, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'unit_pg'");
    assert_int_equal(ordo_pg_query(f->pg, "SELECT 1", 0, NULL, NULL, &err), ORDO_UNAVAILABLE);
    assert_int_equal(ordo_pg_ensure(f->pg, &err), ORDO_OK);
    scalar(f->other, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'unit_pg'");
    assert_int_equal(ordo_pg_query_idempotent(f->pg, "SELECT 1", 0, NULL, NULL, &err), ORDO_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(body_commits, empty_table),
        cmocka_unit_test_setup(failed_body_rolls_back, empty_table),
        cmocka_unit_test_setup(retry_runs_again, empty_table),
        cmocka_unit_test_setup(retries_are_bounded, empty_table),
        cmocka_unit_test_setup(empty_body, empty_table),
        cmocka_unit_test_setup(run_and_commit, empty_table),
        cmocka_unit_test_setup(lost_connection_runs_again, empty_table),
        cmocka_unit_test_setup(serialization_failure_retried, empty_table),
        cmocka_unit_test_setup(idempotent_after_restart, empty_table),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
