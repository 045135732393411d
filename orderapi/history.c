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

/*
 * One history request: the stream is read page by page with asynchronous
 * calls (no server thread waits), each page's completion asking for the
 * next; the last renders the answer.
 */
typedef struct history_call {
    api_pending_t p;
    char id[ORDO_UUID_LEN];
    const char *own_customer;         /* a customer's key: the one customer it may see */
    char at[64];                      /* ?at= as given ("" for /events) */
    bool by_position;                 /* ?at= is a position, else a time (unix µs) */
    int64_t limit;
    int64_t from_position;            /* the next page starts after this */
    stream_t s;
} history_call_t;

/* Whether a key may see the order whose first event is @p first: staff
 * and no keys (@p own_customer NULL) see every order, a customer its own. */
static bool may_see(const char *own_customer, const Eventstore__Event *first)
{
    ordo_order_t order;
    ordo_error_t err;
    bool mine;

    if (own_customer == NULL)
        return true;
    if (ordo_order_from_event(first->event_data, strlen(first->event_data), &order, &err) != ORDO_OK)
        return false;
    mine = strcmp(order.customer_id, own_customer) == 0;
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

/* GET /api/orders/{id}/events: every event of the stream. */
static ordo_status render_events(const history_call_t *hc, ordo_http_response_t *resp, ordo_error_t *err)
{
    json_t *events = json_array();

    for (size_t i = 0; i < hc->s.n_events; i++)
        json_array_append_new(events, event_json(event_at(&hc->s, i)));
    return api_json_response(resp, 200, json_pack("{s:s, s:o}", "order_id", hc->id, "events", events), err);
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

/* GET /api/orders/{id}?at=: the stream folded up to the position or time. */
static ordo_status render_at(const history_call_t *hc, ordo_http_response_t *resp, ordo_error_t *err)
{
    ordo_order_state_t state;
    int64_t position = 0;
    ordo_status st = ORDO_OK;

    ordo_order_state_init(&state);
    for (size_t i = 0; i < hc->s.n_events && st == ORDO_OK; i++) {
        const Eventstore__Event *e = event_at(&hc->s, i);
        if ((hc->by_position ? e->position : e->created_at) > hc->limit)
            break;
        st = ordo_order_state_apply(&state, e->event_type, e->event_data, strlen(e->event_data), e->version,
                                    e->created_at, err);
        position = e->position;
    }
    if (st == ORDO_OK && state.version == 0)
        st = ordo_error_set(err, ORDO_NOT_FOUND, "order %s did not exist yet at %s", hc->id, hc->at);
    else if (st != ORDO_OK) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        st = ordo_error_set(err, ORDO_INTERNAL, "order %s cannot be folded: %s", hc->id, why);
    }
    if (st == ORDO_OK)
        st = api_json_response(resp, 200, state_json(&state, position), err);
    ordo_order_state_free(&state);
    return st;
}

/* ------------------------------------------------------------ reading */

/* The stream read, the answer made and given; frees @p hc. */
static void history_answer(history_call_t *hc, ordo_status st, ordo_error_t *err)
{
    ordo_http_response_t resp = {500, NULL, NULL, NULL, NULL, NULL};

    if (st == ORDO_OK && hc->s.n_events == 0)
        st = ordo_error_set(err, ORDO_NOT_FOUND, "order %s not found", hc->id);
    /* another customer's order does not exist for this key */
    if (st == ORDO_OK && !may_see(hc->own_customer, event_at(&hc->s, 0)))
        st = ordo_error_set(err, ORDO_NOT_FOUND, "order %s not found", hc->id);
    if (st == ORDO_OK)
        st = hc->at[0] != '\0' ? render_at(hc, &resp, err) : render_events(hc, &resp, err);
    if (st != ORDO_OK)
        ordo_http_fail(&resp, err);
    api_pending_answer(&hc->p, &resp);
    stream_free(&hc->s);
    free(hc);
}

static void page_read(void *arg, ordo_status st, ProtobufCMessage *msg, const ordo_error_t *call_err);

/* Asks for the next page of the stream (after hc->from_position). */
static ordo_status read_page(history_call_t *hc, ordo_error_t *err)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;

    if (hc->s.n_pages == (int)(sizeof hc->s.pages / sizeof hc->s.pages[0]))
        return ordo_error_set(err, ORDO_TOO_LARGE, "order %s has more than %d events", hc->id, MAX_EVENTS);
    req.aggregate_id = hc->id;
    req.limit = PAGE;
    req.from_position = hc->from_position;
    return ordo_es_read_async(hc->p.ctx->store, &req, hc->p.ctx->cfg->timeout_ms, page_read, hc, err);
}

