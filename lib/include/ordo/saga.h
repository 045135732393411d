/**
 * @file saga.h
 * One saga step: append the follow-up event a bus event causes, so that a
 * redelivered message can never act twice.
 */
#ifndef ORDO_SAGA_H
#define ORDO_SAGA_H

#include "ordo/consumer.h"
#include "ordo/grpc.h"

/** What a saga step decided for one event: a follow-up to append, or an action now. */
typedef struct ordo_saga_step {
    const char *step;          /**< the step's name: the follow-up's id is UUIDv5(cause id, step) */
    const char *event_type;    /**< the follow-up's type; NULL: none, `action` stands */
    char *data;                /**< its JSON, malloc'd (ordo_saga_run frees it); NULL with a type: no memory (RETRY) */
    ordo_msg_action action;    /**< without a follow-up (ACK unless set) */
} ordo_saga_step_t;

/** Decides @p ev's step into *@p out (zeroed but for action = ACK). Runs on a
 *  lane's thread; pure rules (may block only in a rare fallback). */
typedef void (*ordo_saga_decide_cb)(void *ctx, const ordo_bus_event_t *ev, ordo_saga_step_t *out);

/**
 * A saga service's batch handler: decides each of @p n events, then appends
 * every follow-up at once (asynchronous calls; one aggregate's in turn, in
 * stream order) and waits for them. A follow-up has the id UUIDv5(cause id,
 * step) and the cause's version as expected version; the correlation id is
 * the aggregate id, the causation id the cause's id, its trace a child of
 * the cause's. actions[i]: ACK when appended or already appended (duplicate)
 * or when the aggregate has moved on (logged); WAIT when the store is
 * unreachable or the call timed out (the consumer holds the message without
 * spending a delivery); TERM when the store refuses the event as invalid or
 * the cause has no valid event id; RETRY for any other failure.
 */
void ordo_saga_run(ordo_grpc_client_t *store, int timeout_ms, ordo_saga_decide_cb decide, void *ctx,
                   const ordo_bus_event_t *events, int n, ordo_msg_action *actions);

#endif
