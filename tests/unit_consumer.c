/* The durable consumer's decisions (lib/consumer.c) against a real
 * nats-server (tests/run_with.sh nats starts one and passes
 * ORDO_TEST_NATS_URL): an acknowledged message is done; one the handler
 * holds (WAIT) is handed again, round after round, without spending a
 * delivery; one that keeps failing (RETRY) spends its deliveries and is
 * parked after the last; a poison one (TERM) is parked at once and never
 * redelivered; a message that is no Ordo event is parked unseen; a replay
 * for another durable is acknowledged unseen; a batch handler sees only
 * what still waits; one aggregate's messages keep their order; a consumer
 * that stops hands back what its standing pull request brought (cmocka). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ordo/consumer.h"
#include "ordo/envelope.h"
#include "ordo/retry.h"
#include "ordo/uuid.h"

#define UNIT_NS "6ba7b810-9dad-11d1-80b4-00c04fd430c8"

enum { MAX_CALLS = 256 };

/* What the handler saw, and what it answers per aggregate. */
typedef struct seen {
    pthread_mutex_t mu;
    int n;
    char aggregate[MAX_CALLS][32];
    int64_t version[MAX_CALLS];
    uint64_t delivered[MAX_CALLS];
    int round[MAX_CALLS];
    int batch_size[MAX_CALLS];
    int wait_rounds;   /* "wait-*" aggregates answer WAIT for this many rounds, then ACK */
    char subject[128]; /* the consumer's filter (it keeps the pointer) */
} seen_t;

static ordo_msg_action decide(seen_t *s, const ordo_bus_event_t *ev)
{
    if (strncmp(ev->aggregate_id, "slow-", 5) == 0)
        ordo_sleep_ms(1000);
    if (strncmp(ev->aggregate_id, "wait-", 5) == 0)
        return ev->round <= s->wait_rounds ? ORDO_MSG_WAIT : ORDO_MSG_ACK;
    if (strncmp(ev->aggregate_id, "retry-", 6) == 0)
        return ORDO_MSG_RETRY;
    if (strncmp(ev->aggregate_id, "poison-", 7) == 0)
        return ORDO_MSG_TERM;
    return ORDO_MSG_ACK;
}

static void record(seen_t *s, const ordo_bus_event_t *ev, int batch)
{
    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_CALLS) {
        snprintf(s->aggregate[s->n], sizeof s->aggregate[s->n], "%s", ev->aggregate_id);
        s->version[s->n] = ev->version;
        s->delivered[s->n] = ev->delivered;
        s->round[s->n] = ev->round;
        s->batch_size[s->n] = batch;
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
}

static ordo_msg_action on_event(void *ctx, int lane, const ordo_bus_event_t *ev)
{
    (void)lane;
    record(ctx, ev, 1);
    return decide(ctx, ev);
}

static void on_batch(void *ctx, int lane, const ordo_bus_event_t *events, int n, ordo_msg_action *actions)
{
    (void)lane;
    for (int i = 0; i < n; i++) {
        record(ctx, &events[i], n);
        actions[i] = decide(ctx, &events[i]);
    }
}

/* Calls seen for @p aggregate; their rounds and deliveries in @p rounds / @p delivered (may be NULL). */
static int calls_for(seen_t *s, const char *aggregate, int *rounds, uint64_t *delivered)
{
    int k = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->aggregate[i], aggregate) == 0) {
            if (rounds != NULL)
                rounds[k] = s->round[i];
            if (delivered != NULL)
                delivered[k] = s->delivered[i];
            k++;
        }
    pthread_mutex_unlock(&s->mu);
    return k;
}

typedef struct fixture {
    const char *url;
    ordo_bus_t *bus;
} fixture_t;

