/*
 * Routes of orderapi (docs/orderflow.md, "HTTP API"):
 *   POST /api/orders            → order-created through the event store, 201
 *   GET  /api/orders/{id}       → the read model (orderquery), 200/404
 *   GET  /api/orders?customer_id=&status=&limit=&after=
 *   GET  /healthz, GET /metrics
 * Errors are JSON {"error":{"code","message"}}; the store or read model
 * being down is 503, never a hang: every call has a deadline.
 */
#include "api.h"

#include <jansson.h>
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
#include "ordo/uuid.h"

/* Namespace of order ids derived from an Idempotency-Key (UUID v5). */
#define IDEMPOTENCY_NS "8f4b7c2e-3d5a-5b6e-9c1f-2a7d4e8b0c31"
#define ORDERS_PATH "/api/orders"

void api_init(api_ctx_t *ctx)
{
    static const char *classes[5] = {"code=\"1xx\"", "code=\"2xx\"", "code=\"3xx\"", "code=\"4xx\"", "code=\"5xx\""};
    for (int i = 0; i < 5; i++)
        ctx->by_class[i] = ordo_metrics_counter(&ctx->metrics, "ordo_http_requests_total", classes[i],
                                                "HTTP requests answered, by status class");
    ctx->created = ordo_metrics_counter(&ctx->metrics, "ordo_orders_created_total", "", "orders accepted (201)");
    ctx->replayed = ordo_metrics_counter(&ctx->metrics, "ordo_orders_replayed_total", "",
                                         "POSTs answered from an earlier one with the same Idempotency-Key");
    ctx->latency = ordo_metrics_histogram(&ctx->metrics, "ordo_http_request_duration_seconds",
                                          "time to answer an HTTP request");
}

static void json_response(ordo_http_response_t *resp, int status, json_t *doc)
{
    resp->status = status;
    resp->body = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(doc);
    if (resp->body == NULL)
        ordo_http_error(resp, 500, "internal", "out of memory");
}

/* An error from a gRPC call to the store or the read model, as HTTP. */
static void upstream_error(ordo_http_response_t *resp, const char *who, const ordo_error_t *err)
{
    int code = ordo_http_code_of(err->code);
    if (code == 503 || code >= 500)
        ordo_http_error(resp, 503, "unavailable", "%s is unavailable: %s", who, err->msg);
    else
        ordo_http_error(resp, code, ordo_status_text(err->code), "%s", err->msg);
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

/* Is the stored order-created @p event_id the same order as @p event_json? */
static ordo_status same_as_stored(api_ctx_t *ctx, const char *event_id, const char *event_json, bool *same,
                                  ordo_error_t *err)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
    Eventstore__GetEventsResponse *resp = NULL;
    ordo_status st;

    req.event_id = (char *)event_id;
    if ((st = ordo_es_read(ctx->store, &req, ctx->cfg->timeout_ms, &resp, err)) != ORDO_OK)
        return st;
    *same = false;
    if (resp->n_events == 1) {
        json_t *a = json_loads(resp->events[0]->event_data, 0, NULL), *b = json_loads(event_json, 0, NULL);
        *same = a != NULL && b != NULL && json_equal(a, b);
        json_decref(a);
        json_decref(b);
    }
    eventstore__get_events_response__free_unpacked(resp, NULL);
    return ORDO_OK;
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

static void post_order(api_ctx_t *ctx, const ordo_http_request_t *req, ordo_http_response_t *resp)
{
    const char *ctype = ordo_http_header(req, "Content-Type"), *key = ordo_http_header(req, "Idempotency-Key");
    char event_id[ORDO_UUID_LEN], *event_json = NULL, name[300];
    ordo_order_t order;
    ordo_es_result_t res;
    ordo_error_t err;
    ordo_status st;

    if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0) {
        ordo_http_error(resp, 415, "unsupported_media_type", "send the order as Content-Type: application/json");
        return;
    }
    if (key != NULL && !key_ok(key)) {
        ordo_http_error(resp, 400, "invalid", "Idempotency-Key must be 1 to 128 visible ASCII characters");
        return;
    }
    if (ordo_order_from_request(req->body, req->body_len, ctx->cfg->max_items, &order, &err) != ORDO_OK) {
        ordo_http_error(resp, 400, "invalid", "%s", err.msg);
        return;
    }
    /* A key names one order of one customer: the same key, the same order id and event id. */
    if (key != NULL) {
        snprintf(name, sizeof name, "%s\n%s", order.customer_id, key);   /* both <= 128 bytes */
        ordo_uuid_v5(IDEMPOTENCY_NS, name, order.order_id);
    } else {
        ordo_uuid_v4(order.order_id);
    }
    ordo_order_followup_id(order.order_id, ORDO_EV_ORDER_CREATED, event_id);
    event_json = ordo_order_event_json(&order);
    ordo_es_event_t ev = {event_id, ORDO_EV_ORDER_CREATED, order.order_id, ORDO_ORDER_AGGREGATE, event_json,
                          order.order_id, NULL};
    st = event_json == NULL ? ordo_error_set(&err, ORDO_NO_MEMORY, "out of memory")
                            : ordo_es_append(ctx->store, &ev, 0, ctx->cfg->timeout_ms, &res, &err);
    if (st == ORDO_OK && res.duplicate) {
        bool same = false;
        st = same_as_stored(ctx, event_id, event_json, &same, &err);
        if (st == ORDO_OK && !same)
            st = ordo_error_set(&err, ORDO_CONFLICT, "Idempotency-Key %s was used for a different order", key);
    }
    if (st == ORDO_OK) {
        json_response(resp, 201, created_body(event_json));
        if (res.duplicate) {
            resp->header_name = "Idempotent-Replayed";
            resp->header_value = "true";
        }
        ordo_metric_inc(res.duplicate ? ctx->replayed : ctx->created);
        ORDO_DEBUG(res.duplicate ? "order replayed" : "order created", "order_id=%s amount_cents=%lld",
                   order.order_id, (long long)order.amount_cents);
    } else if (st == ORDO_CONFLICT) {
        ordo_http_error(resp, 409, "conflict", "%s", err.msg);
    } else {
        upstream_error(resp, "the event store", &err);
    }
    free(event_json);
    ordo_order_free(&order);
}

