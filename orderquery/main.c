/* orderquery: projects order events into the read model and serves it over gRPC. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "oq.h"
#include "ordo/daemon.h"
#include "ordo/log.h"
#include "ordo/migrate.h"

#define OPT(...) ORDO_OPTION(oq_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("database-url", "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ordo", ORDO_OPT_STRING, database_url, 0, 0, "libpq URI of the read model's database"),
    OPT("nats-url", "NATS_URL", "nats://127.0.0.1:4222", ORDO_OPT_STRING, nats_url, 0, 0, "NATS server with JetStream"),
    OPT("eventstore-addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, eventstore_addr, 0, 0, "event store (gaps and rebuilds)"),
    OPT("listen", "ORDERQUERY_ADDR", "127.0.0.1:50052", ORDO_OPT_STRING, listen, 0, 0, "gRPC address of order.OrderQuery (port 0: any free port)"),
    OPT("log-level", "LOG_LEVEL", "info", ORDO_OPT_STRING, log_level, 0, 0, "debug, info, warn or error"),
    OPT("readers", "ORDO_READERS", "2", ORDO_OPT_INT, readers, 1, 64, "threads serving queries"),
    OPT("concurrency", "ORDO_CONCURRENCY", "1", ORDO_OPT_INT, concurrency, 1, 64, "lanes applying events in parallel (one order's stay in order), each with its own connection and transactions; more instances scale the read side too"),
    OPT("timeout-ms", "ORDO_TIMEOUT_MS", "5000", ORDO_OPT_INT, timeout_ms, 100, 600000, "deadline of event store calls"),
    OPT("rebuild", NULL, "false", ORDO_OPT_BOOL, rebuild, 0, 0, "rebuild the read model from the event store, then exit"),
    OPT("migrate", "ORDO_MIGRATE", "true", ORDO_OPT_BOOL, migrate, 0, 0, "apply sql/ migrations at start"),
    OPT("metrics-addr", "METRICS_ADDR", "", ORDO_OPT_STRING, metrics_addr, 0, 0, "serve GET /metrics (Prometheus) here, a loopback address; port 0: any (printed as metrics_port=N after port=N); empty: off"),
    ORDO_TLS_OPTIONS(oq_config_t, tls),
    ORDO_NATS_OPTIONS(oq_config_t, nats),
    ORDO_GRPC_SERVER_OPTIONS(oq_config_t),
};

static int rebuild_once(oq_ctx_t *ctx)
{
    ordo_pg_t *pg;
    ordo_error_t err;
    int64_t events = 0, orders = 0;
    ordo_status st = ordo_pg_open(ctx->cfg->database_url, "orderquery rebuild", NULL, &pg, &err);

    if (st == ORDO_OK)
        st = oq_rebuild(ctx, pg, &events, &orders, &err);
    ordo_pg_destroy(pg);
    if (st != ORDO_OK) {
        ORDO_ERROR("rebuild failed", "err=\"%s\"", err.msg);
        return 1;
    }
    printf("{\"events\":%lld,\"orders\":%lld}\n", (long long)events, (long long)orders);
    return 0;
}

static ordo_status start(oq_ctx_t *ctx, ordo_error_t *err)
{
    const oq_config_t *cfg = ctx->cfg;
    ordo_grpc_server_config_t scfg = {.addr = cfg->listen, .max_message_bytes = ORDO_GRPC_QUERY_REQUEST_MAX_BYTES,
                                      .threads = 1, .tls = &cfg->tls, .client_roles = cfg->client_roles,
                                      .insecure = cfg->insecure};
    ordo_consumer_config_t ccfg;
    ordo_status st;
    int port = 0;

    ordo_consumer_config_init(&ccfg);
    ccfg.nats_url = cfg->nats_url;
    ccfg.nats_auth = &cfg->nats;
    ccfg.durable = "orderquery";
    ccfg.filter_subject = "events.order.>";
    ccfg.concurrency = cfg->concurrency;
    ccfg.batch_handler = oq_handle_batch;
    ordo_service_metrics_init(&ctx->metrics, &ccfg, 1);
    oq_metrics_init(ctx);
    ctx->metrics.extra = oq_metrics_render;
    ctx->metrics.extra_ctx = ctx;

    if ((ctx->projection_pg = calloc((size_t)cfg->concurrency, sizeof *ctx->projection_pg)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    for (int i = 0; i < cfg->concurrency; i++) {
        if ((st = ordo_pg_open(cfg->database_url, "orderquery projection", NULL, &ctx->projection_pg[i], err)) ==
            ORDO_NO_MEMORY)
            return st;
        if (st != ORDO_OK)
            ORDO_WARN("projection cannot reach the database yet", "err=\"%s\"", err->msg);
    }
    if ((st = ordo_workers_create(cfg->readers, cfg->database_url, NULL, ctx, &ctx->workers, err)) != ORDO_OK ||
        (st = ordo_grpc_server_create(&scfg, &ctx->server, err)) != ORDO_OK ||
        (st = oq_service_register(ctx, err)) != ORDO_OK ||
        (st = ordo_grpc_server_start(ctx->server, &port, err)) != ORDO_OK ||
        (st = ordo_consumer_start(&ccfg, oq_handle, ctx, &ctx->consumer, err)) != ORDO_OK)
        return st;
    ordo_service_metrics_watch(&ctx->metrics, 0, ctx->consumer);
    ORDO_INFO("orderquery serving", "listen=%s port=%d", cfg->listen, port);
    printf("port=%d\n", port);
    if (ordo_opt_given(cfg->metrics_addr)) {
        if ((st = ordo_service_metrics_serve(&ctx->metrics, cfg->metrics_addr, &ctx->metrics_http, &port, err)) != ORDO_OK)
            return st;
        printf("metrics_port=%d\n", port);
    }
    fflush(stdout);
    return ORDO_OK;
}

int main(int argc, char **argv)
{
    oq_config_t cfg = {0};
    oq_ctx_t ctx = {0};
    ordo_error_t err;
    int rc = ordo_daemon_init("orderquery", options, sizeof options / sizeof options[0], &cfg, &cfg.log_level, argc, argv);

    if (rc >= 0)
        return rc;
    ctx.cfg = &cfg;
    if ((cfg.migrate && ordo_migrate_url(cfg.database_url, &err) != ORDO_OK) ||
        ordo_grpc_client_create(cfg.eventstore_addr, ORDO_GRPC_READ_MAX_BYTES, &cfg.tls, &ctx.store, &err) != ORDO_OK) {
        ORDO_ERROR("orderquery cannot start", "err=\"%s\"", err.msg);
        return 1;
    }
    if (cfg.rebuild) {
        rc = rebuild_once(&ctx);
    } else if (start(&ctx, &err) != ORDO_OK) {
        ORDO_ERROR("orderquery cannot start", "err=\"%s\"", err.msg);
        rc = 1;
    } else {
        rc = ordo_daemon_wait();
        ORDO_INFO("orderquery stopping", "signal=%d", rc);
        rc = 0;
    }
    /* the consumer first: it finishes the event in hand */
    ordo_consumer_destroy(ctx.consumer);
    ordo_http_stop(ctx.metrics_http);
    if (ctx.server != NULL)
        ordo_grpc_server_shutdown(ctx.server, 5000);
    ordo_workers_destroy(ctx.workers);
    ordo_grpc_server_destroy(ctx.server);
    for (int i = 0; ctx.projection_pg != NULL && i < cfg.concurrency; i++)
        ordo_pg_destroy(ctx.projection_pg[i]);
    ordo_pg_destroy(ctx.metrics_pg);
    free(ctx.projection_pg);
    ordo_grpc_client_destroy(ctx.store);
    return rc;
}
