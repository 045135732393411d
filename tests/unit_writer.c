/* The event store writer's decisions about a batch, apart from the
 * database (eventstore/batch.c): expected versions checked in queue order,
 * calls that share an event id deferred, and when the guarded one-round-trip
 * insert may take a batch (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "batch.h"

enum { MAX_CALLS = 8 };

/* A batch of calls, each of one or more events of one aggregate. */
typedef struct fixture {
    Eventstore__Event events[MAX_CALLS][2];
    Eventstore__Event *event_ptrs[MAX_CALLS][2];
    char ids[MAX_CALLS][2][37];
    es_append_t calls[MAX_CALLS];
    es_append_t *items[MAX_CALLS];
    es_head_t heads[MAX_CALLS];
    es_batch_t b;
} fixture_t;

/* Adds a call of @p n events (ids "<tag>-0", "<tag>-1") to @p aggregate, expecting @p expected. */
static es_append_t *call(fixture_t *f, const char *aggregate, const char *type, int64_t expected, size_t n,
                         const char *tag)
{
    size_t i = f->b.n++;
    es_append_t *a = &f->calls[i];

    for (size_t k = 0; k < n; k++) {
        Eventstore__Event *ev = &f->events[i][k];
        *ev = (Eventstore__Event)EVENTSTORE__EVENT__INIT;
        ev->aggregate_id = (char *)aggregate;
        ev->aggregate_type = (char *)type;
        f->event_ptrs[i][k] = ev;
        snprintf(f->ids[i][k], sizeof f->ids[i][k], "%s-%zu", tag, k);
    }
    *a = (es_append_t){.events = f->event_ptrs[i], .n = n, .ids = f->ids[i], .expected = expected};
    f->items[i] = a;
    return a;
}

static void init(fixture_t *f)
{
    memset(f, 0, sizeof *f);
    f->b.items = f->items;
    f->b.heads = f->heads;
}

/* Heads as the lookup found them: @p versions of @p aggregates, the
 * batch's n distinct aggregates in first-seen order (0: absent). */
static void read_heads(fixture_t *f, const char *const *aggregates, const int64_t *versions, size_t n)
{
    ordo_buf_t aggs = ORDO_BUF_INIT, want = ORDO_BUF_INIT;
    es_batch_collect_heads(&f->b, &aggs);
    assert_int_equal(f->b.n_heads, n);   /* one head per aggregate, however many calls */
    ordo_buf_pg_array_begin(&want);
    for (size_t i = 0; i < n; i++)
        ordo_buf_pg_array_text(&want, aggregates[i]);
    ordo_buf_pg_array_end(&want);
    assert_string_equal(ordo_buf_str(&aggs), ordo_buf_str(&want));
    ordo_buf_free(&want);
    for (size_t i = 0; i < n; i++) {
        es_head_t *h = es_batch_find_head(&f->b, aggregates[i]);
        assert_non_null(h);
        h->version = versions[i];
        h->exists = versions[i] > 0;
    }
    ordo_buf_free(&aggs);
}

/* Two calls on one aggregate in one batch: the first moves the head, the
 * second is checked against where the first left it. */
static void expected_versions_in_queue_order(void **state)
{
    fixture_t f;
    const char *aggs[] = {"o-1", "o-2"};
    const int64_t at[] = {3, 0};
    es_append_t *first, *second, *stale, *any, *created;
    (void)state;

    init(&f);
    first = call(&f, "o-1", "order", 3, 2, "a");     /* 3 -> 5 */
    second = call(&f, "o-1", "order", 5, 1, "b");    /* 5 -> 6: sees the first */
    stale = call(&f, "o-1", "order", 3, 1, "c");     /* 3 is gone: conflict */
    any = call(&f, "o-1", "order", -1, 1, "d");      /* any version: 6 -> 7 */
    created = call(&f, "o-2", "order", 0, 1, "e");   /* a new stream */
    read_heads(&f, aggs, at, 2);
    es_batch_reset(&f.b);
    es_batch_check_versions(&f.b);
    assert_int_equal(first->st, ORDO_OK);
    assert_int_equal(first->version, 5);
    assert_int_equal(second->st, ORDO_OK);
    assert_int_equal(second->version, 6);
    assert_int_equal(stale->st, ORDO_CONFLICT);
    assert_non_null(strstr(stale->msg, "wrong expected version 3: aggregate o-1 is at version 6"));
    assert_int_equal(any->version, 7);
    assert_int_equal(created->version, 1);
    assert_int_equal(es_batch_find_head(&f.b, "o-1")->version, 7);
    assert_true(es_batch_find_head(&f.b, "o-1")->touched);
}

