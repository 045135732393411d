/* orderquery: the read model of orders — projection, rebuild and queries. */
#ifndef OQ_H
#define OQ_H

#include <stdatomic.h>
#include <stdbool.h>

#include "order.pb-c.h"
#include "ordo/consumer.h"
#include "ordo/svcmetrics.h"
#include "ordo/grpc.h"
#include "ordo/pg.h"
#include "ordo/workers.h"

typedef struct oq_config {
    const char *database_url;
    const char *nats_url;
    const char *eventstore_addr;
    const char *listen;
    const char *metrics_addr;   /* "": no /metrics */
    const char *log_level;
    int readers;
    int concurrency;
    int timeout_ms;
    bool rebuild;     /* one-shot: rebuild the read model and exit */
    bool migrate;
    ordo_grpc_tls_t tls;      /* its gRPC server's and its event store client's; no files: plaintext */
    ordo_bus_auth_t nats;     /* NATS credentials and TLS */
    const char *client_roles; /* with TLS: common name = role */
    bool insecure;            /* plaintext on a non-loopback address allowed */
} oq_config_t;

typedef struct oq_ctx {
    const oq_config_t *cfg;
    ordo_grpc_client_t *store;
    ordo_pg_t **projection_pg;  /* one connection per consumer lane */
    ordo_consumer_t *consumer;
    ordo_workers_t *workers;    /* queries and admin calls */
    ordo_grpc_server_t *server;
    atomic_llong applied;       /* events applied by this process */
    ordo_service_metrics_t metrics;   /* the consumer's counters and /metrics */
    ordo_http_server_t *metrics_http; /* NULL: no --metrics-addr */
    ordo_metrics_t own;               /* the read model's figures (metrics.c) */
    ordo_metric_t *apply_lag;         /* event written to event applied, seconds */
    ordo_pg_t *metrics_pg;            /* the scrape's own connection (one metrics thread) */
} oq_ctx_t;

/* metrics.c: the read model's figures on /metrics (with the consumer's) */
void oq_metrics_init(oq_ctx_t *ctx);
void oq_metrics_render(void *ctx, ordo_buf_t *out);

/* projection.c */

/* The consumer's handler: applies one event exactly once in effect. */
ordo_msg_action oq_handle(void *ctx, int lane, const ordo_bus_event_t *ev);

/* The same for the events queued on a lane, in one transaction. */
void oq_handle_batch(void *ctx, int lane, const ordo_bus_event_t *events, int n, ordo_msg_action *actions);

/* Empties the read model and replays every order event from the store.
 * Counts events read and orders written. */
ordo_status oq_rebuild(oq_ctx_t *ctx, ordo_pg_t *pg, int64_t *events, int64_t *orders, ordo_error_t *err);

/* query.c: serves order.OrderQuery. */
ordo_status oq_service_register(oq_ctx_t *ctx, ordo_error_t *err);

#endif
