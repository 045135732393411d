/* orderapi: HTTP orders and queries (libmicrohttpd + jansson). */
#include <stddef.h>
#include <stdio.h>

#include "api.h"
#include "feed.h"
#include "ordo/daemon.h"
#include "ordo/log.h"

#define OPT(...) ORDO_OPTION(api_config_t, __VA_ARGS__)

/* A stream connection's kernel send buffer: what a client that stops
 * reading holds of the server's memory besides its place in the history. */
#define STREAM_SNDBUF (32 * 1024)

static const ordo_option_t options[] = {
    OPT("http-addr", "HTTP_ADDR", "127.0.0.1:8080", ORDO_OPT_STRING, http_addr, 0, 0, "HTTP listen address (port 0: any free port)"),
    OPT("eventstore-addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, eventstore_addr, 0, 0, "event store"),
    OPT("orderquery-addr", "ORDERQUERY_ADDR", "127.0.0.1:50052", ORDO_OPT_STRING, orderquery_addr, 0, 0, "read model (orderquery); several as ipv4:a:p1,b:p2"),
    OPT("log-level", "LOG_LEVEL", "info", ORDO_OPT_STRING, log_level, 0, 0, "debug, info, warn or error"),
    OPT("threads", "ORDO_HTTP_THREADS", "4", ORDO_OPT_INT, threads, 1, 256, "HTTP worker threads (a request waiting on the event store or orderquery holds none)"),
    OPT("max-body", "ORDO_MAX_BODY", "65536", ORDO_OPT_INT, max_body, 256, 16 << 20, "largest request body (413 above)"),
    OPT("max-items", "ORDO_MAX_ITEMS", "100", ORDO_OPT_INT, max_items, 1, 10000, "most order items in one order"),
    OPT("http-idle-s", "ORDO_HTTP_IDLE_S", "10", ORDO_OPT_INT, http_idle_s, 1, 3600, "an HTTP connection that sends nothing for this long is closed"),
    OPT("http-max-connections", "ORDO_HTTP_MAX_CONNECTIONS", "1024", ORDO_OPT_INT, http_max_connections, 1, 65536, "open HTTP connections in all (more are refused)"),
    OPT("http-max-per-address", "ORDO_HTTP_MAX_PER_ADDRESS", "64", ORDO_OPT_INT, http_max_per_address, 1, 65536, "open HTTP connections from one client address (more are refused): slow clients at one address cannot take the server"),
    OPT("timeout-ms", "ORDO_TIMEOUT_MS", "3000", ORDO_OPT_INT, timeout_ms, 100, 600000, "deadline of calls to the store and read model"),
    ORDO_TLS_OPTIONS(api_config_t, tls),
    OPT("api-keys-file", "ORDO_API_KEYS_FILE", "", ORDO_OPT_STRING, api_keys_file, 0, 0, "API keys (their SHA-256 and scope, one a line): orders then need Authorization: Bearer <key>"),
    OPT("https-cert", "ORDO_HTTPS_CERT", "", ORDO_OPT_STRING, https_cert, 0, 0, "serve HTTPS with this certificate chain (PEM file), with --https-key"),
    OPT("https-key", "ORDO_HTTPS_KEY", "", ORDO_OPT_STRING, https_key, 0, 0, "the HTTPS certificate's private key (PEM file)"),
    OPT("metrics-addr", "METRICS_ADDR", "", ORDO_OPT_STRING, metrics_addr, 0, 0, "serve GET /metrics here (plain HTTP) instead of on --http-addr; empty: on --http-addr"),
    OPT("changes-history", "ORDO_CHANGES_HISTORY", "4096", ORDO_OPT_INT, changes_history, 16, 1000000, "order changes held for GET /api/orders/changes: a stream this far behind is dropped, and a Last-Event-ID within it resumes exactly"),
    OPT("changes-max-streams", "ORDO_CHANGES_MAX_STREAMS", "512", ORDO_OPT_INT, changes_max_streams, 0, 65536, "GET /api/orders/changes streams open at once (more get 503); each is one of --http-max-connections"),
    OPT("changes-lookback-ms", "ORDO_CHANGES_LOOKBACK_MS", "3000", ORDO_OPT_INT, changes_lookback_ms, 100, 600000, "a read-model write that commits this much later than a newer one is still streamed"),
    OPT("changes-poll-ms", "ORDO_CHANGES_POLL_MS", "250", ORDO_OPT_INT, changes_poll_ms, 20, 10000, "how often the change feed reads the read model"),
    OPT("insecure", "ORDO_INSECURE", "false", ORDO_OPT_BOOL, insecure, 0, 0, "serve an address other than loopback without HTTPS and API keys (refused otherwise)"),
};

int main(int argc, char **argv)
{
    api_config_t cfg = {0};
    api_ctx_t ctx = {0};
    ordo_http_config_t hcfg;
    ordo_http_server_t *http = NULL, *metrics = NULL;
    ordo_error_t err;
    int port = 0, mport = 0;
    int rc = ordo_daemon_init("orderapi", options, sizeof options / sizeof options[0], &cfg, &cfg.log_level, argc, argv);

    if (rc >= 0)
        return rc;
    ctx.cfg = &cfg;
    if (cfg.api_keys_file[0] != '\0' && api_keys_load(cfg.api_keys_file, &ctx.keys, &err) != ORDO_OK) {
        ORDO_ERROR("orderapi cannot start", "err=\"%s\"", err.msg);
        return 1;
    }
    if (ctx.keys.n == 0)
        ORDO_WARN("no API keys: anyone who reaches the HTTP address may place and read every order",
                  "http=%s", cfg.http_addr);
    api_init(&ctx);
    hcfg = (ordo_http_config_t){.addr = cfg.http_addr, .threads = cfg.threads, .max_body = (size_t)cfg.max_body,
                                .connection_timeout_s = cfg.http_idle_s, .max_connections = cfg.http_max_connections,
                                .max_per_address = cfg.http_max_per_address, .tls_cert_file = cfg.https_cert,
                                .tls_key_file = cfg.https_key, .authenticated = ctx.keys.n > 0,
                                .insecure = cfg.insecure, .max_streams = cfg.changes_max_streams,
                                .stream_sndbuf = STREAM_SNDBUF,
                                .enable_hint = "set --https-cert, --https-key and --api-keys-file"};
    if (ordo_grpc_client_create(cfg.eventstore_addr, ORDO_GRPC_APPEND_MAX_BYTES, &cfg.tls, &ctx.store, &err) != ORDO_OK ||
        ordo_grpc_client_create(cfg.orderquery_addr, ORDO_GRPC_PAGE_MAX_BYTES, &cfg.tls, &ctx.query, &err) != ORDO_OK ||
        api_feed_start(&ctx, &ctx.feed, &err) != ORDO_OK ||
        ordo_http_start(&hcfg, api_handle, &ctx, &http, &port, &err) != ORDO_OK ||
        (cfg.metrics_addr[0] != '\0' &&
         ordo_http_serve_metrics(cfg.metrics_addr, cfg.insecure, &ctx.metrics_endpoint, &metrics, &mport, &err) !=
             ORDO_OK)) {
        ORDO_ERROR("orderapi cannot start", "err=\"%s\"", err.msg);
        rc = 1;
    } else {
        ORDO_INFO("orderapi serving", "http=%s port=%d eventstore=%s orderquery=%s", cfg.http_addr, port,
                  cfg.eventstore_addr, cfg.orderquery_addr);
        printf("port=%d\n", port);
        if (metrics != NULL)
            printf("metrics_port=%d\n", mport);
        fflush(stdout);
        rc = ordo_daemon_wait();
        ORDO_INFO("orderapi stopping", "signal=%d", rc);
        rc = 0;
    }
    ordo_http_stop(metrics);
    ordo_http_stop(http);   /* (its streams first: they read the feed) */
    api_feed_destroy(ctx.feed);
    ordo_grpc_client_destroy(ctx.query);
    ordo_grpc_client_destroy(ctx.store);
    api_keys_free(&ctx.keys);
    return rc;
}
