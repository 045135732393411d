/*
 * The read model's figures on orderquery's /metrics, after the consumer's
 * (lib/svcmetrics.c): the OrderQuery gRPC methods' calls and latency; how
 * long after its commit in the store each order event reached the read
 * model; and, read at each scrape on the scrape's own connection, whether
 * the read model's database answers, the orders without a final status and
 * the age of the oldest of them (what a stuck saga shows first).
 */
#include <stdio.h>

#include "oq.h"

/* Orders not yet Approved, PaymentFailed or Refunded (the orders_status index). */
#define OPEN_ORDERS_SQL                                                                                           \
    "SELECT count(*), COALESCE((extract(epoch FROM clock_timestamp()) * 1000000)::bigint - min(created_at), 0)"  \
    " FROM orders WHERE status IN ('Pending', 'Paid', 'Rejected')"

/* A scrape waits at most this long for the database. */
#define SCRAPE_SETUP_SQL "SET statement_timeout = 2000"

void oq_metrics_init(oq_ctx_t *ctx)
{
    ctx->apply_lag = ordo_metrics_histogram(&ctx->own, "ordo_readmodel_apply_lag_seconds",
                                            "time from an order event's commit in the store to its application to"
                                            " the read model");
}

static void gauge(ordo_buf_t *out, const char *name, const char *help, double v)
{
    ordo_metrics_render_header(out, name, "gauge", help);
    ordo_buf_printf(out, "%s %.6g\n", name, v);
}

/* The open orders, from the database (on the single metrics thread). */
static void open_orders(oq_ctx_t *ctx, ordo_buf_t *out)
{
    PGresult *res = NULL;
    ordo_error_t err;
    bool up = ctx->metrics_pg != NULL ||
              ordo_pg_create(ctx->cfg->database_url, "orderquery metrics", SCRAPE_SETUP_SQL, &ctx->metrics_pg,
                             &err) == ORDO_OK;

    up = up && ordo_pg_query_idempotent(ctx->metrics_pg, OPEN_ORDERS_SQL, 0, NULL, &res, &err) == ORDO_OK &&
         PQntuples(res) == 1;
    gauge(out, "ordo_readmodel_database_up", "1 when the read model's database answered this scrape", up);
    if (up) {
        gauge(out, "ordo_readmodel_open_orders", "orders without a final status (Pending, Paid, Rejected)",
              (double)strtoll(PQgetvalue(res, 0, 0), NULL, 10));
        gauge(out, "ordo_readmodel_oldest_open_order_age_seconds",
              "age of the oldest order without a final status (0: none)",
              (double)strtoll(PQgetvalue(res, 0, 1), NULL, 10) / 1e6);
    }
    PQclear(res);
}

void oq_metrics_render(void *vctx, ordo_buf_t *out)
{
    oq_ctx_t *ctx = vctx;

    ordo_metrics_render(&ctx->own, out);
    open_orders(ctx, out);
    ordo_grpc_server_metrics_render(ctx->server, out);
}
