/* order.OrderQuery: reads of the read model, run on the worker pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oq.h"
#include "ordo/buf.h"
#include "ordo/log.h"
#include "ordo/order.h"

#define ORDER_COLUMNS "order_id, customer_id, restaurant_id, status, amount_cents, version, created_at, updated_at"

enum { DEFAULT_LIMIT = 50, MAX_LIMIT = 500, DEFAULT_CHANGES = 500, MAX_CHANGES = 2000 };

/* A page of orders with their items; all strings point into the results kept here. */
typedef struct order_page {
    PGresult *orders, *items;
    Order__Order *o;
    Order__Order **op;
    Order__OrderItem *it;
    Order__OrderItem **itp;
    int n;
} order_page_t;

static void page_free(order_page_t *p)
{
    PQclear(p->orders);
    PQclear(p->items);
    free(p->o);
    free(p->op);
    free(p->it);
    free(p->itp);
}

/* Builds p->o from p->orders (first @p n rows) and p->items (the same
 * orders' items, in the orders' order, then by line). */
static ordo_status page_build(order_page_t *p, int n, ordo_error_t *err)
{
    int n_items = PQntuples(p->items), k = 0;

    p->n = n;
    p->o = calloc((size_t)n + 1, sizeof *p->o);
    p->op = calloc((size_t)n + 1, sizeof *p->op);
    p->it = calloc((size_t)n_items + 1, sizeof *p->it);
    p->itp = calloc((size_t)n_items + 1, sizeof *p->itp);
    if (!p->o || !p->op || !p->it || !p->itp)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    for (int i = 0; i < n_items; i++) {
        order__order_item__init(&p->it[i]);
        p->it[i].code = PQgetvalue(p->items, i, 1);
        p->it[i].name = PQgetvalue(p->items, i, 2);
        p->it[i].unit_price = ordo_cents_to_units(strtoll(PQgetvalue(p->items, i, 3), NULL, 10));
        p->it[i].quantity = atoi(PQgetvalue(p->items, i, 4));
        p->itp[i] = &p->it[i];
    }
    for (int i = 0; i < n; i++) {
        Order__Order *o = &p->o[i];
        order__order__init(o);
        o->order_id = PQgetvalue(p->orders, i, 0);
        o->customer_id = PQgetvalue(p->orders, i, 1);
        o->restaurant_id = PQgetvalue(p->orders, i, 2);
        o->status = PQgetvalue(p->orders, i, 3);
        o->amount = ordo_cents_to_units(strtoll(PQgetvalue(p->orders, i, 4), NULL, 10));
        o->version = strtoll(PQgetvalue(p->orders, i, 5), NULL, 10);
        o->created_at = strtoll(PQgetvalue(p->orders, i, 6), NULL, 10);
        o->updated_at = strtoll(PQgetvalue(p->orders, i, 7), NULL, 10);
        /* the items follow the orders' order: walk both once */
        o->items = &p->itp[k];
        while (k < n_items && strcmp(PQgetvalue(p->items, k, 0), o->order_id) == 0) {
            o->n_items++;
            k++;
        }
        p->op[i] = o;
    }
    return ORDO_OK;
}

/* Loads the items of the first @p n orders of p->orders, in that order
 * (whatever the database's collation: the merge compares ids only for
 * equality). */
static ordo_status page_items(ordo_pg_t *pg, order_page_t *p, int n, ordo_error_t *err)
{
    ordo_buf_t ids = ORDO_BUF_INIT;
    const char *params[1];
    ordo_status st;

    ordo_buf_pg_array_begin(&ids);
    for (int i = 0; i < n; i++)
        ordo_buf_pg_array_text(&ids, PQgetvalue(p->orders, i, 0));
    ordo_buf_pg_array_end(&ids);
    params[0] = ordo_buf_str(&ids);
    st = ordo_pg_query_idempotent(pg, "SELECT i.order_id, i.code, i.name, i.unit_price_cents, i.quantity"
                                      " FROM unnest($1::text[]) WITH ORDINALITY AS page (order_id, n)"
                                      " JOIN order_items i ON i.order_id = page.order_id ORDER BY page.n, i.line",
                                  1, params, &p->items, err);
    ordo_buf_free(&ids);
    return st;
}