static int setup(void **state)
{
    static fixture_t f;
    ordo_bus_config_t cfg;
    ordo_error_t err;

    f.url = getenv("ORDO_TEST_NATS_URL");
    cfg = (ordo_bus_config_t){.url = f.url, .name = "unit_consumer", .connect_timeout_ms = 2000};
    if (f.url == NULL || ordo_bus_connect(&cfg, &f.bus, &err) != ORDO_OK ||
        ordo_bus_ensure_streams(f.bus, NULL, &err) != ORDO_OK) {
        fprintf(stderr, "unit_consumer: %s\n", f.url == NULL ? "ORDO_TEST_NATS_URL is not set" : err.msg);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    ordo_bus_destroy(f->bus);
    return 0;
}

/* Publishes version @p version of @p aggregate (type @p type) as the relay would. */
static void publish(fixture_t *f, const char *type, const char *aggregate, int64_t version)
{
    Eventstore__Event ev = EVENTSTORE__EVENT__INIT;
    char name[64], id[ORDO_UUID_LEN];
    natsMsg *m = NULL;
    jsErrCode jerr = 0;

    snprintf(name, sizeof name, "%s-%s-%lld", type, aggregate, (long long)version);
    assert_true(ordo_uuid_v5(UNIT_NS, name, id));
    ev.event_id = id;
    ev.position = version;
    ev.event_type = (char *)type;
    ev.aggregate_id = (char *)aggregate;
    ev.aggregate_type = "unit";
    ev.event_data = "{}";
    ev.version = version;
    assert_int_equal(ordo_envelope_encode(&ev, &m), NATS_OK);
    assert_int_equal(js_PublishMsg(NULL, ordo_bus_js(f->bus), m, NULL, &jerr), NATS_OK);
    natsMsg_Destroy(m);
}

static ordo_consumer_t *start(fixture_t *f, const char *durable, const char *type, seen_t *s, bool batch,
                              int concurrency)
{
    ordo_consumer_config_t cfg;
    ordo_consumer_t *c = NULL;
    ordo_error_t err;

    snprintf(s->subject, sizeof s->subject, "events.unit.%s", type);
    ordo_consumer_config_init(&cfg);
    cfg.nats_url = f->url;
    cfg.durable = durable;
    cfg.filter_subject = s->subject;
    cfg.max_deliver = 3;
    cfg.retry_delay_ms = 100;
    cfg.concurrency = concurrency;
    cfg.batch_handler = batch ? on_batch : NULL;
    pthread_mutex_init(&s->mu, NULL);
    assert_int_equal(ordo_consumer_start(&cfg, on_event, s, &c, &err), ORDO_OK);
    return c;
}

/* Waits (bounded) until @p aggregate has been seen @p n times. */
static void wait_calls(seen_t *s, const char *aggregate, int n, int timeout_ms)
{
    for (int waited = 0; calls_for(s, aggregate, NULL, NULL) < n && waited < timeout_ms; waited += 20)
        ordo_sleep_ms(20);
}

/* The durable's state as JetStream tells it. */
static ordo_bus_lag_t lag_of(fixture_t *f, const char *durable)
{
    ordo_bus_lag_t *lags = NULL, found = {0};
    ordo_error_t err;
    size_t n = 0;

    assert_int_equal(ordo_bus_lags(f->bus, &lags, &n, &err), ORDO_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(lags[i].name, durable) == 0)
            found = lags[i];
    free(lags);
    return found;
}

/* Waits (bounded) until the durable has nothing pending or unacknowledged. */
static ordo_bus_lag_t settled(fixture_t *f, const char *durable)
{
    ordo_bus_lag_t l = lag_of(f, durable);
    for (int waited = 0; (l.pending > 0 || l.ack_pending > 0) && waited < 10000; waited += 50) {
        ordo_sleep_ms(50);
        l = lag_of(f, durable);
    }
    return l;
}

static void stop(ordo_consumer_t *c, seen_t *s)
{
    ordo_consumer_destroy(c);
    pthread_mutex_destroy(&s->mu);
}

/* The reason of the last message @p durable parked ("" when none). */
static void parked_reason(fixture_t *f, const char *durable, char *out, size_t cap)
{
    char subject[96];
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    const char *v = NULL;

    out[0] = '\0';
    snprintf(subject, sizeof subject, ORDO_PARKED_PREFIX "%s", durable);
    if (js_GetLastMsg(&m, ordo_bus_js(f->bus), ORDO_PARKED_STREAM, subject, NULL, &jerr) != NATS_OK)
        return;
    if (natsMsgHeader_Get(m, ORDO_HDR_PARKED_REASON, &v) == NATS_OK && v != NULL)
        snprintf(out, cap, "%s", v);
    natsMsg_Destroy(m);
}

/* Publishes a raw message on @p subject with no Ordo headers. */
static void publish_raw(fixture_t *f, const char *subject, const char *replay_for)
{
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    assert_int_equal(natsMsg_Create(&m, subject, NULL, "{}", 2), NATS_OK);
    if (replay_for != NULL)
        natsMsgHeader_Set(m, ORDO_HDR_REPLAY_FOR, replay_for);
    assert_int_equal(js_PublishMsg(NULL, ordo_bus_js(f->bus), m, NULL, &jerr), NATS_OK);
    natsMsg_Destroy(m);
}

/* Held messages are handed again with a rising round and the same
 * delivery; once the handler can act they are acknowledged. */
static void wait_spends_no_delivery(void **state)
{
    fixture_t *f = *state;
    seen_t s = {.wait_rounds = 3};
    int rounds[8];
    uint64_t delivered[8];
    ordo_consumer_t *c = start(f, "unit-wait", "held", &s, false, 2);
    ordo_bus_lag_t l;

    publish(f, "held", "wait-1", 1);
    wait_calls(&s, "wait-1", 4, 10000);
    assert_int_equal(calls_for(&s, "wait-1", rounds, delivered), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(rounds[i], i + 1);
        assert_int_equal(delivered[i], 1);   /* no delivery spent while held */
    }
    l = settled(f, "unit-wait");
    assert_int_equal(l.ack_pending, 0);
    assert_int_equal(l.redelivered, 0);
    stop(c, &s);
}

/* A message that keeps failing spends a delivery each time and is
 * parked after max_deliver, with why: not handed again. */
static void retry_spends_deliveries_then_parks(void **state)
{
    fixture_t *f = *state;
    seen_t s = {0};
    uint64_t delivered[8];
    ordo_consumer_t *c = start(f, "unit-retry", "failing", &s, false, 1);

    publish(f, "failing", "retry-1", 1);
    wait_calls(&s, "retry-1", 3, 10000);
    ordo_sleep_ms(1000);   /* a fourth delivery would have come by now (retry delay 100 ms) */
    assert_int_equal(calls_for(&s, "retry-1", NULL, delivered), 3);
    assert_int_equal(delivered[0], 1);
    assert_int_equal(delivered[1], 2);
    assert_int_equal(delivered[2], 3);
    assert_int_equal(settled(f, "unit-retry").ack_pending, 0);
    char reason[256];
    parked_reason(f, "unit-retry", reason, sizeof reason);
    assert_non_null(strstr(reason, "failed on each of its 3 deliveries"));
    assert_int_equal(ordo_consumer_parked(c), 1);
    stop(c, &s);
}

/* A poison message is handled once and never again; the next is unaffected. */
static void poison_is_not_redelivered(void **state)
{
    fixture_t *f = *state;
    seen_t s = {0};
    ordo_consumer_t *c = start(f, "unit-poison", "bad", &s, false, 1);

    publish(f, "bad", "poison-1", 1);
    publish(f, "bad", "fine-1", 1);
    wait_calls(&s, "fine-1", 1, 10000);
    ordo_sleep_ms(500);
    assert_int_equal(calls_for(&s, "poison-1", NULL, NULL), 1);
    assert_int_equal(calls_for(&s, "fine-1", NULL, NULL), 1);
    assert_int_equal(settled(f, "unit-poison").ack_pending, 0);
    char reason[256];
    parked_reason(f, "unit-poison", reason, sizeof reason);
    assert_non_null(strstr(reason, "refused by the service"));
    stop(c, &s);
}

/* A message without Ordo's headers never reaches the handler: it is parked
 * with the reason, not acknowledged silently; a replayed copy meant for
 * another durable is acknowledged unread. */
static void foreign_messages_are_parked_or_skipped(void **state)
{
    fixture_t *f = *state;
    seen_t s = {0};
    ordo_consumer_t *c = start(f, "unit-foreign", "foreign", &s, false, 1);
    char reason[256];

    publish_raw(f, "events.unit.foreign", NULL);
    publish_raw(f, "events.unit.foreign", "some-other-durable");
    publish(f, "foreign", "after-1", 1);
    wait_calls(&s, "after-1", 1, 10000);
    assert_int_equal(settled(f, "unit-foreign").ack_pending, 0);
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.n, 1);   /* only the Ordo event reached the handler */
    pthread_mutex_unlock(&s.mu);
    parked_reason(f, "unit-foreign", reason, sizeof reason);
    assert_non_null(strstr(reason, "not an Ordo event"));
    assert_int_equal(ordo_consumer_parked(c), 1);   /* the header-less one; the replay was skipped */
    stop(c, &s);
}

