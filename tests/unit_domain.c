/* Unit tests of what the services agree on without a server: the bus
 * envelope (encoded by the relay, decoded by every consumer), the lane of an
 * aggregate, and the order events' documents (cmocka). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "ordo/envelope.h"
#include "ordo/order.h"

static const char *header_of(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK ? v : NULL;
}

/* An event with the envelope's required fields. */
static void set_event(Eventstore__Event *ev, const char *id, const char *type, const char *aggregate, const char *data)
{
    *ev = (Eventstore__Event)EVENTSTORE__EVENT__INIT;
    ev->event_id = (char *)id;
    ev->event_type = (char *)type;
    ev->aggregate_id = (char *)aggregate;
    ev->aggregate_type = "order";
    ev->event_data = (char *)data;
}

static void set_entry(Eventstore__Event__MetadataEntry *e, const char *key, const char *value)
{
    *e = (Eventstore__Event__MetadataEntry)EVENTSTORE__EVENT__METADATA_ENTRY__INIT;
    e->key = (char *)key;
    e->value = (char *)value;
}

/* What the relay writes is what a consumer reads, field by field. */
static void envelope_round_trip(void **state)
{
    Eventstore__Event ev;
    Eventstore__Event__MetadataEntry corr, cause, trace, other;
    Eventstore__Event__MetadataEntry *meta[] = {&corr, &cause, &trace, &other};
    ordo_bus_event_t got;
    natsMsg *m = NULL;
    (void)state;

    set_event(&ev, "0b6b3c44-64a6-4a7e-9a0e-5d7f2f1f7a01", "order-created", "o-1", "{\"a\":1}");
    ev.stream = "orders";
    ev.version = 3;
    ev.position = 9000000000LL;
    ev.created_at = 1764000000123LL;
    set_entry(&corr, "correlation_id", "corr-1");
    set_entry(&cause, "causation_id", "cause-1");
    set_entry(&trace, "traceparent", "00-abc-def-01");
    set_entry(&other, "tenant", "t-7");
    ev.metadata = meta;
    ev.n_metadata = 4;

    assert_int_equal(ordo_envelope_encode(&ev, &m), NATS_OK);
    assert_string_equal(natsMsg_GetSubject(m), "events.order.order-created");
    assert_string_equal(header_of(m, ORDO_HDR_STREAM), "orders");
    assert_string_equal(header_of(m, ORDO_HDR_CAUSATION_ID), "cause-1");
    assert_string_equal(header_of(m, "traceparent"), "00-abc-def-01");
    assert_string_equal(header_of(m, "Ordo-Meta-tenant"), "t-7");
    assert_int_equal(ordo_envelope_position(m), 9000000000LL);

    ordo_envelope_decode(m, &got);
    assert_string_equal(got.event_id, ev.event_id);
    assert_string_equal(got.event_type, ev.event_type);
    assert_string_equal(got.aggregate_id, ev.aggregate_id);
    assert_string_equal(got.aggregate_type, ev.aggregate_type);
    assert_string_equal(got.correlation_id, "corr-1");
    assert_int_equal(got.version, 3);
    assert_int_equal(got.position, 9000000000LL);
    assert_int_equal(got.created_at, 1764000000123LL);
    assert_int_equal(got.data_len, 7);
    assert_memory_equal(got.data, "{\"a\":1}", 7);
    assert_int_equal(got.delivered, 1);
    natsMsg_Destroy(m);
}

/* A message without the envelope (a stray publish) decodes to empty fields,
 * and one without a stream or metadata carries no such headers. */
static void envelope_missing_headers(void **state)
{
    Eventstore__Event ev;
    ordo_bus_event_t got;
    natsMsg *m = NULL;
    (void)state;

    assert_int_equal(natsMsg_Create(&m, "events.order.x", NULL, NULL, 0), NATS_OK);
    ordo_envelope_decode(m, &got);
    assert_string_equal(got.event_id, "");
    assert_string_equal(got.aggregate_id, "");
    assert_string_equal(got.correlation_id, "");
    assert_int_equal(got.version, 0);
    assert_int_equal(got.data_len, 0);
    assert_int_equal(ordo_envelope_position(m), -1);
    natsMsg_Destroy(m);

    set_event(&ev, "e", "t", "a", "{}");
    assert_int_equal(ordo_envelope_encode(&ev, &m), NATS_OK);
    assert_null(header_of(m, ORDO_HDR_STREAM));
    assert_null(header_of(m, ORDO_HDR_CORRELATION_ID));
    natsMsg_Destroy(m);
}