static void get_order(void *vctx, ordo_pg_t *pg, void *arg)
{
    ordo_grpc_call_t *call = arg;
    const Order__GetOrderRequest *req = (const Order__GetOrderRequest *)ordo_grpc_call_request(call);
    order_page_t p = {0};
    const char *params[1] = {req->order_id};
    ordo_error_t err;
    ordo_status st;
    (void)vctx;

    st = ordo_pg_query_idempotent(pg, "SELECT " ORDER_COLUMNS " FROM orders WHERE order_id = $1", 1, params, &p.orders, &err);
    if (st == ORDO_OK && PQntuples(p.orders) == 0)
        st = ordo_error_set(&err, ORDO_NOT_FOUND, "order %.64s not found", req->order_id);
    if (st == ORDO_OK)
        st = page_items(pg, &p, 1, &err);
    if (st == ORDO_OK)
        st = page_build(&p, 1, &err);
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &p.o[0].base : NULL);
    page_free(&p);
}

static void list_orders(void *vctx, ordo_pg_t *pg, void *arg)
{
    ordo_grpc_call_t *call = arg;
    const Order__ListOrdersRequest *req = (const Order__ListOrdersRequest *)ordo_grpc_call_request(call);
    Order__ListOrdersResponse resp = ORDER__LIST_ORDERS_RESPONSE__INIT;
    int limit = req->limit <= 0 ? DEFAULT_LIMIT : req->limit > MAX_LIMIT ? MAX_LIMIT : req->limit;
    char limit_s[16];
    const char *params[4] = {req->customer_id, req->status, req->after, limit_s};
    order_page_t p = {0};
    ordo_error_t err;
    ordo_status st;
    int n = 0;
    (void)vctx;

    snprintf(limit_s, sizeof limit_s, "%d", limit + 1);
    st = ordo_pg_query_idempotent(pg, "SELECT " ORDER_COLUMNS " FROM orders WHERE ($1 = '' OR customer_id = $1)"
                                      " AND ($2 = '' OR status = $2) AND order_id > $3"
                                      " ORDER BY order_id LIMIT $4::int", 4, params, &p.orders, &err);
    if (st == ORDO_OK) {
        n = PQntuples(p.orders) > limit ? limit : PQntuples(p.orders);
        st = page_items(pg, &p, n, &err);
    }
    if (st == ORDO_OK)
        st = page_build(&p, n, &err);
    if (st == ORDO_OK) {
        resp.n_orders = (size_t)n;
        resp.orders = p.op;
        resp.next = PQntuples(p.orders) > limit && n > 0 ? p.o[n - 1].order_id : "";
    }
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    page_free(&p);
}

/* The change feed: rows written after req->since, oldest first, without
 * items; and the database's clock. A page may end inside a run of rows
 * written in the same microsecond: the caller asks again from the last
 * row's applied_at minus one and drops what it has seen. */
static void list_changes(void *vctx, ordo_pg_t *pg, void *arg)
{
    ordo_grpc_call_t *call = arg;
    const Order__ListChangesRequest *req = (const Order__ListChangesRequest *)ordo_grpc_call_request(call);
    Order__ListChangesResponse resp = ORDER__LIST_CHANGES_RESPONSE__INIT;
    int limit = req->limit <= 0 ? DEFAULT_CHANGES : req->limit > MAX_CHANGES ? MAX_CHANGES : req->limit;
    char since_s[24], limit_s[16];
    const char *params[2] = {since_s, limit_s};
    order_page_t p = {0};
    PGresult *now = NULL;
    ordo_error_t err;
    ordo_status st;
    int n = 0;
    (void)vctx;

    snprintf(since_s, sizeof since_s, "%lld", (long long)req->since);
    snprintf(limit_s, sizeof limit_s, "%d", req->since > 0 ? limit : 0);
    /* the clock first: a row written after it is read next time too */
    st = ordo_pg_query_idempotent(pg, "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8", 0, NULL, &now,
                                  &err);
    if (st == ORDO_OK)
        st = ordo_pg_query_idempotent(pg, "SELECT " ORDER_COLUMNS ", applied_at FROM orders WHERE applied_at > $1::int8"
                                          " ORDER BY applied_at, order_id LIMIT $2::int", 2, params, &p.orders, &err);
    if (st == ORDO_OK && (p.items = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK)) == NULL)
        st = ordo_error_set(&err, ORDO_NO_MEMORY, "out of memory");
    if (st == ORDO_OK) {
        n = PQntuples(p.orders);
        st = page_build(&p, n, &err);
    }
    if (st == ORDO_OK) {
        for (int i = 0; i < n; i++)
            p.o[i].applied_at = strtoll(PQgetvalue(p.orders, i, 8), NULL, 10);
        resp.n_orders = (size_t)n;
        resp.orders = p.op;
        resp.now = strtoll(PQgetvalue(now, 0, 0), NULL, 10);
    }
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    PQclear(now);
    page_free(&p);
}