/* ---------------------------------------------------------------- GET */

static json_t *order_json(const Order__Order *o)
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

static void get_order(api_ctx_t *ctx, const char *id, ordo_http_response_t *resp)
{
    Order__GetOrderRequest req = ORDER__GET_ORDER_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    ordo_error_t err;

    if (!ordo_uuid_valid(id)) {
        ordo_http_error(resp, 400, "invalid", "order id must be a UUID");
        return;
    }
    req.order_id = (char *)id;
    if (ordo_grpc_client_unary(ctx->query, "/order.OrderQuery/GetOrder", &req.base, &order__order__descriptor,
                               ctx->cfg->timeout_ms, &out, &err) != ORDO_OK) {
        if (err.code == ORDO_NOT_FOUND)
            ordo_http_error(resp, 404, "not_found", "order %s not found", id);
        else
            upstream_error(resp, "the read model", &err);
        return;
    }
    json_response(resp, 200, order_json((Order__Order *)out));
    protobuf_c_message_free_unpacked(out, NULL);
}

static void list_orders(api_ctx_t *ctx, const ordo_http_request_t *hreq, ordo_http_response_t *resp)
{
    Order__ListOrdersRequest req = ORDER__LIST_ORDERS_REQUEST__INIT;
    const char *customer = ordo_http_query(hreq, "customer_id"), *status = ordo_http_query(hreq, "status");
    const char *limit = ordo_http_query(hreq, "limit"), *after = ordo_http_query(hreq, "after");
    Order__ListOrdersResponse *r;
    ProtobufCMessage *out = NULL;
    ordo_error_t err;
    json_t *orders, *doc;
    char *end = NULL;

    if (limit != NULL) {
        long v = strtol(limit, &end, 10);
        if (end == limit || *end != '\0' || v < 1 || v > 500) {
            ordo_http_error(resp, 400, "invalid", "limit must be an integer from 1 to 500");
            return;
        }
        req.limit = (int32_t)v;
    }
    if (status != NULL && !ordo_order_status_valid(status)) {
        ordo_http_error(resp, 400, "invalid",
                        "status must be one of Pending, Paid, PaymentFailed, Approved, Rejected, Refunded");
        return;
    }
    req.customer_id = (char *)(customer ? customer : "");
    req.status = (char *)(status ? status : "");
    req.after = (char *)(after ? after : "");
    if (ordo_grpc_client_unary(ctx->query, "/order.OrderQuery/ListOrders", &req.base,
                               &order__list_orders_response__descriptor, ctx->cfg->timeout_ms, &out, &err) != ORDO_OK) {
        upstream_error(resp, "the read model", &err);
        return;
    }
    r = (Order__ListOrdersResponse *)out;
    orders = json_array();
    for (size_t i = 0; i < r->n_orders; i++)
        json_array_append_new(orders, order_json(r->orders[i]));
    doc = json_pack("{s:o, s:s?}", "orders", orders, "next", r->next[0] ? r->next : NULL);
    json_response(resp, 200, doc);
    protobuf_c_message_free_unpacked(out, NULL);
}