/* Subjects NATS could misroute are refused, not published. */
static void envelope_refuses_long_subjects(void **state)
{
    Eventstore__Event ev;
    char type[400];
    natsMsg *m = NULL;
    (void)state;

    memset(type, 'x', sizeof type - 1);
    type[sizeof type - 1] = '\0';
    set_event(&ev, "e", type, "a", "{}");
    assert_int_equal(ordo_envelope_encode(&ev, &m), NATS_INVALID_SUBJECT);
    assert_null(m);
}

/* The writer and every consumer spread aggregates the same way: stable,
 * within range, and over every lane. */
static void lanes(void **state)
{
    int seen[8] = {0};
    char id[32];
    (void)state;

    assert_int_equal(ordo_lane_of("", 8), (int)(2166136261u % 8u));
    assert_int_equal(ordo_lane_of("order-42", 1), 0);
    for (int i = 0; i < 1000; i++) {
        int lane;
        snprintf(id, sizeof id, "o-%d", i);
        lane = ordo_lane_of(id, 8);
        assert_in_range(lane, 0, 7);
        assert_int_equal(lane, ordo_lane_of(id, 8));
        seen[lane]++;
    }
    for (int i = 0; i < 8; i++)
        assert_true(seen[i] > 60);   /* 125 each if even */
}

static json_t *parsed(char *text)
{
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    free(text);
    return doc;
}

/* The follow-up documents: payment events without the restaurant, the
 * restaurant's with it; a reason only when there is one. */
static void outcome_documents(void **state)
{
    ordo_order_outcome_t failed = {.order_id = "o-1", .customer_id = "c-1", .amount_cents = 1250,
                                   .reason = "over the limit"};
    ordo_order_outcome_t approved = {.order_id = "o-1", .customer_id = "c-1", .restaurant_id = "r-1",
                                     .amount_cents = 1999};
    json_t *doc;
    char *text;
    (void)state;

    text = ordo_order_outcome_json(&failed);
    assert_string_equal(text, "{\"order_id\":\"o-1\",\"customer_id\":\"c-1\",\"amount\":12.5,\"amount_cents\":1250,"
                              "\"reason\":\"over the limit\"}");
    free(text);
    doc = parsed(ordo_order_outcome_json(&approved));
    assert_string_equal(json_string_value(json_object_get(doc, "restaurant_id")), "r-1");
    assert_true(json_real_value(json_object_get(doc, "amount")) == 19.99);
    assert_null(json_object_get(doc, "reason"));
    json_decref(doc);
}

/* A refund repeats the rejection's customer and amount; a rejection without
 * them is refused as invalid (the message is terminated, not retried). */
static void refund_document(void **state)
{
    const char *rejected = "{\"order_id\":\"o-2\",\"customer_id\":\"c-2\",\"restaurant_id\":\"r-1\","
                           "\"amount\":7,\"amount_cents\":700,\"reason\":\"item X is not available\"}";
    ordo_error_t err;
    char *out = NULL;
    json_t *doc;
    (void)state;

    assert_int_equal(ordo_order_refund_json("o-2", rejected, strlen(rejected), &out, &err), ORDO_OK);
    doc = parsed(out);
    assert_string_equal(json_string_value(json_object_get(doc, "customer_id")), "c-2");
    assert_int_equal(json_integer_value(json_object_get(doc, "amount_cents")), 700);
    assert_string_equal(json_string_value(json_object_get(doc, "reason")), "order rejected");
    assert_null(json_object_get(doc, "restaurant_id"));
    json_decref(doc);
    assert_int_equal(ordo_order_refund_json("o-2", "{\"amount_cents\":\"7\"}", 20, &out, &err), ORDO_INVALID);
    assert_null(out);
    assert_int_equal(ordo_order_refund_json("o-2", "not json", 8, &out, &err), ORDO_INVALID);
}

