/* restaurantsvc: a durable consumer of paid orders that approves or rejects them. */
#include <stddef.h>
#include <stdio.h>

#include "ordo/daemon.h"
#include "ordo/log.h"
#include "ordo/order.h"
#include "restaurant.h"

#define OPT(...) ORDO_OPTION(rest_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("nats-url", "NATS_URL", "nats://127.0.0.1:4222", ORDO_OPT_STRING, nats_url, 0, 0, "NATS server with JetStream"),
    OPT("eventstore-addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, eventstore_addr, 0, 0, "event store"),
    OPT("log-level", "LOG_LEVEL", "info", ORDO_OPT_STRING, log_level, 0, 0, "debug, info, warn or error"),
    ORDO_TLS_OPTIONS(rest_config_t, tls),
    OPT("metrics-addr", "METRICS_ADDR", "", ORDO_OPT_STRING, metrics_addr, 0, 0, "serve GET /metrics (Prometheus) here, a loopback address; port 0: any (printed as metrics_port=N); empty: off"),
    ORDO_NATS_OPTIONS(rest_config_t, nats),
    OPT("unavailable", "RESTAURANT_UNAVAILABLE", "SOLD-OUT", ORDO_OPT_STRING, unavailable, 0, 0, "comma-separated item codes that get an order rejected"),
    OPT("concurrency", "ORDO_CONCURRENCY", "4", ORDO_OPT_INT, concurrency, 1, 256, "messages handled in parallel (one aggregate's stay in order)"),
    OPT("timeout-ms", "ORDO_TIMEOUT_MS", "5000", ORDO_OPT_INT, timeout_ms, 100, 600000, "deadline of event store calls"),
};

int main(int argc, char **argv)
{
    rest_config_t cfg = {0};
    rest_ctx_t ctx = {&cfg, NULL};
    int rc = ordo_daemon_init("restaurantsvc", options, sizeof options / sizeof options[0], &cfg, &cfg.log_level, argc, argv);

    if (rc >= 0)
        return rc;
    ORDO_INFO("restaurant rule", "unavailable=%s", cfg.unavailable);
    const ordo_daemon_consumer_t consumer = {"restaurantsvc", "events." ORDO_ORDER_AGGREGATE "." ORDO_EV_PAYMENT_DEBITED,
                                             cfg.concurrency};
    return ordo_daemon_run_consumers(&consumer, 1, cfg.nats_url, &cfg.nats, cfg.eventstore_addr, &cfg.tls, cfg.metrics_addr, cfg.timeout_ms, rest_decide, &ctx, &ctx.store);
}
