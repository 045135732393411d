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

#define ORDO_METRICS_MAX 96
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

/** Registers a counter (or a histogram of seconds); NULL when the registry
 *  is full. @p labels ("" or e.g. `route="/healthz"`) must outlive the
 *  registry; register the series of one name one after the other (the text
 *  format wants them together). */
ordo_metric_t *ordo_metrics_counter(ordo_metrics_t *r, const char *name, const char *labels, const char *help);
ordo_metric_t *ordo_metrics_histogram(ordo_metrics_t *r, const char *name, const char *help);
ordo_metric_t *ordo_metrics_histogram_labelled(ordo_metrics_t *r, const char *name, const char *labels,
                                               const char *help);

void ordo_metric_inc(ordo_metric_t *m);
/** Records one observation of @p us microseconds. */
void ordo_metric_observe_us(ordo_metric_t *m, long long us);

/** Appends the text exposition of every metric to @p out. */
void ordo_metrics_render(ordo_metrics_t *r, ordo_buf_t *out);

/** Appends the series of one histogram @p m as @p name with @p labels ("" or
 *  `a="b",c="d"`), without the HELP and TYPE lines: for histograms kept
 *  outside a registry (the gRPC server's per method). */
void ordo_metric_render_histogram(const ordo_metric_t *m, const char *name, const char *labels, ordo_buf_t *out);

/** Appends a HELP and a TYPE line. */
void ordo_metrics_render_header(ordo_buf_t *out, const char *name, const char *type, const char *help);

/** Appends the process's own figures (Prometheus' process_* names):
 *  resident memory, CPU, open files, threads, start time. */
void ordo_process_metrics_render(ordo_buf_t *out);

/** A callback that appends a text exposition to @p out. */
typedef void (*ordo_metrics_render_cb)(void *ctx, ordo_buf_t *out);

#endif