/* An order-created document reads back as written. */
static void order_created_round_trip(void **state)
{
    const char *body = "{\"customer_id\":\"c-1\",\"restaurant_id\":\"r-1\",\"order_items\":["
                       "{\"code\":\"P\",\"name\":\"Pizza\",\"unit_price\":12.5,\"quantity\":2},"
                       "{\"code\":\"S\",\"name\":\"Soda\",\"unit_price\":0.01,\"quantity\":3}]}";
    ordo_order_t o, back;
    ordo_error_t err;
    char *text;
    (void)state;

    assert_int_equal(ordo_order_from_request(body, strlen(body), 10, &o, &err), ORDO_OK);
    assert_int_equal(o.amount_cents, 2503);
    snprintf(o.order_id, sizeof o.order_id, "%s", "0b6b3c44-64a6-4a7e-9a0e-5d7f2f1f7a01");
    text = ordo_order_event_json(&o);
    assert_int_equal(ordo_order_from_event(text, strlen(text), &back, &err), ORDO_OK);
    assert_string_equal(back.order_id, o.order_id);
    assert_string_equal(back.restaurant_id, "r-1");
    assert_int_equal(back.n_items, 2);
    assert_int_equal(back.items[1].unit_price_cents, 1);
    assert_int_equal(back.amount_cents, 2503);
    free(text);
    ordo_order_free(&back);
    ordo_order_free(&o);
}

/* The fold the read model keeps: created, then each event's status, version and time. */
static void order_fold(void **state)
{
    const char *created = "{\"order_id\":\"0b6b3c44-64a6-4a7e-9a0e-5d7f2f1f7a01\",\"customer_id\":\"c-1\","
                          "\"restaurant_id\":\"r-1\",\"order_items\":[{\"code\":\"P\",\"name\":\"Pizza\","
                          "\"unit_price\":12.5,\"quantity\":2}]}";
    ordo_order_state_t s;
    ordo_error_t err;
    (void)state;

    ordo_order_state_init(&s);
    assert_int_equal(ordo_order_state_apply(&s, ORDO_EV_PAYMENT_DEBITED, "{}", 2, 1, 10, &err), ORDO_INVALID);
    assert_int_equal(ordo_order_state_apply(&s, ORDO_EV_ORDER_CREATED, created, strlen(created), 2, 10, &err),
                     ORDO_CONFLICT);
    assert_int_equal(ordo_order_state_apply(&s, ORDO_EV_ORDER_CREATED, created, strlen(created), 1, 10, &err), ORDO_OK);
    assert_string_equal(s.status, "Pending");
    assert_int_equal(s.order.amount_cents, 2500);
    assert_int_equal(ordo_order_state_apply(&s, ORDO_EV_PAYMENT_DEBITED, "{}", 2, 2, 20, &err), ORDO_OK);
    assert_int_equal(ordo_order_state_apply(&s, "note-added", "{}", 2, 3, 30, &err), ORDO_OK);
    assert_string_equal(s.status, "Paid");   /* an event of no status still advances version and time */
    assert_int_equal(s.version, 3);
    assert_int_equal(s.updated_at, 30);
    assert_int_equal(s.created_at, 10);
    assert_int_equal(ordo_order_state_apply(&s, ORDO_EV_ORDER_APPROVED, "{}", 2, 3, 40, &err), ORDO_CONFLICT);
    assert_int_equal(ordo_order_state_apply(&s, ORDO_EV_ORDER_APPROVED, "{}", 2, 4, 40, &err), ORDO_OK);
    assert_string_equal(s.status, "Approved");
    ordo_order_state_free(&s);
    assert_int_equal(s.version, 0);
}

int main(void)
{
    int failed;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(envelope_round_trip), cmocka_unit_test(envelope_missing_headers),
        cmocka_unit_test(envelope_refuses_long_subjects), cmocka_unit_test(lanes),
        cmocka_unit_test(outcome_documents), cmocka_unit_test(refund_document),
        cmocka_unit_test(order_created_round_trip), cmocka_unit_test(order_fold),
    };
    /* a message's destroy hands it to cnats' garbage collector: the library must be open */
    if (nats_Open(-1) != NATS_OK)
        return 1;
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    nats_Close();
    return failed;
}
