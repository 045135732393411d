/* orderapi: the HTTP face of the order system. */
#ifndef API_H
#define API_H

#include "keys.h"
#include "ordo/grpc.h"
#include "ordo/http.h"
#include "ordo/metrics.h"

typedef struct api_config {
    const char *http_addr;
    const char *eventstore_addr;
    const char *orderquery_addr;
    const char *log_level;
    int threads;
    int max_body;
    int max_items;
    int timeout_ms;
    int http_idle_s;            /* a connection idle this long is closed */
    int http_max_connections;   /* open connections in all, */
    int http_max_per_address;   /* and from one client address */
    ordo_grpc_tls_t tls;      /* of its event store and orderquery connections */
    const char *api_keys_file; /* "": no keys (loopback only) */
    bool insecure;             /* serve an address other than loopback anyway */
    const char *https_cert, *https_key; /* "": plain HTTP */
    const char *metrics_addr;  /* "": /metrics on the API's address; else there only */
} api_config_t;

typedef struct api_ctx {
    const api_config_t *cfg;
    ordo_grpc_client_t *store;
    ordo_grpc_client_t *query;
    ordo_metrics_t metrics;
    ordo_metric_t *by_class[5];      /* 1xx..5xx */
    ordo_metric_t *created, *replayed, *latency;
    api_keys_t keys;                 /* none: every request may do everything */
} api_ctx_t;

/* Registers the metrics; call once before serving. */
void api_init(api_ctx_t *ctx);

/* The HTTP handler: routes and answers one request. */
void api_handle(void *ctx, const ordo_http_request_t *req, ordo_http_response_t *resp);

/* The handler of --metrics-addr: GET /metrics alone. */
void api_handle_metrics(void *ctx, const ordo_http_request_t *req, ordo_http_response_t *resp);

#endif