static void health(void *vctx, ordo_pg_t *pg, void *arg)
{
    oq_ctx_t *ctx = vctx;
    ordo_grpc_call_t *call = arg;
    Order__HealthResponse resp = ORDER__HEALTH_RESPONSE__INIT;
    ordo_error_t err;

    /* a connection lost while the database restarted is replaced, not reported as an outage */
    resp.database = ordo_pg_query_idempotent(pg, "SELECT 1", 0, NULL, NULL, &err) == ORDO_OK;
    resp.bus = ordo_consumer_connected(ctx->consumer);
    resp.applied = atomic_load(&ctx->applied);
    ordo_grpc_call_finish(call, ORDO_OK, NULL, &resp.base);
}

static void rebuild(void *vctx, ordo_pg_t *pg, void *arg)
{
    oq_ctx_t *ctx = vctx;
    ordo_grpc_call_t *call = arg;
    Order__RebuildResponse resp = ORDER__REBUILD_RESPONSE__INIT;
    ordo_error_t err;
    ordo_status st = oq_rebuild(ctx, pg, &resp.events, &resp.orders, &err);
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
}

static void submit(oq_ctx_t *ctx, ordo_job_cb fn, ordo_grpc_call_t *call)
{
    if (ordo_workers_submit(ctx->workers, fn, call) != ORDO_OK)
        ordo_grpc_call_finish(call, ORDO_NO_MEMORY, "out of memory", NULL);
}

static void on_get_order(void *ctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    (void)msg;
    submit(ctx, get_order, call);
}

static void on_list_orders(void *ctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    const Order__ListOrdersRequest *req = (const Order__ListOrdersRequest *)msg;
    if (req->status[0] != '\0' && !ordo_order_status_valid(req->status)) {
        ordo_grpc_call_finish(call, ORDO_INVALID, "status must be one of Pending, Paid, PaymentFailed, Approved, Rejected, Refunded", NULL);
        return;
    }
    if (req->limit < 0) {
        ordo_grpc_call_finish(call, ORDO_INVALID, "limit must be 0 or more", NULL);
        return;
    }
    submit(ctx, list_orders, call);
}

static void on_health(void *ctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    (void)msg;
    submit(ctx, health, call);
}

static void on_list_changes(void *ctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    if (((const Order__ListChangesRequest *)msg)->limit < 0) {
        ordo_grpc_call_finish(call, ORDO_INVALID, "limit must be 0 or more", NULL);
        return;
    }
    submit(ctx, list_changes, call);
}

static void on_rebuild(void *ctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    (void)msg;
    submit(ctx, rebuild, call);
}

ordo_status oq_service_register(oq_ctx_t *ctx, ordo_error_t *err)
{
    static const ordo_grpc_method_t methods[] = {
        {"GetOrder", on_get_order, false, ORDO_ROLE_READER},
        {"ListOrders", on_list_orders, false, ORDO_ROLE_READER},
        {"Rebuild", on_rebuild, false, ORDO_ROLE_ADMIN},   /* empties the read model first */
        {"Health", on_health, false, ORDO_ROLE_READER},
        {"ListChanges", on_list_changes, false, ORDO_ROLE_READER},
    };
    return ordo_grpc_server_add_service(ctx->server, &order__order_query__descriptor, methods,
                                        sizeof methods / sizeof methods[0], ctx, err);
}
