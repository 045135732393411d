/*
 * Routes of orderapi (docs/orderflow.md, "HTTP API"):
 *   POST /api/orders            → order-created through the event store, 201
 *   GET  /api/orders/{id}       → the read model (orderquery), 200/404
 *   GET  /api/orders?customer_id=&status=&limit=&after=
 *   GET  /api/orders/{id}/events, GET /api/orders/{id}?at= (history.c)
 *   GET  /api/orders/changes    → Server-Sent Events of the read model's changes (feed.c)
 *   GET  /healthz, GET /metrics, GET /openapi.json (docs/openapi.json: every route here)
 *   GET  /console, /console/console.js, /console/console.css: the web console (docs/console.md)
 * Errors are JSON {"error":{"code","message"}}; the store or read model
 * being down is 503, never a hang: every call has a deadline.
 */
#include "api.h"
#include "feed.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "eventstore.pb-c.h"
#include "order.pb-c.h"
#include "ordo/esclient.h"
#include "ordo/log.h"
#include "ordo/order.h"
#include "ordo/trace.h"
#include "ordo/uuid.h"

/* Namespace of order ids derived from an Idempotency-Key (UUID v5). */
#define IDEMPOTENCY_NS "8f4b7c2e-3d5a-5b6e-9c1f-2a7d4e8b0c31"
#define ORDERS_PATH "/api/orders"
/* /healthz's calls: a monitor wants an answer soon, down or not */
#define HEALTH_TIMEOUT_MS 1000

void api_init(api_ctx_t *ctx)
{
    static const char *const ops[API_OPS] = {
        [API_CREATE] = "method=\"POST\",route=\"/api/orders\"", [API_LIST] = "method=\"GET\",route=\"/api/orders\"",
        [API_GET] = "method=\"GET\",route=\"/api/orders/{id}\"",
        [API_EVENTS] = "method=\"GET\",route=\"/api/orders/{id}/events\"",
        [API_CHANGES] = "method=\"GET\",route=\"/api/orders/changes\"",
        [API_CONSOLE] = "method=\"GET\",route=\"/console\"",
        [API_WHOAMI] = "method=\"GET\",route=\"/api/whoami\"",
        [API_HEALTHZ] = "method=\"GET\",route=\"/healthz\"",
        [API_METRICS] = "method=\"GET\",route=\"/metrics\"", [API_OPENAPI] = "method=\"GET\",route=\"/openapi.json\"",
        [API_OTHER] = "method=\"other\",route=\"other\""};

    for (int op = 0; op < API_OPS; op++) {
        snprintf(ctx->labels[op][0], sizeof ctx->labels[op][0], "%s", ops[op]);
        for (int c = 0; c < 5; c++) {
            snprintf(ctx->labels[op][c + 1], sizeof ctx->labels[op][c + 1], "%s,code=\"%dxx\"", ops[op], c + 1);
            ctx->by_class[op][c] = ordo_metrics_counter(&ctx->metrics, "ordo_http_requests_total",
                                                        ctx->labels[op][c + 1],
                                                        "HTTP requests answered, by route and status class");
        }
    }
    for (int op = 0; op < API_OPS; op++)
        ctx->latency[op] = ordo_metrics_histogram_labelled(&ctx->metrics, "ordo_http_request_duration_seconds",
                                                           ctx->labels[op][0], "time to answer an HTTP request, by route");
    ctx->created = ordo_metrics_counter(&ctx->metrics, "ordo_orders_created_total", "", "orders accepted (201)");
    ctx->replayed = ordo_metrics_counter(&ctx->metrics, "ordo_orders_replayed_total", "",
                                         "POSTs answered from an earlier one with the same Idempotency-Key");
    ctx->metrics_endpoint = (ordo_metrics_endpoint_t){api_render_metrics, ctx};
}

/* Answers @p status with @p doc (taken). */
ordo_status api_json_response(ordo_http_response_t *resp, int status, json_t *doc, ordo_error_t *err)
{
    resp->status = status;
    resp->body = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(doc);
    return resp->body != NULL ? ORDO_OK : ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
}

/* A failed call to the store or the read model: for the HTTP client, any
 * failure on their side, and their refusing orderapi's own identity, means
 * the service is unavailable for now. */
