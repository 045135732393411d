/* eventstore: the gRPC event store. Thin: config, build, run, shut down. */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "es.h"
#include "ordo/order.h"
#include "ordo/config.h"
#include "ordo/daemon.h"
#include "ordo/http.h"
#include "ordo/log.h"
#include "ordo/migrate.h"

#define OPT(...) ORDO_OPTION(es_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("database-url", "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ordo", ORDO_OPT_STRING, database_url, 0, 0, "libpq URI of PostgreSQL or CockroachDB"),
    OPT("nats-url", "NATS_URL", "nats://127.0.0.1:4222", ORDO_OPT_STRING, nats_url, 0, 0, "NATS server with JetStream"),
    OPT("listen", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, listen, 0, 0, "gRPC listen address (port 0: any free port)"),
    OPT("log-level", "LOG_LEVEL", "info", ORDO_OPT_STRING, log_level, 0, 0, "debug, info, warn or error"),
    OPT("max-message-bytes", "ORDO_MAX_MESSAGE_BYTES", "1048576", ORDO_OPT_INT, max_message_bytes, 1024, ORDO_GRPC_READ_MAX_BYTES, "largest gRPC request accepted (RESOURCE_EXHAUSTED above)"),
    OPT("max-event-bytes", "ORDO_MAX_EVENT_BYTES", "524288", ORDO_OPT_INT, max_event_bytes, 16, 900 << 10, "largest event_data accepted (must fit a NATS message)"),
    OPT("max-batch-events", "ORDO_MAX_BATCH_EVENTS", "1000", ORDO_OPT_INT, max_batch_events, 1, 100000, "most events in one CreateEvent"),
    OPT("writers", "ORDO_WRITERS", "1", ORDO_OPT_INT, writers, 1, 64, "writer threads (database connections that append)"),
    OPT("group-commit-max", "ORDO_GROUP_COMMIT_MAX", "256", ORDO_OPT_INT, group_commit_max, 1, 4096, "CreateEvent calls per transaction (1: one transaction per call)"),
    OPT("group-commit-wait-us", "ORDO_GROUP_COMMIT_WAIT_US", "300", ORDO_OPT_INT, group_commit_wait_us, 0, 100000, "how long a writer waits for more calls to join a small batch while other callers are active (0: take what is queued)"),
    OPT("readers", "ORDO_READERS", "2", ORDO_OPT_INT, readers, 1, 64, "reader threads for GetEvents and admin calls"),
    OPT("max-streams", "ORDO_MAX_STREAMS", "64", ORDO_OPT_INT, max_streams, 1, 4096, "concurrent GetEventsStream calls"),
    OPT("max-streams-per-client", "ORDO_MAX_STREAMS_PER_CLIENT", "16", ORDO_OPT_INT, max_streams_per_client, 1, 4096, "concurrent GetEventsStream calls of one client (its certificate's name with TLS, else its address)"),
    OPT("stream-idle-ms", "ORDO_STREAM_IDLE_MS", "30000", ORDO_OPT_INT, stream_idle_ms, 100, 3600000, "a stream whose client reads nothing for this long is ended (DEADLINE_EXCEEDED)"),
    OPT("read-max-bytes", "ORDO_READ_MAX_BYTES", "4194304", ORDO_OPT_INT, read_max_bytes, 65536, 48 << 20, "a GetEvents answer (and a stream's page) stops at about this many bytes of events; the answer says more"),
    OPT("gap-timeout-ms", "ORDO_GAP_TIMEOUT_MS", "10000", ORDO_OPT_INT, gap_timeout_ms, 100, 3600000, "age after which a position gap is known never to fill"),
    OPT("statement-timeout-ms", "ORDO_STATEMENT_TIMEOUT_MS", "2000", ORDO_OPT_INT, statement_timeout_ms, 10, 600000, "bound on each write statement and idle time in a write transaction"),
    OPT("write-queue-calls", "ORDO_WRITE_QUEUE_CALLS", "8192", ORDO_OPT_INT, write_queue_calls, 1, 1000000, "CreateEvent calls waiting for the database, at most (UNAVAILABLE above)"),
    OPT("write-queue-bytes", "ORDO_WRITE_QUEUE_BYTES", "16777216", ORDO_OPT_INT, write_queue_bytes, 65536, 1 << 30, "their bytes, at most (UNAVAILABLE above)"),
    OPT("relay", "ORDO_RELAY", "true", ORDO_OPT_BOOL, relay, 0, 0, "publish the outbox to JetStream"),
    OPT("reconcile-after-s", "ORDO_RECONCILE_AFTER_S", "60", ORDO_OPT_INT, reconcile_after_s, 0, 86400, "re-drive a --reconcile-type stream whose last event is this old and not final (0: off)"),
    OPT("reconcile-every-ms", "ORDO_RECONCILE_EVERY_MS", "5000", ORDO_OPT_INT, reconcile_every_ms, 100, 3600000, "how often the reconciler looks"),
    OPT("reconcile-type", "ORDO_RECONCILE_TYPE", ORDO_ORDER_AGGREGATE, ORDO_OPT_STRING, reconcile_type, 0, 0, "the aggregate type whose streams must end in a final event"),
    OPT("reconcile-final", "ORDO_RECONCILE_FINAL", ORDO_EV_ORDER_APPROVED "," ORDO_EV_PAYMENT_FAILED "," ORDO_EV_PAYMENT_REFUNDED, ORDO_OPT_STRING, reconcile_final, 0, 0, "its final event types, comma-separated"),
    OPT("stream-max-age-s", "ORDO_STREAM_MAX_AGE_S", "604800", ORDO_OPT_INT, stream_max_age_s, 60, 2147483647, "the EVENTS stream keeps messages this long (the store keeps them for good; see docs/reliability.md)"),
    OPT("stream-max-mb", "ORDO_STREAM_MAX_MB", "1024", ORDO_OPT_INT, stream_max_mb, 1, 16777216, "and this many MiB of them, the oldest going first"),
    OPT("relay-batch", "ORDO_RELAY_BATCH", "500", ORDO_OPT_INT, relay_batch, 1, 100000, "outbox rows published per round"),
    OPT("relay-lease-ms", "ORDO_RELAY_LEASE_MS", "5000", ORDO_OPT_INT, relay_lease_ms, 500, 600000, "the relay lease: one instance per database publishes; another takes over this long after it goes silent"),
    OPT("shutdown-grace-ms", "ORDO_SHUTDOWN_GRACE_MS", "5000", ORDO_OPT_INT, shutdown_grace_ms, 0, 600000, "time in-flight calls get on SIGTERM"),
    OPT("grpc-threads", "ORDO_GRPC_THREADS", "1", ORDO_OPT_INT, grpc_threads, 1, 8, "gRPC completion-queue threads"),
    OPT("migrate", "ORDO_MIGRATE", "true", ORDO_OPT_BOOL, migrate, 0, 0, "apply sql/ migrations at start"),
    OPT("metrics-addr", "METRICS_ADDR", "", ORDO_OPT_STRING, metrics_addr, 0, 0, "serve GET /metrics (Prometheus) here; empty: off"),
    ORDO_TLS_OPTIONS(es_config_t, tls),
    ORDO_NATS_OPTIONS(es_config_t, nats),
    ORDO_GRPC_SERVER_OPTIONS(es_config_t),
};

