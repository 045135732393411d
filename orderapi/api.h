/* orderapi: the HTTP face of the order system. */
#ifndef API_H
#define API_H

#include <jansson.h>
#include <time.h>

#include "keys.h"
#include "order.pb-c.h"
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
    int changes_history;       /* order changes held for streams (feed.c) */
    int changes_max_streams;   /* GET /api/orders/changes streams open at once */
    int changes_lookback_ms;   /* how late a read-model commit may be and still be streamed */
    int changes_poll_ms;       /* the feed's poll interval */
} api_config_t;

/* What a request asked for, for the metrics' labels (route templates, not paths). */
typedef enum api_op {
    API_CREATE, API_LIST, API_GET, API_EVENTS, API_CHANGES, API_WHOAMI, API_HEALTHZ, API_METRICS, API_OPENAPI,
    API_CONSOLE, API_OTHER, API_OPS
} api_op;

/* Compiled in (cmake/embed_file.cmake): docs/openapi.json (GET /openapi.json)
 * and the web console, orderapi/console (GET /console and its two files). */
extern const char api_openapi_json[];
extern const char api_console_html[], api_console_js[], api_console_css[];

typedef struct api_feed api_feed_t;   /* feed.h */

typedef struct api_ctx {
    const api_config_t *cfg;
    ordo_grpc_client_t *store;
    ordo_grpc_client_t *query;
    ordo_metrics_t metrics;
    char labels[API_OPS][6][72];     /* [op][0]: the op's; [op][1..5]: with code="1xx".."5xx" */
    ordo_metric_t *by_class[API_OPS][5];
    ordo_metric_t *latency[API_OPS];
    ordo_metric_t *created, *replayed;
    api_keys_t keys;                 /* none: every request may do everything */
    ordo_metrics_endpoint_t metrics_endpoint;   /* GET /metrics */
    api_feed_t *feed;                /* GET /api/orders/changes */
} api_ctx_t;

/* Shared by the handlers (api.c, history.c). */
/* A customer's key acts for its customer alone (NULL: keys are off, or staff). */
const char *api_own_customer(const api_key_t *who);
/* A failed call to the store or the read model as the HTTP client sees it (503 for their failures). */
ordo_status api_upstream(const char *who, ordo_error_t *err);
/* Answers @p status with @p doc (taken; NULL: out of memory). */
ordo_status api_json_response(ordo_http_response_t *resp, int status, json_t *doc, ordo_error_t *err);
/* The read model's order as the API shows it. */
json_t *api_order_json(const Order__Order *o);

/* A request answered later (ordo_http_respond_later): what every kind of
 * such request (POST, one read, /healthz, history) keeps for its answer,
 * the first member of its own state. */
typedef struct api_pending {
    api_ctx_t *ctx;
    ordo_http_later_t *later;
    api_op op;
    struct timespec t0;                /* the request's start, for its latency */
    char method[8], path[160];         /* for the debug line */
} api_pending_t;

/* Takes @p req's answer out of the handler into @p p (resp then says so to
 * api_handle). On failure the caller frees its state and returns the status. */
ordo_status api_pending_take(api_pending_t *p, api_ctx_t *ctx, const ordo_http_request_t *req,
                             const struct timespec *t0, api_op op, ordo_http_response_t *resp, ordo_error_t *err);

/* Counts the answer (by class, latency, debug line) and gives it; @p p's
 * connection is gone after this (the caller then frees its state). */
void api_pending_answer(api_pending_t *p, ordo_http_response_t *resp);

/* history.c: GET /api/orders/{id}/events, and GET /api/orders/{id}?at= (both answered later) */
ordo_status api_order_events(api_ctx_t *ctx, const ordo_http_request_t *req, const struct timespec *t0, const char *id,
                             const api_key_t *who, ordo_http_response_t *resp, ordo_error_t *err);
ordo_status api_order_at(api_ctx_t *ctx, const ordo_http_request_t *req, const struct timespec *t0, const char *id,
                         const char *at, const api_key_t *who, ordo_http_response_t *resp, ordo_error_t *err);

/* Registers the metrics; call once before serving. */
void api_init(api_ctx_t *ctx);

/* The HTTP handler: routes and answers one request. */
void api_handle(void *ctx, const ordo_http_request_t *req, ordo_http_response_t *resp);

/* What GET /metrics shows: the HTTP figures and the process's. */
void api_render_metrics(void *ctx, ordo_buf_t *out);

#endif