/* With a batch handler, the rounds after the first hand over only the
 * messages that still wait, and each aggregate's messages keep their order. */
static void batch_handler_gets_only_the_waiting(void **state)
{
    fixture_t *f = *state;
    seen_t s = {.wait_rounds = 2};
    ordo_consumer_t *c;
    int rounds[8];

    /* queued before the consumer starts, so that one fetch takes them together */
    for (int v = 1; v <= 3; v++)
        publish(f, "mixed", "ok-1", v);
    publish(f, "mixed", "wait-2", 1);
    c = start(f, "unit-batch", "mixed", &s, true, 1);
    wait_calls(&s, "wait-2", 3, 10000);
    assert_int_equal(calls_for(&s, "wait-2", rounds, NULL), 3);
    assert_int_equal(rounds[2], 3);
    assert_int_equal(calls_for(&s, "ok-1", NULL, NULL), 3);   /* acknowledged in round 1: not handed again */
    pthread_mutex_lock(&s.mu);
    for (int i = 0, v = 1; i < s.n; i++) {
        if (strcmp(s.aggregate[i], "ok-1") == 0)
            assert_int_equal(s.version[i], v++);             /* in stream order */
        if (strcmp(s.aggregate[i], "wait-2") == 0 && s.round[i] > 1)
            assert_int_equal(s.batch_size[i], 1);            /* alone in the later rounds */
    }
    pthread_mutex_unlock(&s.mu);
    assert_int_equal(settled(f, "unit-batch").ack_pending, 0);
    stop(c, &s);
}

