/*
 * An order's history, from the event store (docs/orderflow.md, "HTTP API"):
 *   GET /api/orders/{id}/events        its events in order
 *   GET /api/orders/{id}?at=POSITION   the order as it was after the last of its
 *   GET /api/orders/{id}?at=RFC3339       events at or before a position or a time
 * The order as it was is folded with the read model's own rules
 * (ordo_order_state_apply), so the two cannot disagree. Authorization is the
 * order's own: a customer's key sees only its customer's orders (another's
 * is 404, as for the order itself).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "eventstore.pb-c.h"
#include "order.pb-c.h"
#include "ordo/esclient.h"
#include "ordo/order.h"
#include "ordo/uuid.h"

enum {
    PAGE = 500,           /* events asked for at a time */
    MAX_EVENTS = 10000,   /* an order's stream longer than this is refused (the saga writes six at most) */
};

/* The events of one order, page by page (each page the caller's). */
typedef struct stream {
    Eventstore__GetEventsResponse *pages[MAX_EVENTS / PAGE + 1];
    int n_pages;
    size_t n_events;
} stream_t;

static void stream_free(stream_t *s)
{
    for (int i = 0; i < s->n_pages; i++)
        eventstore__get_events_response__free_unpacked(s->pages[i], NULL);
    s->n_pages = 0;
}

/* Event @p i of the stream (i < n_events). */
static const Eventstore__Event *event_at(const stream_t *s, size_t i)
{
    for (int p = 0; p < s->n_pages; i -= s->pages[p]->n_events, p++)
        if (i < s->pages[p]->n_events)
            return s->pages[p]->events[i];
    return NULL;
}

/* Reads every event of order @p id, in version order. ORDO_NOT_FOUND when it has none. */
static ordo_status read_stream(api_ctx_t *ctx, const char *id, stream_t *s, ordo_error_t *err)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
    bool more = true;

    memset(s, 0, sizeof *s);
    req.aggregate_id = (char *)id;
    req.limit = PAGE;
    while (more) {
        Eventstore__GetEventsResponse *page = NULL;
        if (s->n_pages == (int)(sizeof s->pages / sizeof s->pages[0])) {
            stream_free(s);
            return ordo_error_set(err, ORDO_TOO_LARGE, "order %s has more than %d events", id, MAX_EVENTS);
        }
        if (ordo_es_read(ctx->store, &req, ctx->cfg->timeout_ms, &page, err) != ORDO_OK) {
            stream_free(s);
            return api_upstream("the event store", err);
        }
        s->pages[s->n_pages++] = page;
        s->n_events += page->n_events;
        more = page->more && page->n_events > 0;
        if (page->n_events > 0)
            req.from_position = page->events[page->n_events - 1]->position;
    }
    if (s->n_events == 0)
        return ordo_error_set(err, ORDO_NOT_FOUND, "order %s not found", id);
    return ORDO_OK;
}

/* Whether the key may see the order whose first event is @p first: staff
 * and no keys see every order, a customer its own. */
static bool may_see(const api_key_t *who, const Eventstore__Event *first)
{
    ordo_order_t order;
    ordo_error_t err;
    bool mine;

    if (api_own_customer(who) == NULL)
        return true;
    if (ordo_order_from_event(first->event_data, strlen(first->event_data), &order, &err) != ORDO_OK)
        return false;
    mine = strcmp(order.customer_id, api_own_customer(who)) == 0;
    ordo_order_free(&order);
    return mine;
}

/* @p us (unix µs) as RFC 3339 in UTC with microseconds. */
static void rfc3339(int64_t us, char out[40])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%06lldZ", (long long)(us % 1000000));
}

static json_t *event_json(const Eventstore__Event *e)
{
    char at[40];
    const char *cause = ordo_es_event_meta(e, "causation_id"), *corr = ordo_es_event_meta(e, "correlation_id");
    json_t *data = json_loads(e->event_data, 0, NULL);

    const char *tp = ordo_es_event_meta(e, "traceparent"), *svc = ordo_es_event_meta(e, "service");

    rfc3339(e->created_at, at);
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:o, s:o, s:o, s:o, s:o}", "event_id", e->event_id, "type",
                     e->event_type, "version", (json_int_t)e->version, "position", (json_int_t)e->position,
                     "created_at", (json_int_t)e->created_at, "time", at, "causation_id",
                     cause ? json_string(cause) : json_null(), "correlation_id", corr ? json_string(corr) : json_null(),
                     "traceparent", tp ? json_string(tp) : json_null(), "service", svc ? json_string(svc) : json_null(),
                     "data", data != NULL ? data : json_string(e->event_data));
}

ordo_status api_order_events(api_ctx_t *ctx, const char *id, const api_key_t *who, ordo_http_response_t *resp,
                             ordo_error_t *err)
{
    stream_t s;
    json_t *events;
    ordo_status st;

    if (!ordo_uuid_valid(id))
        return ordo_error_set(err, ORDO_INVALID, "order id must be a UUID");
    if ((st = read_stream(ctx, id, &s, err)) != ORDO_OK)
        return st;
    if (!may_see(who, event_at(&s, 0))) {
        stream_free(&s);
        return ordo_error_set(err, ORDO_NOT_FOUND, "order %s not found", id);
    }
    events = json_array();
    for (size_t i = 0; i < s.n_events; i++)
        json_array_append_new(events, event_json(event_at(&s, i)));
    stream_free(&s);
    return api_json_response(resp, 200, json_pack("{s:s, s:o}", "order_id", id, "events", events), err);
}

