#include "ordo/saga.h"

#include "ordo/esclient.h"
#include "ordo/log.h"
#include "ordo/trace.h"
#include "ordo/uuid.h"

ordo_msg_action ordo_saga_followup(ordo_grpc_client_t *store, const ordo_bus_event_t *cause, const char *step,
                                   const char *event_type, const char *data, int timeout_ms)
{
    char id[ORDO_UUID_LEN], traceparent[ORDO_TRACEPARENT_LEN];
    ordo_trace_t parent, span;
    bool traced = ordo_trace_parse(cause->traceparent, &parent);
    ordo_es_event_t ev = {.event_id = id, .event_type = event_type, .aggregate_id = cause->aggregate_id,
                          .aggregate_type = cause->aggregate_type, .data = data,
                          .correlation_id = cause->aggregate_id, .causation_id = cause->event_id,
                          .traceparent = traceparent, .tracestate = traced ? cause->tracestate : NULL,
                          .service = ordo_log_service()};
    ordo_es_result_t res;
    ordo_error_t err;
    ordo_status st;

    /* the follow-up is a span of the cause's trace (a cause without one starts a trace) */
    ordo_trace_child(traced ? &parent : NULL, &span);
    ordo_trace_format(&span, traceparent);
    if (!ordo_uuid_v5(cause->event_id, step, id)) {
        ORDO_ERROR("cause has no valid event id", "type=%s aggregate=%s trace_id=%s", cause->event_type,
                   cause->aggregate_id, span.trace_id);
        return ORDO_MSG_TERM;
    }
    st = ordo_es_append(store, &ev, cause->version, timeout_ms, &res, &err);
    switch (st) {
    case ORDO_OK:   /* routine: the event store keeps every step (debug level repeats it here) */
        ORDO_DEBUG(res.duplicate ? "follow-up already appended" : "follow-up appended",
                   "order_id=%s event=%s event_id=%s version=%lld causation_id=%s trace_id=%s", cause->aggregate_id,
                   event_type, id, (long long)res.version, cause->event_id, span.trace_id);
        return ORDO_MSG_ACK;
    case ORDO_CONFLICT:
        ORDO_WARN("the order moved on before this step: nothing to do", "order_id=%s event=%s trace_id=%s err=\"%s\"",
                  cause->aggregate_id, event_type, span.trace_id, err.msg);
        return ORDO_MSG_ACK;
    case ORDO_INVALID:
        ORDO_ERROR("the store refused the follow-up", "order_id=%s event=%s trace_id=%s err=\"%s\"",
                   cause->aggregate_id, event_type, span.trace_id, err.msg);
        return ORDO_MSG_TERM;
    default:
        if (ordo_msg_action_of(st) == ORDO_MSG_WAIT) {   /* the consumer holds the message and hands it again */
            if (cause->round == 1)
                ORDO_WARN("the event store is unreachable; waiting for it",
                          "order_id=%s event=%s trace_id=%s err=\"%s\"", cause->aggregate_id, event_type, span.trace_id,
                          err.msg);
            return ORDO_MSG_WAIT;
        }
        ORDO_WARN("cannot append the follow-up now; will retry", "order_id=%s event=%s trace_id=%s err=\"%s\"",
                  cause->aggregate_id, event_type, span.trace_id, err.msg);
        return ORDO_MSG_RETRY;
    }
}
