/* paymentsvc: decides payments for new orders and refunds rejected ones. */
#ifndef PAYMENT_H
#define PAYMENT_H

#include "ordo/consumer.h"
#include "ordo/grpc.h"
#include "ordo/saga.h"

typedef struct pay_config {
    const char *nats_url;
    const char *eventstore_addr;
    const char *metrics_addr;   /* "": no /metrics */
    ordo_grpc_tls_t tls;    /* of the event store connection */
    ordo_bus_auth_t nats;   /* NATS credentials and TLS */
    const char *log_level;
    int limit;              /* most a customer may be charged for one order, in whole units */
    int concurrency;
    int timeout_ms;
} pay_config_t;

typedef struct pay_ctx {
    const pay_config_t *cfg;
    ordo_grpc_client_t *store;
} pay_ctx_t;

/* The saga step (ordo_saga_run): order-created → debit or fail; order-rejected → refund. */
void pay_decide(void *ctx, const ordo_bus_event_t *ev, ordo_saga_step_t *out);

#endif