/* Messages the standing pull request brought while the consumer was busy
 * are handed back when it stops: the next consumer of the durable gets them
 * at once, not after AckWait (30 s). */
static void a_stop_hands_back_what_came(void **state)
{
    fixture_t *f = *state;
    seen_t first = {0}, second = {0};
    ordo_consumer_t *a = start(f, "unit-handback", "handback", &first, false, 1), *b;
    int64_t t0;

    publish(f, "handback", "slow-1", 1);
    wait_calls(&first, "slow-1", 1, 10000);   /* its handler is busy for a second now */
    for (int v = 1; v <= 20; v++)
        publish(f, "handback", "later-1", v);
    ordo_sleep_ms(200);                       /* they reached the consumer's inbox */
    stop(a, &first);
    t0 = ordo_mono_ms();
    b = start(f, "unit-handback", "handback", &second, false, 1);
    wait_calls(&second, "later-1", 20 - calls_for(&first, "later-1", NULL, NULL), 5000);
    assert_int_equal(calls_for(&first, "later-1", NULL, NULL) + calls_for(&second, "later-1", NULL, NULL), 20);
    assert_true(calls_for(&second, "later-1", NULL, NULL) > 0);   /* the first stopped while they waited */
    assert_true(ordo_mono_ms() - t0 < 5000);
    assert_int_equal(settled(f, "unit-handback").ack_pending, 0);
    stop(b, &second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wait_spends_no_delivery),
        cmocka_unit_test(retry_spends_deliveries_then_parks),
        cmocka_unit_test(foreign_messages_are_parked_or_skipped),
        cmocka_unit_test(poison_is_not_redelivered),
        cmocka_unit_test(batch_handler_gets_only_the_waiting),
        cmocka_unit_test(a_stop_hands_back_what_came),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
