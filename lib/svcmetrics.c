/*
 * /metrics of a service that consumes the bus (paymentsvc, restaurantsvc,
 * orderquery): per durable, the messages handled, held (a dependency
 * down), redelivered and parked, what JetStream said was still pending
 * after the last fetch; the time the handler takes; and the process's own
 * figures. Prometheus text format, counters in _total, seconds.
 */
#include "ordo/svcmetrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Registers one counter per durable, the durables of one name together
 * (the text format wants a name's lines in one group). */
static void counters(ordo_service_metrics_t *m, int n, const char *name, const char *help, size_t field)
{
    for (int i = 0; i < n; i++) {
        ordo_metric_t **slot = (ordo_metric_t **)((char *)&m->counters[i] + field);
        *slot = ordo_metrics_counter(&m->registry, name, m->labels[i], help);
    }
}

void ordo_service_metrics_init(ordo_service_metrics_t *m, ordo_consumer_config_t *cfgs, int n)
{
    memset(m, 0, sizeof *m);
    m->n = n < ORDO_SERVICE_MAX_CONSUMERS ? n : ORDO_SERVICE_MAX_CONSUMERS;
    for (int i = 0; i < m->n; i++)
        snprintf(m->labels[i], sizeof m->labels[i], "durable=\"%s\"", cfgs[i].durable);
    counters(m, m->n, "ordo_consumer_handled_total", "messages handled and acknowledged",
             offsetof(ordo_consumer_counters_t, handled));
    counters(m, m->n, "ordo_consumer_held_total",
             "messages held because a dependency was unreachable (tried again without spending a delivery)",
             offsetof(ordo_consumer_counters_t, held));
    counters(m, m->n, "ordo_consumer_redelivered_total", "messages delivered more than once",
             offsetof(ordo_consumer_counters_t, redelivered));
    counters(m, m->n, "ordo_consumer_parked_total", "messages parked (given up on: stream PARKED)",
             offsetof(ordo_consumer_counters_t, parked));
    m->latency = ordo_metrics_histogram(&m->registry, "ordo_consumer_handle_duration_seconds",
                                        "time the handler takes for a message (a batch's time for each of its messages)");
    for (int i = 0; i < m->n; i++) {
        m->counters[i].latency = m->latency;
        cfgs[i].counters = &m->counters[i];
    }
}

void ordo_service_metrics_watch(ordo_service_metrics_t *m, int i, ordo_consumer_t *c)
{
    if (i >= 0 && i < m->n)
        m->consumers[i] = c;
}

void ordo_service_metrics_render(ordo_service_metrics_t *m, ordo_buf_t *out)
{
    ordo_metrics_render(&m->registry, out);
    ordo_buf_puts(out, "# HELP ordo_consumer_pending_messages stream messages JetStream had not handed over yet"
                       " (after the last fetch)\n# TYPE ordo_consumer_pending_messages gauge\n");
    for (int i = 0; i < m->n; i++)
        ordo_buf_printf(out, "ordo_consumer_pending_messages{%s} %lld\n", m->labels[i],
                        m->consumers[i] != NULL ? (long long)ordo_consumer_pending(m->consumers[i]) : 0LL);
    if (m->extra != NULL)
        m->extra(m->extra_ctx, out);
    ordo_process_metrics_render(out);
}

static void render(void *m, ordo_buf_t *out)
{
    ordo_service_metrics_render(m, out);
}

ordo_status ordo_service_metrics_serve(ordo_service_metrics_t *m, const char *addr, ordo_http_server_t **out, int *port,
                                       ordo_error_t *err)
{
    m->endpoint = (ordo_metrics_endpoint_t){render, m};
    return ordo_http_serve_metrics(addr, false, &m->endpoint, out, port, err);
}