static void healthz(api_ctx_t *ctx, ordo_http_response_t *resp)
{
    Eventstore__StatsRequest sreq = EVENTSTORE__STATS_REQUEST__INIT;
    Order__HealthRequest hreq = ORDER__HEALTH_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    ordo_error_t err;
    bool store, db = false, bus = false, query;

    store = ordo_grpc_client_unary(ctx->store, "/eventstore.EventStoreAdmin/GetStats", &sreq.base,
                                   &eventstore__stats_response__descriptor, 1000, &out, &err) == ORDO_OK;
    if (store)
        protobuf_c_message_free_unpacked(out, NULL);
    query = ordo_grpc_client_unary(ctx->query, "/order.OrderQuery/Health", &hreq.base,
                                   &order__health_response__descriptor, 1000, &out, &err) == ORDO_OK;
    if (query) {
        db = ((Order__HealthResponse *)out)->database;
        bus = ((Order__HealthResponse *)out)->bus;
        protobuf_c_message_free_unpacked(out, NULL);
    }
    json_response(resp, store && db ? 200 : 503,
                  json_pack("{s:s, s:b, s:b, s:b, s:b}", "status", store && db ? "ok" : "degraded", "eventstore",
                            store, "orderquery", query, "database", db, "bus", bus));
}

static void metrics(api_ctx_t *ctx, ordo_http_response_t *resp)
{
    ordo_buf_t out = ORDO_BUF_INIT;
    ordo_metrics_render(&ctx->metrics, &out);
    resp->status = 200;
    resp->body = out.data ? out.data : strdup("");
    resp->content_type = "text/plain; version=0.0.4";
}

/* ------------------------------------------------------------- routing */

static void method_not_allowed(ordo_http_response_t *resp, const char *allow)
{
    ordo_http_error(resp, 405, "method_not_allowed", "allowed here: %s", allow);
    resp->header_name = "Allow";
    resp->header_value = allow;
}

static void route(api_ctx_t *ctx, const ordo_http_request_t *req, ordo_http_response_t *resp)
{
    /* HEAD is GET without the body (libmicrohttpd leaves the body out) */
    bool get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    bool post = strcmp(req->method, "POST") == 0;
    size_t n = strlen(ORDERS_PATH);

    if (strcmp(req->path, ORDERS_PATH) == 0 || strcmp(req->path, ORDERS_PATH "/") == 0) {
        if (post)
            post_order(ctx, req, resp);
        else if (get)
            list_orders(ctx, req, resp);
        else
            method_not_allowed(resp, "GET, HEAD, POST");
    } else if (strncmp(req->path, ORDERS_PATH "/", n + 1) == 0 && strchr(req->path + n + 1, '/') == NULL) {
        if (get)
            get_order(ctx, req->path + n + 1, resp);
        else
            method_not_allowed(resp, "GET, HEAD");
    } else if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/metrics") == 0) {
        if (!get)
            method_not_allowed(resp, "GET, HEAD");
        else if (req->path[1] == 'h')
            healthz(ctx, resp);
        else
            metrics(ctx, resp);
    } else {
        ordo_http_error(resp, 404, "not_found", "no route for %.200s", req->path);
    }
}

void api_handle(void *vctx, const ordo_http_request_t *req, ordo_http_response_t *resp)
{
    api_ctx_t *ctx = vctx;
    struct timespec t0, t1;
    int cls;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    route(ctx, req, resp);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cls = resp->status / 100 - 1;
    if (cls >= 0 && cls < 5)
        ordo_metric_inc(ctx->by_class[cls]);
    ordo_metric_observe_us(ctx->latency, (t1.tv_sec - t0.tv_sec) * 1000000LL + (t1.tv_nsec - t0.tv_nsec) / 1000);
    ORDO_DEBUG("http", "method=%s path=%s status=%d", req->method, req->path, resp->status);
}