static ordo_status check_config(const es_config_t *cfg, ordo_error_t *err)
{
    if (cfg->gap_timeout_ms < 3 * cfg->statement_timeout_ms)
        return ordo_error_set(err, ORDO_INVALID, "--gap-timeout-ms must be at least 3 x --statement-timeout-ms "
                                                 "(a write transaction must end before its gap is skipped)");
    if (cfg->max_event_bytes >= cfg->max_message_bytes)
        return ordo_error_set(err, ORDO_INVALID, "--max-event-bytes must be below --max-message-bytes");
    if (strlen(cfg->reconcile_final) > 400 || strpbrk(cfg->reconcile_final, "{}\"\\ ") != NULL ||
        cfg->reconcile_final[0] == '\0')
        return ordo_error_set(err, ORDO_INVALID,
                              "--reconcile-final must be event types separated by commas (no spaces, braces or quotes)");
    return ORDO_OK;
}

static ordo_status start(es_ctx_t *ctx, ordo_error_t *err)
{
    const es_config_t *cfg = ctx->cfg;
    ordo_grpc_server_config_t scfg = {.addr = cfg->listen, .max_message_bytes = cfg->max_message_bytes,
                                      .threads = cfg->grpc_threads, .tls = &cfg->tls,
                                      .client_roles = cfg->client_roles, .insecure = cfg->insecure};
    ordo_status st;
    int port = 0;

    if (cfg->migrate && (st = ordo_migrate_url(cfg->database_url, err)) != ORDO_OK)
        return st;
    if ((st = es_watermark_create(ctx, &ctx->watermark, err)) != ORDO_OK ||
        (cfg->relay && (st = es_relay_create(ctx, &ctx->relay, err)) != ORDO_OK) ||
        (st = es_writer_create(ctx, &ctx->writer, err)) != ORDO_OK ||
        (st = es_readers_create(ctx, &ctx->readers, err)) != ORDO_OK ||
        (st = es_streams_create(ctx, &ctx->streams)) != ORDO_OK ||
        (st = ordo_grpc_server_create(&scfg, &ctx->server, err)) != ORDO_OK ||
        (st = es_service_register(ctx, err)) != ORDO_OK ||
        (st = ordo_grpc_server_start(ctx->server, &port, err)) != ORDO_OK)
        return st;
    ORDO_INFO("eventstore serving", "listen=%s port=%d writers=%d group_commit_max=%d relay=%s",
              cfg->listen, port, cfg->writers, cfg->group_commit_max, cfg->relay ? "on" : "off");
    /* for scripts that start us on port 0 */
    printf("port=%d\n", port);
    if (cfg->metrics_addr[0] != '\0') {
        if ((st = es_metrics_start(ctx, &ctx->metrics, &port, err)) != ORDO_OK)
            return st;
        printf("metrics_port=%d\n", port);
    }
    fflush(stdout);
    return ORDO_OK;
}

