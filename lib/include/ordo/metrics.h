/**
 * @file metrics.h
 * Counters and latency histograms rendered in the Prometheus text format.
 * Metrics are registered once at start (not thread-safe then); updating
 * them is lock-free and thread-safe.
 */
#ifndef ORDO_METRICS_H
#define ORDO_METRICS_H

#include <stdatomic.h>

#include "ordo/buf.h"

#define ORDO_METRICS_MAX 32
#define ORDO_HIST_BUCKETS 12

typedef struct ordo_metric {
    const char *name;           /**< e.g. "ordo_http_requests_total" */
    const char *labels;         /**< e.g. "code=\"2xx\"", or "" */
    const char *help;
    bool histogram;
    atomic_llong value;         /**< counter, or the histogram's count */
    atomic_llong sum_us;        /**< histogram: sum of observations, µs */
    atomic_llong buckets[ORDO_HIST_BUCKETS];
} ordo_metric_t;

typedef struct ordo_metrics {
    ordo_metric_t m[ORDO_METRICS_MAX];
    int n;
} ordo_metrics_t;

/** Registers a counter (or a histogram of seconds); NULL when the registry is full. */
ordo_metric_t *ordo_metrics_counter(ordo_metrics_t *r, const char *name, const char *labels, const char *help);
ordo_metric_t *ordo_metrics_histogram(ordo_metrics_t *r, const char *name, const char *help);

void ordo_metric_inc(ordo_metric_t *m);
/** Records one observation of @p us microseconds. */
void ordo_metric_observe_us(ordo_metric_t *m, long long us);

/** Appends the text exposition of every metric to @p out. */
void ordo_metrics_render(ordo_metrics_t *r, ordo_buf_t *out);

#endif
