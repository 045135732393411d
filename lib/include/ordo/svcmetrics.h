/**
 * @file svcmetrics.h
 * The /metrics of a service that consumes the bus: per durable consumer
 * (label durable="..."), ordo_consumer_handled_total, _held_total,
 * _redelivered_total, _parked_total and the pending gauge; one histogram
 * ordo_consumer_handle_duration_seconds; and the process_* figures.
 * Set up once before the consumers start; rendering is thread-safe.
 */
#ifndef ORDO_SVCMETRICS_H
#define ORDO_SVCMETRICS_H

#include "ordo/buf.h"
#include "ordo/consumer.h"
#include "ordo/http.h"
#include "ordo/metrics.h"

#define ORDO_SERVICE_MAX_CONSUMERS 4

typedef struct ordo_service_metrics {
    ordo_metrics_t registry;
    ordo_metric_t *latency;
    int n;
    char labels[ORDO_SERVICE_MAX_CONSUMERS][96];
    ordo_consumer_counters_t counters[ORDO_SERVICE_MAX_CONSUMERS];
    ordo_consumer_t *consumers[ORDO_SERVICE_MAX_CONSUMERS];   /**< for the pending gauge (not owned) */
    ordo_metrics_render_cb extra;   /**< the service's own figures (may be NULL), rendered after these */
    void *extra_ctx;
    ordo_metrics_endpoint_t endpoint;   /**< what ordo_service_metrics_serve serves */
} ordo_service_metrics_t;

/** Registers the metrics of the durables of @p cfgs[0..n) and points each
 *  config's counters at them (n at most ORDO_SERVICE_MAX_CONSUMERS). */
void ordo_service_metrics_init(ordo_service_metrics_t *m, ordo_consumer_config_t *cfgs, int n);

/** The running consumer of cfgs[@p i], for its pending gauge. */
void ordo_service_metrics_watch(ordo_service_metrics_t *m, int i, ordo_consumer_t *c);

/** Appends the text exposition to @p out. */
void ordo_service_metrics_render(ordo_service_metrics_t *m, ordo_buf_t *out);

/** Serves GET /metrics on @p addr (plain HTTP: a loopback address; port 0:
 *  any, in *@p port) with @p m, which must outlive the server (ordo_http_stop). */
ordo_status ordo_service_metrics_serve(ordo_service_metrics_t *m, const char *addr, ordo_http_server_t **out, int *port,
                                       ordo_error_t *err);

#endif