/* Stops in dependency order: no new calls, finish appends, end streams,
 * then let the relay publish the last commits. */
static void stop(es_ctx_t *ctx)
{
    /* streams see the server stopping and end; appends in flight complete */
    if (ctx->server != NULL)
        ordo_grpc_server_shutdown(ctx->server, ctx->cfg->shutdown_grace_ms);
    ordo_http_stop(ctx->metrics);
    es_streams_destroy(ctx->streams);
    es_writer_destroy(ctx->writer);
    es_readers_destroy(ctx->readers);
    ordo_grpc_server_destroy(ctx->server);
    es_relay_destroy(ctx->relay);
    es_watermark_destroy(ctx->watermark);
}

int main(int argc, char **argv)
{
    es_config_t cfg;
    es_ctx_t ctx;
    ordo_error_t err;
    int rc, sig;

    memset(&cfg, 0, sizeof cfg);
    if ((rc = ordo_daemon_init("eventstore", options, sizeof options / sizeof options[0], &cfg, &cfg.log_level, argc,
                               argv)) >= 0)
        return rc;
    if (check_config(&cfg, &err) != ORDO_OK) {
        fprintf(stderr, "eventstore: %s\n", err.msg);
        return 2;
    }
    rc = 0;
    memset(&ctx, 0, sizeof ctx);
    ctx.cfg = &cfg;
    es_stats_init(&ctx.stats);
    if (start(&ctx, &err) != ORDO_OK) {
        ORDO_ERROR("eventstore cannot start", "err=\"%s\"", err.msg);
        rc = 1;
    } else {
        sig = ordo_daemon_wait();
        ORDO_INFO("eventstore stopping", "signal=%d", sig);
    }
    stop(&ctx);
    if (rc == 0)
        ORDO_INFO("eventstore stopped", "%s", "");
    return rc;
}
