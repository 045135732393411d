/* paymentsvc: a durable consumer of order events that debits, fails and refunds payments. */
#include <stddef.h>
#include <stdio.h>

#include "ordo/daemon.h"
#include "ordo/log.h"
#include "ordo/order.h"
#include "payment.h"

#define OPT(...) ORDO_OPTION(pay_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("nats-url", "NATS_URL", "nats://127.0.0.1:4222", ORDO_OPT_STRING, nats_url, 0, 0, "NATS server with JetStream"),
    OPT("eventstore-addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, eventstore_addr, 0, 0, "event store"),
    OPT("log-level", "LOG_LEVEL", "info", ORDO_OPT_STRING, log_level, 0, 0, "debug, info, warn or error"),
    ORDO_TLS_OPTIONS(pay_config_t, tls),
    OPT("metrics-addr", "METRICS_ADDR", "", ORDO_OPT_STRING, metrics_addr, 0, 0, "serve GET /metrics (Prometheus) here, a loopback address; port 0: any (printed as metrics_port=N); empty: off"),
    ORDO_NATS_OPTIONS(pay_config_t, nats),
    OPT("limit", "PAYMENT_LIMIT", "500", ORDO_OPT_INT, limit, 0, 100000000, "most a customer may be charged for one order (whole units); more fails"),
    OPT("concurrency", "ORDO_CONCURRENCY", "4", ORDO_OPT_INT, concurrency, 1, 256, "messages handled in parallel (one aggregate's stay in order)"),
    OPT("timeout-ms", "ORDO_TIMEOUT_MS", "5000", ORDO_OPT_INT, timeout_ms, 100, 600000, "deadline of event store calls"),
};

int main(int argc, char **argv)
{
    pay_config_t cfg = {0};
    pay_ctx_t ctx = {&cfg, NULL};
    int rc = ordo_daemon_init("paymentsvc", options, sizeof options / sizeof options[0], &cfg, &cfg.log_level, argc, argv);

    if (rc >= 0)
        return rc;
    ORDO_INFO("payment rule", "limit=%d", cfg.limit);
    /* One durable per event type it handles (NATS 2.9 filters one subject per
     * consumer): the other order events never reach it. A refund is caused by
     * a rejection that follows this service's own debit, so the two need no
     * order between them. */
    const ordo_daemon_consumer_t consumers[] = {
        {"paymentsvc-order-created", "events." ORDO_ORDER_AGGREGATE "." ORDO_EV_ORDER_CREATED, cfg.concurrency},
        {"paymentsvc-order-rejected", "events." ORDO_ORDER_AGGREGATE "." ORDO_EV_ORDER_REJECTED, cfg.concurrency},
    };
    return ordo_daemon_run_consumers(consumers, 2, cfg.nats_url, &cfg.nats, cfg.eventstore_addr, &cfg.tls, cfg.metrics_addr, cfg.timeout_ms, pay_decide, &ctx, &ctx.store);
}
