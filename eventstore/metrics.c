/* GET /metrics on --metrics-addr: the store's counters and gauges in the
 * Prometheus text format (the same figures as EventStoreAdmin.GetStats
 * that need no database query), its gRPC methods' calls by code and
 * latency, and the process's figures. */
#include <stdlib.h>
#include <string.h>

#include "es.h"
#include "ordo/buf.h"
#include "ordo/http.h"

static void counter(ordo_buf_t *b, const char *name, const char *help, long long v)
{
    ordo_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %lld\n", name, help, name, name, v);
}

static void gauge(ordo_buf_t *b, const char *name, const char *help, long long v)
{
    ordo_buf_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name, v);
}

void es_stats_init(es_stats_t *s)
{
    s->append_latency = ordo_metrics_histogram(
        &s->latency, "ordo_eventstore_append_duration_seconds",
        "CreateEvent calls from the write queue to the answer (group-commit wait, transaction, retries)");
    s->tx_latency = ordo_metrics_histogram(&s->latency, "ordo_eventstore_transaction_duration_seconds",
                                           "write transactions from BEGIN to the COMMIT's answer, retries included");
}

/* Each durable's parked messages and lag, from JetStream (nothing while NATS is unreachable). */
static void parked_gauges(es_ctx_t *ctx, ordo_buf_t *b)
{
    struct {
        ordo_bus_lag_t *list;
        size_t n;
    } l;
    ordo_error_t err;

    if (es_relay_lags(ctx->relay, &l.list, &l.n, &err) != ORDO_OK)
        return;
    ordo_buf_puts(b, "# HELP ordo_consumer_parked_messages messages the durable parked (stream PARKED)\n"
                     "# TYPE ordo_consumer_parked_messages gauge\n");
    for (size_t i = 0; i < l.n; i++)
        ordo_buf_printf(b, "ordo_consumer_parked_messages{durable=\"%s\"} %lld\n", l.list[i].name,
                        (long long)l.list[i].parked);
    ordo_buf_puts(b, "# HELP ordo_consumer_pending_messages stream messages the durable has not been handed yet\n"
                     "# TYPE ordo_consumer_pending_messages gauge\n");
    for (size_t i = 0; i < l.n; i++)
        ordo_buf_printf(b, "ordo_consumer_pending_messages{durable=\"%s\"} %lld\n", l.list[i].name,
                        (long long)l.list[i].pending);
    free(l.list);
}

static void render(void *vctx, ordo_buf_t *b)
{
    es_ctx_t *ctx = vctx;
    es_stats_t *s = &ctx->stats;

    counter(b, "ordo_eventstore_appends_total", "CreateEvent calls answered with success", atomic_load(&s->appends));
    counter(b, "ordo_eventstore_conflicts_total", "CreateEvent calls refused for a wrong expected version",
            atomic_load(&s->conflicts));
    counter(b, "ordo_eventstore_duplicates_total", "CreateEvent calls answered as duplicates",
            atomic_load(&s->duplicates));
    counter(b, "ordo_eventstore_tx_retries_total", "write transactions retried", atomic_load(&s->tx_retries));
    counter(b, "ordo_eventstore_batches_total", "write transactions committed", atomic_load(&s->batches));
    counter(b, "ordo_eventstore_published_total", "events published and acknowledged by JetStream",
            atomic_load(&s->published));
    counter(b, "ordo_eventstore_publish_errors_total", "transient publish failures", atomic_load(&s->publish_errors));
    counter(b, "ordo_eventstore_outbox_deletes_total",
            "DELETE statements for published outbox rows (gathered over relay rounds)",
            atomic_load(&s->outbox_deletes));
    counter(b, "ordo_eventstore_write_queue_full_total",
            "CreateEvent calls refused UNAVAILABLE: the write queue was at its bound", atomic_load(&s->queue_full));
    counter(b, "ordo_eventstore_expired_total",
            "CreateEvent calls whose deadline passed before their write began (answered, never written)",
            atomic_load(&s->expired));
    counter(b, "ordo_eventstore_redriven_total", "stuck orders whose last event the reconciler queued again",
            atomic_load(&s->redriven));
    counter(b, "ordo_eventstore_stuck_total", "orders still stuck after the reconciler's re-drives (need a hand)",
            atomic_load(&s->stuck));
    counter(b, "ordo_eventstore_lost_republished_total",
            "events JetStream acknowledged and then lost, published again", atomic_load(&s->lost_republished));
    long long calls, bytes;
    es_writer_queued(ctx->writer, &calls, &bytes);
    gauge(b, "ordo_eventstore_write_queue_calls", "CreateEvent calls admitted and not yet answered", calls);
    gauge(b, "ordo_eventstore_write_queue_bytes", "their bytes in memory, about", bytes);
    counter(b, "ordo_eventstore_set_aside_total", "events JetStream refused for good", atomic_load(&s->set_aside));
    gauge(b, "ordo_eventstore_safe_position", "readers' high-water mark", es_watermark_get(ctx->watermark));
    gauge(b, "ordo_eventstore_relay_leader", "1 when this instance holds the relay lease (publishes the outbox)",
          es_relay_leading(ctx->relay) ? 1 : 0);
    gauge(b, "ordo_eventstore_outbox_backlog_positions",
          "committed positions the relay has not published yet (on the leading instance; 0 elsewhere)",
          es_relay_backlog(ctx->relay));
    gauge(b, "ordo_eventstore_database_up", "1 when the store's last look at its database succeeded",
          es_watermark_database_ok(ctx->watermark) ? 1 : 0);
    gauge(b, "ordo_eventstore_bus_connected", "1 when the relay has a NATS connection",
          es_relay_connected(ctx->relay) ? 1 : 0);
    parked_gauges(ctx, b);
    ordo_metrics_render(&s->latency, b);
    ordo_grpc_server_metrics_render(ctx->server, b);
    ordo_process_metrics_render(b);
}

ordo_status es_metrics_start(es_ctx_t *ctx, ordo_http_server_t **out, int *port, ordo_error_t *err)
{
    ctx->metrics_endpoint = (ordo_metrics_endpoint_t){render, ctx};
    return ordo_http_serve_metrics(ctx->cfg->metrics_addr, ctx->cfg->insecure, &ctx->metrics_endpoint, out, port,
                                   err);
}
