/* restaurantsvc: approves or rejects paid orders. */
#ifndef RESTAURANT_H
#define RESTAURANT_H

#include "ordo/consumer.h"
#include "ordo/grpc.h"
#include "ordo/saga.h"

typedef struct rest_config {
    const char *nats_url;
    const char *eventstore_addr;
    const char *metrics_addr;   /* "": no /metrics */
    ordo_grpc_tls_t tls;    /* of the event store connection */
    ordo_bus_auth_t nats;   /* NATS credentials and TLS */
    const char *log_level;
    const char *unavailable;   /* comma-separated item codes the kitchen cannot make */
    int concurrency;
    int timeout_ms;
} rest_config_t;

typedef struct rest_ctx {
    const rest_config_t *cfg;
    ordo_grpc_client_t *store;
} rest_ctx_t;

/* The saga step (ordo_saga_run): order-payment-debited → order-approved or order-rejected. */
void rest_decide(void *ctx, const ordo_bus_event_t *ev, ordo_saga_step_t *out);

/* True when @p code is in the comma-separated @p list. */
bool rest_code_listed(const char *list, const char *code);

#endif