ordo_status api_upstream(const char *who, ordo_error_t *err)
{
    if (ordo_http_code_of(err->code) >= 500 || err->code == ORDO_UNAUTHENTICATED || err->code == ORDO_FORBIDDEN) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return ordo_error_set(err, ORDO_UNAVAILABLE, "%s is unavailable: %s", who, msg);
    }
    return err->code;
}

/* --------------------------------------------------------------- POST */

static json_t *created_body(const char *event_json)
{
    json_t *doc = json_loads(event_json, 0, NULL);
    if (doc != NULL) {
        json_object_del(doc, "amount_cents");
        json_object_set_new(doc, "status", json_string("Pending"));
    }
    return doc;
}

static bool key_ok(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return false;
    return true;
}

/* A customer's key acts for its customer alone (NULL: keys are off, or staff). */
const char *api_own_customer(const api_key_t *who)
{
    return who != NULL && !who->staff ? who->customer : NULL;
}

/* The order-created event's trace context: a child of the request's
 * traceparent, or a new trace when it has none (or a malformed one, which
 * the W3C spec says to ignore); the tracestate goes along with a valid
 * parent only (at most 512 visible characters). */
static const char *trace_of(const ordo_http_request_t *req, char traceparent[ORDO_TRACEPARENT_LEN])
{
    const char *state = ordo_http_header(req, "tracestate");
    ordo_trace_t parent, span;
    bool traced = ordo_trace_parse(ordo_http_header(req, "traceparent"), &parent);

    ordo_trace_child(traced ? &parent : NULL, &span);
    ordo_trace_format(&span, traceparent);
    if (!traced || state == NULL || strlen(state) > 512)
        return NULL;
    for (const char *p = state; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return NULL;
    return state;
}

/*
 * A POST waits on the event store without holding a server thread: the
 * append is asynchronous, and so is the read of the stored event when the
 * store says the order was there already (an Idempotency-Key used again).
 * The answer goes out from the gRPC client's completion thread.
 */
typedef struct post_call {
    api_pending_t p;
    char event_id[ORDO_UUID_LEN], order_id[ORDO_UUID_LEN], traceparent[ORDO_TRACEPARENT_LEN];
    char key[129];                     /* the Idempotency-Key, "" when none */
    char *event_json;                  /* the order-created event's data */
    long long amount_cents;
    bool duplicate;                    /* the store had the event already */
} post_call_t;

static void post_call_free(post_call_t *pc)
{
    free(pc->event_json);
    free(pc);
}

/* The POST's answer from the store's outcome @p st (*@p err when not OK); frees @p pc. */
static void post_answer(post_call_t *pc, ordo_status st, ordo_error_t *err)
{
    ordo_http_response_t resp = {500, NULL, NULL, NULL, NULL, NULL};

    if (st == ORDO_OK)
        st = api_json_response(&resp, 201, created_body(pc->event_json), err);
    if (st == ORDO_OK) {
        if (pc->duplicate) {
            resp.header_name = "Idempotent-Replayed";
            resp.header_value = "true";
        }
        ordo_metric_inc(pc->duplicate ? pc->p.ctx->replayed : pc->p.ctx->created);
        ORDO_DEBUG(pc->duplicate ? "order replayed" : "order created", "order_id=%s amount_cents=%lld trace_id=%.32s",
                   pc->order_id, pc->amount_cents, pc->traceparent + 3);
    } else {
        if (st != ORDO_CONFLICT && st != ORDO_NO_MEMORY)
            api_upstream("the event store", err);
        ordo_http_fail(&resp, err);
    }
    api_pending_answer(&pc->p, &resp);
    post_call_free(pc);
}

/* The stored order-created event, read back for a repeated key: the same order, or 409. */
static void post_compared(void *arg, ordo_status st, ProtobufCMessage *msg, const ordo_error_t *call_err)
{
    post_call_t *pc = arg;
    ordo_error_t err = st == ORDO_OK ? (ordo_error_t){0} : *call_err;

    if (st == ORDO_OK) {
        Eventstore__GetEventsResponse *r = (Eventstore__GetEventsResponse *)msg;
        bool same = false;
        if (r->n_events == 1) {
            json_t *a = json_loads(r->events[0]->event_data, 0, NULL), *b = json_loads(pc->event_json, 0, NULL);
            same = a != NULL && b != NULL && json_equal(a, b);
            json_decref(a);
            json_decref(b);
        }
        protobuf_c_message_free_unpacked(msg, NULL);
        if (!same)
            st = ordo_error_set(&err, ORDO_CONFLICT, "Idempotency-Key %s was used for a different order", pc->key);
    }
    post_answer(pc, st, &err);
}

static void post_appended(void *arg, ordo_status st, const ordo_es_result_t *res, const ordo_error_t *call_err)
{
    post_call_t *pc = arg;
    ordo_error_t err = st == ORDO_OK ? (ordo_error_t){0} : *call_err;

    if (st == ORDO_OK && res->duplicate) {   /* is the stored order-created the same order? */
        Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
        req.event_id = pc->event_id;
        pc->duplicate = true;
        st = ordo_es_read_async(pc->p.ctx->store, &req, pc->p.ctx->cfg->timeout_ms, post_compared, pc, &err);
        if (st == ORDO_OK)
            return;
    }
    post_answer(pc, st, &err);
}

/* Appends @p order's order-created event, answering later. */
static ordo_status post_append(api_ctx_t *ctx, const ordo_http_request_t *req, const struct timespec *t0,
                               const char *key, ordo_order_t *order, ordo_http_response_t *resp, ordo_error_t *err)
{
    post_call_t *pc = calloc(1, sizeof *pc);
    ordo_status st;

    if (pc == NULL || (pc->event_json = ordo_order_event_json(order)) == NULL) {
        free(pc);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    pc->amount_cents = (long long)order->amount_cents;
    snprintf(pc->order_id, sizeof pc->order_id, "%s", order->order_id);
    snprintf(pc->key, sizeof pc->key, "%s", key != NULL ? key : "");
    ordo_order_followup_id(order->order_id, ORDO_EV_ORDER_CREATED, pc->event_id);
    const char *tracestate = trace_of(req, pc->traceparent);
    ordo_es_event_t ev = {.event_id = pc->event_id, .event_type = ORDO_EV_ORDER_CREATED,
                          .aggregate_id = pc->order_id, .aggregate_type = ORDO_ORDER_AGGREGATE,
                          .data = pc->event_json, .correlation_id = pc->order_id, .traceparent = pc->traceparent,
                          .tracestate = tracestate, .service = "orderapi"};
    if ((st = api_pending_take(&pc->p, ctx, req, t0, API_CREATE, resp, err)) != ORDO_OK) {
        post_call_free(pc);
        return st;
    }
    if ((st = ordo_es_append_async(ctx->store, &ev, 0, ctx->cfg->timeout_ms, post_appended, pc, err)) != ORDO_OK)
        post_answer(pc, st, err);   /* (the later answer, at once) */
    return ORDO_OK;
}

static ordo_status post_order(api_ctx_t *ctx, const ordo_http_request_t *req, const api_key_t *who,
                              const struct timespec *t0, ordo_http_response_t *resp, ordo_error_t *err)
{
    const char *ctype = ordo_http_header(req, "Content-Type"), *key = ordo_http_header(req, "Idempotency-Key");
    char name[300];
    ordo_order_t order;
    ordo_status st;

    if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0) {   /* HTTP's own: no status */
        ordo_http_error(resp, 415, "unsupported_media_type", "send the order as Content-Type: application/json");
        return ORDO_OK;
    }
    if (key != NULL && !key_ok(key))
        return ordo_error_set(err, ORDO_INVALID, "Idempotency-Key must be 1 to 128 visible ASCII characters");
    if ((st = ordo_order_from_request(req->body, req->body_len, ctx->cfg->max_items, &order, err)) != ORDO_OK)
        return st;
    if (api_own_customer(who) != NULL && strcmp(order.customer_id, api_own_customer(who)) != 0) {
        ordo_order_free(&order);
        return ordo_error_set(err, ORDO_FORBIDDEN, "this API key places orders for its own customer only");
    }
    /* A key names one order of one customer: the same key, the same order id and event id. */
    if (key != NULL) {
        snprintf(name, sizeof name, "%s\n%s", order.customer_id, key);   /* both <= 128 bytes */
        ordo_uuid_v5(IDEMPOTENCY_NS, name, order.order_id);
    } else {
        ordo_uuid_v4(order.order_id);
    }
    st = post_append(ctx, req, t0, key, &order, resp, err);
    ordo_order_free(&order);
    return st;
}

/* ---------------------------------------------------------------- GET */

json_t *api_order_json(const Order__Order *o)
{
    json_t *items = json_array();
    for (size_t i = 0; i < o->n_items; i++)
        json_array_append_new(items, json_pack("{s:s, s:s, s:f, s:i}", "code", o->items[i]->code, "name",
                                               o->items[i]->name, "unit_price", o->items[i]->unit_price,
                                               "quantity", o->items[i]->quantity));
    return json_pack("{s:s, s:s, s:s, s:s, s:f, s:I, s:I, s:I, s:o}", "order_id", o->order_id, "customer_id",
                     o->customer_id, "restaurant_id", o->restaurant_id, "status", o->status, "amount", o->amount,
                     "version", (json_int_t)o->version, "created_at", (json_int_t)o->created_at, "updated_at",
                     (json_int_t)o->updated_at, "order_items", items);
}

/*
 * A GET answered from one read-model call, without holding a server thread:
 * the call is asynchronous and `render` makes the answer from its outcome on
 * the client's completion thread.
 */
typedef struct api_read api_read_t;
typedef ordo_status (*api_render_fn)(const api_read_t *rd, ordo_status st, ProtobufCMessage *msg,
                                     ordo_http_response_t *resp, ordo_error_t *err);

struct api_read {
    api_pending_t p;
    api_render_fn render;              /* takes the answer (msg: NULL unless st is ORDO_OK) */
    char id[ORDO_UUID_LEN];            /* GET /api/orders/{id}: the id asked for */
    const char *own_customer;          /* a customer's key: the one customer it may see (ctx->keys) */
};

static void read_done(void *arg, ordo_status st, ProtobufCMessage *msg, const ordo_error_t *call_err)
{
    api_read_t *rd = arg;
    ordo_error_t err = st == ORDO_OK ? (ordo_error_t){0} : *call_err;
    ordo_http_response_t resp = {500, NULL, NULL, NULL, NULL, NULL};

    if (rd->render(rd, st, msg, &resp, &err) != ORDO_OK)
        ordo_http_fail(&resp, &err);
    api_pending_answer(&rd->p, &resp);
    free(rd);
}

/* Starts @p rd's call of @p method with @p request, answering later. */
static ordo_status read_later(api_read_t *rd, api_ctx_t *ctx, const ordo_http_request_t *req,
                              const struct timespec *t0, api_op op, const char *method,
                              const ProtobufCMessage *request, const ProtobufCMessageDescriptor *desc,
                              ordo_http_response_t *resp, ordo_error_t *err)
{
    ordo_status st;

    if ((st = api_pending_take(&rd->p, ctx, req, t0, op, resp, err)) != ORDO_OK) {
        free(rd);
        return st;
    }
    if ((st = ordo_grpc_client_unary_async(ctx->query, method, request, desc, ctx->cfg->timeout_ms, NULL, read_done,
                                           rd, err)) != ORDO_OK)
        read_done(rd, st, NULL, err);   /* (the later answer, at once) */
    return ORDO_OK;
}

static api_read_t *read_new(api_render_fn render, const api_key_t *who)
{
    api_read_t *rd = calloc(1, sizeof *rd);
    if (rd != NULL)
        *rd = (api_read_t){.render = render, .own_customer = api_own_customer(who)};
    return rd;
}

static ordo_status render_order(const api_read_t *rd, ordo_status st, ProtobufCMessage *msg,
                                ordo_http_response_t *resp, ordo_error_t *err)
{
    if (st != ORDO_OK)
        return st == ORDO_NOT_FOUND ? ordo_error_set(err, ORDO_NOT_FOUND, "order %s not found", rd->id)
                                    : api_upstream("the read model", err);
    /* another customer's order does not exist for this key: ids cannot be probed */
    if (rd->own_customer != NULL && strcmp(((Order__Order *)msg)->customer_id, rd->own_customer) != 0)
        st = ordo_error_set(err, ORDO_NOT_FOUND, "order %s not found", rd->id);
    else
        st = api_json_response(resp, 200, api_order_json((Order__Order *)msg), err);
    protobuf_c_message_free_unpacked(msg, NULL);
    return st;
}

static ordo_status get_order(api_ctx_t *ctx, const ordo_http_request_t *hreq, const struct timespec *t0,
                             const char *id, const api_key_t *who, ordo_http_response_t *resp, ordo_error_t *err)
{
    Order__GetOrderRequest req = ORDER__GET_ORDER_REQUEST__INIT;
    api_read_t *rd;

    if (!ordo_uuid_valid(id))
        return ordo_error_set(err, ORDO_INVALID, "order id must be a UUID");
    if ((rd = read_new(render_order, who)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    snprintf(rd->id, sizeof rd->id, "%s", id);
    req.order_id = rd->id;
    return read_later(rd, ctx, hreq, t0, API_GET, "/order.OrderQuery/GetOrder", &req.base, &order__order__descriptor,
                      resp, err);
}

static ordo_status render_list(const api_read_t *rd, ordo_status st, ProtobufCMessage *msg,
                               ordo_http_response_t *resp, ordo_error_t *err)
{
    Order__ListOrdersResponse *r = (Order__ListOrdersResponse *)msg;
    json_t *orders, *doc;
    (void)rd;

    if (st != ORDO_OK)
        return api_upstream("the read model", err);
    orders = json_array();
    for (size_t i = 0; i < r->n_orders; i++)
        json_array_append_new(orders, api_order_json(r->orders[i]));
    doc = json_pack("{s:o, s:s?}", "orders", orders, "next", r->next[0] ? r->next : NULL);
    st = api_json_response(resp, 200, doc, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    return st;
}

static ordo_status list_orders(api_ctx_t *ctx, const ordo_http_request_t *hreq, const struct timespec *t0,
                               const api_key_t *who, ordo_http_response_t *resp, ordo_error_t *err)
{
    Order__ListOrdersRequest req = ORDER__LIST_ORDERS_REQUEST__INIT;
    const char *customer = ordo_http_query(hreq, "customer_id"), *status = ordo_http_query(hreq, "status");
    const char *limit = ordo_http_query(hreq, "limit"), *after = ordo_http_query(hreq, "after");
    api_read_t *rd;
    char *end = NULL;

    if (limit != NULL) {
        long v = strtol(limit, &end, 10);
        if (end == limit || *end != '\0' || v < 1 || v > 500)
            return ordo_error_set(err, ORDO_INVALID, "limit must be an integer from 1 to 500");
        req.limit = (int32_t)v;
    }
    if (api_own_customer(who) != NULL && customer == NULL)
        return ordo_error_set(err, ORDO_FORBIDDEN, "listing every customer's orders needs a staff key: "
                                                   "add customer_id=<this key's customer>");
    if (api_own_customer(who) != NULL && strcmp(customer, api_own_customer(who)) != 0)
        return ordo_error_set(err, ORDO_FORBIDDEN, "this API key reads its own customer's orders only");
    if (status != NULL && !ordo_order_status_valid(status))
        return ordo_error_set(err, ORDO_INVALID,
                              "status must be one of Pending, Paid, PaymentFailed, Approved, Rejected, Refunded");
    req.customer_id = (char *)(customer ? customer : "");
    req.status = (char *)(status ? status : "");
    req.after = (char *)(after ? after : "");
    if ((rd = read_new(render_list, who)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    return read_later(rd, ctx, hreq, t0, API_LIST, "/order.OrderQuery/ListOrders", &req.base,
                      &order__list_orders_response__descriptor, resp, err);
}

/* GET /api/whoami: what the request's key may do (the console asks, to know whose orders it shows). */
static json_t *whoami_json(const api_ctx_t *ctx, const api_key_t *who)
{
    if (who == NULL)   /* (keys off: anyone may do everything) */
        return json_pack("{s:b, s:s}", "keys", ctx->keys.n > 0, "scope", "anyone");
    if (who->staff)
        return json_pack("{s:b, s:s}", "keys", true, "scope", "staff");
    return json_pack("{s:b, s:s, s:s}", "keys", true, "scope", "customer", "customer_id", who->customer);
}

/* GET /api/orders/changes[?customer_id=]: a customer's key follows its own customer's orders. */
static ordo_status follow_changes(api_ctx_t *ctx, const ordo_http_request_t *req, const api_key_t *who,
                                  ordo_http_response_t *resp, ordo_error_t *err)
{
    const char *customer = ordo_http_query(req, "customer_id"), *own = api_own_customer(who);

    if (customer != NULL && (customer[0] == '\0' || strlen(customer) > 128))
        return ordo_error_set(err, ORDO_INVALID, "customer_id must be 1 to 128 characters");
    if (own != NULL && customer != NULL && strcmp(customer, own) != 0)
        return ordo_error_set(err, ORDO_FORBIDDEN, "this API key follows its own customer's orders only");
    return api_feed_subscribe(ctx->feed, req, own != NULL ? own : customer, resp, err);
}

/* The event store's figures for /healthz: its outbox backlog, stuck orders
 * and each durable consumer's lag (what the console's health panel shows). */
static void health_store_figures(json_t *doc, const Eventstore__StatsResponse *s)
{
    json_t *consumers = json_array();

    for (size_t i = 0; i < s->n_consumers; i++)
        json_array_append_new(consumers, json_pack("{s:s, s:I, s:I, s:I}", "name", s->consumers[i]->name, "pending",
                                                   (json_int_t)s->consumers[i]->pending, "ack_pending",
                                                   (json_int_t)s->consumers[i]->ack_pending, "parked",
                                                   (json_int_t)s->consumers[i]->parked));
    json_object_set_new(doc, "outbox_backlog", json_integer(s->outbox_backlog));
    json_object_set_new(doc, "stuck_orders", json_integer(s->stuck));
    json_object_set_new(doc, "consumers", consumers);
}

/* GET /healthz asks the store and the read model at once, each call
 * asynchronous; whichever answers second makes the answer. */
typedef struct health_call {
    api_pending_t p;
    atomic_int left;                       /* calls not yet ended */
    ProtobufCMessage *stats;               /* Eventstore__StatsResponse; NULL: the store did not answer */
    ProtobufCMessage *health;              /* Order__HealthResponse; NULL: the read model did not answer */
} health_call_t;

static void health_answer(health_call_t *hc)
{
    ordo_http_response_t resp = {500, NULL, NULL, NULL, NULL, NULL};
    const Order__HealthResponse *health = (const Order__HealthResponse *)hc->health;
    bool store = hc->stats != NULL, query = health != NULL;
    bool db = query && health->database, bus = query && health->bus;
    ordo_error_t err;
    json_t *doc;

    /* degraded is an answer, not a failure: the body says what is down */
    doc = json_pack("{s:s, s:b, s:b, s:b, s:b, s:b, s:b}", "status", store && db ? "ok" : "degraded", "eventstore",
                    store, "orderquery", query, "database", db, "bus", bus, "changes_feed",
                    api_feed_up(hc->p.ctx->feed), "api_keys", hc->p.ctx->keys.n > 0);
    if (store && doc != NULL)
        health_store_figures(doc, (const Eventstore__StatsResponse *)hc->stats);
    if (api_json_response(&resp, store && db ? 200 : 503, doc, &err) != ORDO_OK)
        ordo_http_fail(&resp, &err);
    api_pending_answer(&hc->p, &resp);
    if (store)
        protobuf_c_message_free_unpacked(hc->stats, NULL);
    if (query)
        protobuf_c_message_free_unpacked(hc->health, NULL);
    free(hc);
}

/* One of the two calls ended: its answer into @p slot; the second to end answers. */
static void health_part(health_call_t *hc, ProtobufCMessage **slot, ordo_status st, ProtobufCMessage *msg)
{
    *slot = st == ORDO_OK ? msg : NULL;
    if (atomic_fetch_sub(&hc->left, 1) == 1)
        health_answer(hc);
}

static void health_stats_done(void *arg, ordo_status st, ProtobufCMessage *msg, const ordo_error_t *err)
{
    health_call_t *hc = arg;
    (void)err;
    health_part(hc, &hc->stats, st, msg);
}

static void health_query_done(void *arg, ordo_status st, ProtobufCMessage *msg, const ordo_error_t *err)
{
    health_call_t *hc = arg;
    (void)err;
    health_part(hc, &hc->health, st, msg);
}

static ordo_status healthz(api_ctx_t *ctx, const ordo_http_request_t *req, const struct timespec *t0,
                           ordo_http_response_t *resp, ordo_error_t *err)
{
    Eventstore__StatsRequest sreq = EVENTSTORE__STATS_REQUEST__INIT;
    Order__HealthRequest hreq = ORDER__HEALTH_REQUEST__INIT;
    health_call_t *hc = calloc(1, sizeof *hc);
    ordo_error_t call_err;
    ordo_status st;

    if (hc == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    atomic_init(&hc->left, 2);
    if ((st = api_pending_take(&hc->p, ctx, req, t0, API_HEALTHZ, resp, err)) != ORDO_OK) {
        free(hc);
        return st;
    }
    if (ordo_grpc_client_unary_async(ctx->store, "/eventstore.EventStoreAdmin/GetStats", &sreq.base,
                                     &eventstore__stats_response__descriptor, HEALTH_TIMEOUT_MS, NULL,
                                     health_stats_done, hc, &call_err) != ORDO_OK)
        health_stats_done(hc, call_err.code, NULL, &call_err);
    if (ordo_grpc_client_unary_async(ctx->query, "/order.OrderQuery/Health", &hreq.base,
                                     &order__health_response__descriptor, HEALTH_TIMEOUT_MS, NULL, health_query_done,
                                     hc, &call_err) != ORDO_OK)
        health_query_done(hc, call_err.code, NULL, &call_err);
    return ORDO_OK;
}

void api_render_metrics(void *vctx, ordo_buf_t *out)
{
    api_ctx_t *ctx = vctx;

    ordo_metrics_render(&ctx->metrics, out);
    api_feed_render_metrics(ctx->feed, out);
    ordo_process_metrics_render(out);
}

/* ------------------------------------------------------------- routing */

/* The files orderapi serves from its binary. */
typedef struct static_file {
    const char *path, *content_type, *text;
    api_op op;
} static_file_t;

/* The console's pages load only what orderapi serves, and no other site may frame them. */
#define CONSOLE_CSP "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

static const static_file_t *static_file(const char *path)
{
    static const static_file_t files[] = {
        {"/openapi.json", "application/json", api_openapi_json, API_OPENAPI},
        {"/console", "text/html; charset=utf-8", api_console_html, API_CONSOLE},
        {"/console/console.js", "text/javascript; charset=utf-8", api_console_js, API_CONSOLE},
        {"/console/console.css", "text/css; charset=utf-8", api_console_css, API_CONSOLE},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (strcmp(path, files[i].path) == 0)
            return &files[i];
    return NULL;
}

/* HTTP's own answer, not a status of ours. */
static ordo_status method_not_allowed(ordo_http_response_t *resp, const char *allow)
{
    ordo_http_error(resp, 405, "method_not_allowed", "allowed here: %s", allow);
    resp->header_name = "Allow";
    resp->header_value = allow;
    return ORDO_OK;
}

/* Runs the request's handler: ORDO_OK when it filled @p resp, else the
 * status (and *@p err) that ordo_http_fail renders. *@p op: what it was. */
static ordo_status route(api_ctx_t *ctx, const ordo_http_request_t *req, const struct timespec *t0,
                         ordo_http_response_t *resp, api_op *op, ordo_error_t *err)
{
    /* HEAD is GET without the body (libmicrohttpd leaves the body out) */
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    bool post = strcmp(req->method, "POST") == 0;
    size_t n = strlen(ORDERS_PATH);

    bool orders = strcmp(req->path, ORDERS_PATH) == 0 || strcmp(req->path, ORDERS_PATH "/") == 0;
    bool changes = strcmp(req->path, ORDERS_PATH "/changes") == 0;
    bool whoami = strcmp(req->path, "/api/whoami") == 0;
    bool under = !orders && !changes && strncmp(req->path, ORDERS_PATH "/", n + 1) == 0;
    const char *slash = under ? strchr(req->path + n + 1, '/') : NULL;
    bool one = under && slash == NULL;
    bool events = under && slash != NULL && strcmp(slash, "/events") == 0;
    char id[ORDO_UUID_LEN + 1] = "";
    const api_key_t *who = NULL;

    *op = API_OTHER;
    if (get)
        *op = orders ? API_LIST : one ? API_GET : events ? API_EVENTS : changes ? API_CHANGES : whoami ? API_WHOAMI
                                                                                                      : API_OTHER;
    if (events)   /* (an id of the wrong length is refused as no UUID) */
        snprintf(id, sizeof id, "%.*s", (int)(slash - (req->path + n + 1)), req->path + n + 1);
    else if (post && orders)
        *op = API_CREATE;
    /* orders need a key when keys are on; /healthz and /metrics stay open */
    if ((orders || one || events || changes || whoami) && ctx->keys.n > 0 &&
        (who = api_keys_find(&ctx->keys, ordo_http_header(req, "Authorization"))) == NULL) {
        resp->header_name = "WWW-Authenticate";
        resp->header_value = "Bearer realm=\"ordo\"";
        return ordo_error_set(err, ORDO_UNAUTHENTICATED, "an API key is required: Authorization: Bearer <key>");
    }
    if (orders) {
        if (post)
            return post_order(ctx, req, who, t0, resp, err);
        return get ? list_orders(ctx, req, t0, who, resp, err) : method_not_allowed(resp, "GET, HEAD, POST");
    }
    if (whoami)
        return get ? api_json_response(resp, 200, whoami_json(ctx, who), err) : method_not_allowed(resp, "GET, HEAD");
    if (changes)   /* (a stream has no HEAD: its headers alone say nothing) */
        return strcmp(req->method, "GET") == 0 ? follow_changes(ctx, req, who, resp, err) : method_not_allowed(resp, "GET");
    if (one && get && ordo_http_query(req, "at") != NULL)
        return api_order_at(ctx, req, t0, req->path + n + 1, ordo_http_query(req, "at"), who, resp, err);
    if (one)
        return get ? get_order(ctx, req, t0, req->path + n + 1, who, resp, err) : method_not_allowed(resp, "GET, HEAD");
    if (events)
        return get ? api_order_events(ctx, req, t0, id, who, resp, err) : method_not_allowed(resp, "GET, HEAD");
    if (strcmp(req->path, "/healthz") == 0 || (strcmp(req->path, "/metrics") == 0 && ctx->cfg->metrics_addr[0] == '\0')) {
        if (!get)
            return method_not_allowed(resp, "GET, HEAD");
        if (req->path[1] == 'h') {
            *op = API_HEALTHZ;
            return healthz(ctx, req, t0, resp, err);
        }
        *op = API_METRICS;
        ordo_http_metrics_page(&ctx->metrics_endpoint, resp);
        return ORDO_OK;
    }
    const static_file_t *file = static_file(req->path);
    if (file != NULL) {   /* the API's description and the console: open, like /healthz (the console asks for a key) */
        if (!get)
            return method_not_allowed(resp, "GET, HEAD");
        *op = file->op;
        resp->status = 200;
        resp->content_type = file->content_type;
        if (file->op == API_CONSOLE) {
            resp->header_name = "Content-Security-Policy";
            resp->header_value = CONSOLE_CSP;
        }
        resp->body = strdup(file->text);
        return resp->body != NULL ? ORDO_OK : ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    return ordo_error_set(err, ORDO_NOT_FOUND, "no route for %.200s", req->path);
}

/* A handler's response status meaning "answered later" (api_pending_take). */
#define API_LATER 0

/* A request answered: its count by status class, its latency from @p t0, a debug line. */
static void api_account(api_ctx_t *ctx, api_op op, const struct timespec *t0, const char *method, const char *path,
                        int status)
{
    struct timespec t1;
    int cls = status / 100 - 1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (cls >= 0 && cls < 5)
        ordo_metric_inc(ctx->by_class[op][cls]);
    ordo_metric_observe_us(ctx->latency[op], (t1.tv_sec - t0->tv_sec) * 1000000LL + (t1.tv_nsec - t0->tv_nsec) / 1000);
    ORDO_DEBUG("http", "method=%s path=%s status=%d", method, path, status);
}

ordo_status api_pending_take(api_pending_t *p, api_ctx_t *ctx, const ordo_http_request_t *req,
                             const struct timespec *t0, api_op op, ordo_http_response_t *resp, ordo_error_t *err)
{
    ordo_status st;

    *p = (api_pending_t){.ctx = ctx, .op = op, .t0 = *t0};
    snprintf(p->method, sizeof p->method, "%s", req->method);
    snprintf(p->path, sizeof p->path, "%s", req->path);
    if ((st = ordo_http_respond_later(req, &p->later, err)) == ORDO_OK)
        resp->status = API_LATER;
    return st;
}

void api_pending_answer(api_pending_t *p, ordo_http_response_t *resp)
{
    api_account(p->ctx, p->op, &p->t0, p->method, p->path, resp->status);
    ordo_http_answer(p->later, resp);
}

void api_handle(void *vctx, const ordo_http_request_t *req, ordo_http_response_t *resp)
{
    api_ctx_t *ctx = vctx;
    struct timespec t0;
    ordo_error_t err;
    api_op op;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (route(ctx, req, &t0, resp, &op, &err) != ORDO_OK)
        ordo_http_fail(resp, &err);
    if (resp->status != API_LATER)   /* (else counted when the answer goes) */
        api_account(ctx, op, &t0, req->method, req->path, resp->status);
}