/* A page came: keeps it, and asks for the next while the store says there is more. */
static void page_read(void *arg, ordo_status st, ProtobufCMessage *msg, const ordo_error_t *call_err)
{
    history_call_t *hc = arg;
    ordo_error_t err = st == ORDO_OK ? (ordo_error_t){0} : *call_err;
    Eventstore__GetEventsResponse *page = (Eventstore__GetEventsResponse *)msg;

    if (st != ORDO_OK) {
        history_answer(hc, api_upstream("the event store", &err), &err);
        return;
    }
    hc->s.pages[hc->s.n_pages++] = page;
    hc->s.n_events += page->n_events;
    if (!page->more || page->n_events == 0) {
        history_answer(hc, ORDO_OK, &err);
        return;
    }
    hc->from_position = page->events[page->n_events - 1]->position;
    if ((st = read_page(hc, &err)) != ORDO_OK)
        history_answer(hc, st == ORDO_TOO_LARGE ? st : api_upstream("the event store", &err), &err);
}

/* Reads order hc->id's stream and answers later. */
static ordo_status history_start(history_call_t *hc, api_ctx_t *ctx, const ordo_http_request_t *req,
                                 const struct timespec *t0, api_op op, ordo_http_response_t *resp, ordo_error_t *err)
{
    ordo_status st;

    if ((st = api_pending_take(&hc->p, ctx, req, t0, op, resp, err)) != ORDO_OK) {
        free(hc);
        return st;
    }
    if ((st = read_page(hc, err)) != ORDO_OK)
        history_answer(hc, st == ORDO_TOO_LARGE ? st : api_upstream("the event store", err), err);
    return ORDO_OK;
}

static history_call_t *history_new(const char *id, const api_key_t *who)
{
    history_call_t *hc = calloc(1, sizeof *hc);

    if (hc != NULL) {
        hc->own_customer = api_own_customer(who);
        snprintf(hc->id, sizeof hc->id, "%s", id);
    }
    return hc;
}

ordo_status api_order_events(api_ctx_t *ctx, const ordo_http_request_t *req, const struct timespec *t0, const char *id,
                             const api_key_t *who, ordo_http_response_t *resp, ordo_error_t *err)
{
    history_call_t *hc;

    if (!ordo_uuid_valid(id))
        return ordo_error_set(err, ORDO_INVALID, "order id must be a UUID");
    if ((hc = history_new(id, who)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    return history_start(hc, ctx, req, t0, API_EVENTS, resp, err);
}

ordo_status api_order_at(api_ctx_t *ctx, const ordo_http_request_t *req, const struct timespec *t0, const char *id,
                         const char *at, const api_key_t *who, ordo_http_response_t *resp, ordo_error_t *err)
{
    history_call_t *hc;
    ordo_status st;

    if (!ordo_uuid_valid(id))
        return ordo_error_set(err, ORDO_INVALID, "order id must be a UUID");
    if ((hc = history_new(id, who)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    if ((st = parse_at(at, &hc->by_position, &hc->limit, err)) != ORDO_OK) {
        free(hc);
        return st;
    }
    snprintf(hc->at, sizeof hc->at, "%s", at);   /* (parsed: short) */
    return history_start(hc, ctx, req, t0, API_GET, resp, err);
}
