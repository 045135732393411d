/* ordoctl's configuration and output, shared by its commands (ordoctl.c, verify.c). */
#ifndef CTL_H
#define CTL_H

#include <jansson.h>
#include <stdbool.h>

#include "ordo/bus.h"
#include "ordo/grpc.h"
#include "ordo/status.h"

typedef struct ctl_config {
    const char *addr, *nats_url, *aggregate_id, *aggregate_type, *type, *data, *event_id, *metadata, *durable;
    const char *database_url;
    int expected, from, to, limit, count, timeout_ms, seq;
    bool fresh, repair;
    int sample, stuck_after_s, outbox_max;
    ordo_grpc_tls_t tls;
    ordo_bus_auth_t nats;
} ctl_config_t;

/* Prints @p doc (taken) as one line of JSON. */
void print_json(json_t *doc);

/* Prints {"error":{code,message}}; returns 1 (the exit status). */
int fail(const ordo_error_t *err);

/* ordoctl verify (verify.c). */
int ctl_verify(const ctl_config_t *cfg);

#endif