/* A stream is of one aggregate type: a call naming another is refused as
 * invalid, and the head does not move for it. */
static void aggregate_type_is_kept(void **state)
{
    fixture_t f;
    const char *aggs[] = {"o-1"};
    const int64_t at[] = {2};
    es_append_t *wrong;
    (void)state;

    init(&f);
    wrong = call(&f, "o-1", "payment", -1, 1, "a");
    read_heads(&f, aggs, at, 1);
    snprintf(f.heads[0].stored_type, sizeof f.heads[0].stored_type, "order");
    f.heads[0].aggregate_type = f.heads[0].stored_type;
    es_batch_check_versions(&f.b);
    assert_int_equal(wrong->st, ORDO_INVALID);
    assert_non_null(strstr(wrong->msg, "is of type order, not payment"));
    assert_int_equal(f.heads[0].version, 2);
    assert_false(f.heads[0].touched);
}

/* A later call with an event id of an earlier live call waits for the next
 * batch; a refused earlier call does not hold it back. */
static void overlapping_ids_deferred(void **state)
{
    fixture_t f;
    es_append_t *a, *b, *c, *d;
    (void)state;

    init(&f);
    a = call(&f, "o-1", "order", -1, 2, "x");
    b = call(&f, "o-2", "order", -1, 1, "x");         /* "x-0" again: deferred */
    c = call(&f, "o-3", "order", -1, 1, "y");
    d = call(&f, "o-4", "order", -1, 1, "y");         /* "y-0" as c, but c was refused */
    es_batch_reset(&f.b);
    es_append_set_result(c, ORDO_INVALID, "refused");
    es_batch_defer_overlaps(&f.b);
    assert_false(a->deferred);
    assert_true(b->deferred);
    assert_false(es_batch_live(b));
    assert_false(d->deferred);
    assert_true(es_batch_live(d));
}

/* The guarded insert takes a batch only when every call names its expected
 * version on its own aggregate, nothing was left by it lately, and the call
 * itself was not left by it before. */
static void guarded_insert_takes_only_clear_batches(void **state)
{
    fixture_t f;
    es_append_t *a;
    (void)state;

    init(&f);
    a = call(&f, "o-1", "order", 0, 1, "a");
    call(&f, "o-2", "order", 4, 2, "b");
    assert_true(es_batch_guess_heads(&f.b));
    assert_int_equal(f.b.n_heads, 2);
    assert_int_equal(a->version, 1);
    assert_int_equal(f.heads[1].expected, 4);
    assert_int_equal(f.heads[1].version, 6);
    assert_true(f.heads[1].exists);
    assert_false(f.heads[0].exists);
    assert_ptr_equal(f.heads[0].call, a);

    init(&f);
    call(&f, "o-1", "order", 0, 1, "a");
    call(&f, "o-1", "order", 1, 1, "b");              /* two calls on one aggregate */
    assert_false(es_batch_guess_heads(&f.b));

    init(&f);
    call(&f, "o-1", "order", 0, 1, "a");
    call(&f, "o-2", "order", -1, 1, "b");             /* any version: needs the head read */
    assert_false(es_batch_guess_heads(&f.b));

    init(&f);
    call(&f, "o-1", "order", 0, 1, "a")->lookup = true;   /* left by it before */
    assert_false(es_batch_guess_heads(&f.b));

    init(&f);
    call(&f, "o-1", "order", 0, 1, "a");
    f.b.lookup = true;                                 /* the lane reads first for a while */
    assert_false(es_batch_guess_heads(&f.b));
}

/* A retried transaction starts every call afresh (a duplicate or a refusal
 * of the failed attempt does not stick), but a call the guarded insert left
 * keeps its mark. */
static void reset_for_a_retry(void **state)
{
    fixture_t f;
    es_append_t *a;
    (void)state;

    init(&f);
    a = call(&f, "o-1", "order", 0, 1, "a");
    es_append_set_result(a, ORDO_CONFLICT, "from the failed attempt");
    a->duplicate = a->deferred = a->lookup = true;
    a->version = 9;
    es_batch_reset(&f.b);
    assert_int_equal(a->st, ORDO_OK);
    assert_string_equal(a->msg, "");
    assert_false(a->duplicate);
    assert_false(a->deferred);
    assert_true(a->lookup);
    assert_int_equal(a->version, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(expected_versions_in_queue_order), cmocka_unit_test(aggregate_type_is_kept),
        cmocka_unit_test(overlapping_ids_deferred),         cmocka_unit_test(guarded_insert_takes_only_clear_batches),
        cmocka_unit_test(reset_for_a_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