/* Parses "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" into unix µs. */
static bool parse_rfc3339(const char *text, int64_t *us)
{
    struct tm tm = {0};
    int consumed = 0, frac_digits = 0, zh = 0, zm = 0;
    long long frac = 0;
    const char *p;
    char sign;

    if (sscanf(text, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &consumed) != 6 || consumed != 19)
        return false;
    p = text + consumed;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, frac_digits++)
            if (frac_digits < 6)
                frac = frac * 10 + (*p - '0');
        if (frac_digits == 0)
            return false;
        for (int d = frac_digits; d < 6; d++)
            frac *= 10;
    }
    sign = *p == ' ' ? '+' : *p;   /* an unencoded '+' in a query string arrives as a space */
    if (sign == 'Z' || sign == 'z') {
        p++;
    } else if ((sign == '+' || sign == '-') && sscanf(p + 1, "%2d:%2d%n", &zh, &zm, &consumed) == 2 && consumed == 5) {
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0' || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60 || zh > 23 || zm > 59)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    int64_t secs = (int64_t)timegm(&tm) - (sign == '+' ? 1 : sign == '-' ? -1 : 0) * (zh * 3600 + zm * 60);
    *us = secs * 1000000 + frac;
    return true;
}

/* ?at=: a position (digits) or a time. */
static ordo_status parse_at(const char *at, bool *by_position, int64_t *value, ordo_error_t *err)
{
    char *end = NULL;
    long long v = strtoll(at, &end, 10);

    if (*at >= '0' && *at <= '9' && *end == '\0') {
        if (v > 0) {
            *by_position = true;
            *value = v;
            return ORDO_OK;
        }
    } else if (parse_rfc3339(at, value)) {
        *by_position = false;
        return ORDO_OK;
    }
    return ordo_error_set(err, ORDO_INVALID,
                          "at must be a position (a positive integer) or an RFC 3339 time such as 2026-12-04T16:00:00Z");
}

/* The state as an Order__Order (borrowing its strings), for the read model's JSON. */
static json_t *state_json(const ordo_order_state_t *st, int64_t position)
{
    Order__Order o = ORDER__ORDER__INIT;
    Order__OrderItem *items = calloc(st->order.n_items + 1, sizeof *items);
    Order__OrderItem **ptrs = calloc(st->order.n_items + 1, sizeof *ptrs);
    json_t *doc = NULL;

    if (items != NULL && ptrs != NULL) {
        for (size_t i = 0; i < st->order.n_items; i++) {
            order__order_item__init(&items[i]);
            items[i].code = st->order.items[i].code;
            items[i].name = st->order.items[i].name;
            items[i].unit_price = ordo_cents_to_units(st->order.items[i].unit_price_cents);
            items[i].quantity = st->order.items[i].quantity;
            ptrs[i] = &items[i];
        }
        o.order_id = (char *)st->order.order_id;
        o.customer_id = st->order.customer_id;
        o.restaurant_id = st->order.restaurant_id;
        o.status = (char *)st->status;
        o.amount = ordo_cents_to_units(st->order.amount_cents);
        o.version = st->version;
        o.created_at = st->created_at;
        o.updated_at = st->updated_at;
        o.n_items = st->order.n_items;
        o.items = ptrs;
        if ((doc = api_order_json(&o)) != NULL)
            json_object_set_new(doc, "as_of_position", json_integer((json_int_t)position));
    }
    free(items);
    free(ptrs);
    return doc;
}

ordo_status api_order_at(api_ctx_t *ctx, const char *id, const char *at, const api_key_t *who,
                         ordo_http_response_t *resp, ordo_error_t *err)
{
    ordo_order_state_t state;
    int64_t limit = 0, position = 0;
    bool by_position = true;
    stream_t s;
    ordo_status st;

    if (!ordo_uuid_valid(id))
        return ordo_error_set(err, ORDO_INVALID, "order id must be a UUID");
    if ((st = parse_at(at, &by_position, &limit, err)) != ORDO_OK || (st = read_stream(ctx, id, &s, err)) != ORDO_OK)
        return st;
    if (!may_see(who, event_at(&s, 0))) {
        stream_free(&s);
        return ordo_error_set(err, ORDO_NOT_FOUND, "order %s not found", id);
    }
    ordo_order_state_init(&state);
    for (size_t i = 0; i < s.n_events && st == ORDO_OK; i++) {
        const Eventstore__Event *e = event_at(&s, i);
        if ((by_position ? e->position : e->created_at) > limit)
            break;
        st = ordo_order_state_apply(&state, e->event_type, e->event_data, strlen(e->event_data), e->version,
                                    e->created_at, err);
        position = e->position;
    }
    stream_free(&s);
    if (st == ORDO_OK && state.version == 0)
        st = ordo_error_set(err, ORDO_NOT_FOUND, "order %s did not exist yet at %s", id, at);
    else if (st != ORDO_OK) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        st = ordo_error_set(err, ORDO_INTERNAL, "order %s cannot be folded: %s", id, why);
    }
    if (st == ORDO_OK)
        st = api_json_response(resp, 200, state_json(&state, position), err);
    ordo_order_state_free(&state);
    return st;
}
