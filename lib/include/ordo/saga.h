/**
 * @file saga.h
 * One saga step: append the follow-up event a bus event causes, so that a
 * redelivered message can never act twice.
 */
#ifndef ORDO_SAGA_H
#define ORDO_SAGA_H

#include "ordo/consumer.h"
#include "ordo/grpc.h"

/**
 * Appends @p event_type with @p data to the aggregate of @p cause, with the
 * id UUIDv5(cause id, @p step) and the expected version of @p cause; the
 * correlation id is the aggregate id, the causation id the cause's id.
 * @return ACK when appended or already appended (duplicate) or when the
 * aggregate has moved on (logged); WAIT when the store is unreachable or the
 * call timed out (the consumer holds the message without spending a
 * delivery); TERM when the store refuses the event as invalid or the cause
 * has no valid event id; RETRY for any other failure.
 */
ordo_msg_action ordo_saga_followup(ordo_grpc_client_t *store, const ordo_bus_event_t *cause, const char *step,
                                   const char *event_type, const char *data, int timeout_ms);

#endif
