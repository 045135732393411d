#include "ordo/esclient.h"

#include <stdlib.h>
#include <string.h>

/* Adds key=value (when value is set) to @p e's metadata, using the slots @p meta/@p ptrs. */
static void add_meta(Eventstore__Event *e, Eventstore__Event__MetadataEntry *meta,
                     Eventstore__Event__MetadataEntry **ptrs, const char *key, const char *value)
{
    if (value == NULL || *value == '\0')
        return;
    eventstore__event__metadata_entry__init(&meta[e->n_metadata]);
    meta[e->n_metadata].key = (char *)key;
    meta[e->n_metadata].value = (char *)value;
    ptrs[e->n_metadata] = &meta[e->n_metadata];
    e->n_metadata++;
    e->metadata = ptrs;
}

/* The CreateEvent request for @p ev into @p req, with @p e and the metadata
 * slots @p meta / @p ptrs (all the caller's, borrowed by req). */
static void append_request(const ordo_es_event_t *ev, int64_t expected, Eventstore__CreateEventRequest *req,
                           Eventstore__Event *e, Eventstore__Event__MetadataEntry meta[5],
                           Eventstore__Event__MetadataEntry *ptrs[5])
{
    e->event_id = (char *)(ev->event_id ? ev->event_id : "");
    e->event_type = (char *)ev->event_type;
    e->aggregate_id = (char *)ev->aggregate_id;
    e->aggregate_type = (char *)ev->aggregate_type;
    e->event_data = (char *)ev->data;
    add_meta(e, meta, ptrs, "correlation_id", ev->correlation_id);
    add_meta(e, meta, ptrs, "causation_id", ev->causation_id);
    add_meta(e, meta, ptrs, "traceparent", ev->traceparent);
    add_meta(e, meta, ptrs, "tracestate", ev->tracestate);
    add_meta(e, meta, ptrs, "service", ev->service);
    req->event = e;
    if (expected >= 0) {
        req->expected_case = EVENTSTORE__CREATE_EVENT_REQUEST__EXPECTED_EXPECTED_VERSION;
        req->expected_version = expected;
    }
}

/* The answer's figures into @p res; frees the answer. */
static void append_result(ProtobufCMessage *out, ordo_es_result_t *res)
{
    Eventstore__CreateEventResponse *r = (Eventstore__CreateEventResponse *)out;
    res->version = r->version;
    res->position = r->position;
    res->duplicate = r->duplicate;
    protobuf_c_message_free_unpacked(out, NULL);
}

ordo_status ordo_es_append(ordo_grpc_client_t *c, const ordo_es_event_t *ev, int64_t expected, int timeout_ms,
                           ordo_es_result_t *res, ordo_error_t *err)
{
    Eventstore__CreateEventRequest req = EVENTSTORE__CREATE_EVENT_REQUEST__INIT;
    Eventstore__Event e = EVENTSTORE__EVENT__INIT;
    Eventstore__Event__MetadataEntry meta[5], *metap[5];
    ProtobufCMessage *out = NULL;
    ordo_status st;

    append_request(ev, expected, &req, &e, meta, metap);
    st = ordo_grpc_client_unary_traced(c, "/eventstore.EventStore/CreateEvent", &req.base,
                                       &eventstore__create_event_response__descriptor, timeout_ms, ev->traceparent,
                                       &out, err);
    if (st == ORDO_OK)
        append_result(out, res);
    return st;
}

/* An asynchronous append's callback and its argument, until the call ends. */
typedef struct append_call {
    ordo_es_append_cb done;
    void *arg;
} append_call_t;

static void append_done(void *arg, ordo_status st, ProtobufCMessage *out, const ordo_error_t *err)
{
    append_call_t call = *(append_call_t *)arg;
    ordo_es_result_t res = {0};

    free(arg);
    if (st == ORDO_OK)
        append_result(out, &res);
    call.done(call.arg, st, &res, err);
}

ordo_status ordo_es_append_async(ordo_grpc_client_t *c, const ordo_es_event_t *ev, int64_t expected, int timeout_ms,
                                 ordo_es_append_cb done, void *arg, ordo_error_t *err)
{
    Eventstore__CreateEventRequest req = EVENTSTORE__CREATE_EVENT_REQUEST__INIT;
    Eventstore__Event e = EVENTSTORE__EVENT__INIT;
    Eventstore__Event__MetadataEntry meta[5], *metap[5];
    append_call_t *call = malloc(sizeof *call);
    ordo_status st;

    if (call == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    *call = (append_call_t){done, arg};
    append_request(ev, expected, &req, &e, meta, metap);
    st = ordo_grpc_client_unary_async(c, "/eventstore.EventStore/CreateEvent", &req.base,
                                      &eventstore__create_event_response__descriptor, timeout_ms, ev->traceparent,
                                      append_done, call, err);
    if (st != ORDO_OK)
        free(call);
    return st;
}

const char *ordo_es_event_meta(const Eventstore__Event *e, const char *key)
{
    for (size_t i = 0; i < e->n_metadata; i++)
        if (strcmp(e->metadata[i]->key, key) == 0)
            return e->metadata[i]->value;
    return NULL;
}

ordo_status ordo_es_read(ordo_grpc_client_t *c, const Eventstore__GetEventsRequest *req, int timeout_ms,
                         Eventstore__GetEventsResponse **out, ordo_error_t *err)
{
    return ordo_grpc_client_unary(c, "/eventstore.EventStore/GetEvents", &req->base,
                                  &eventstore__get_events_response__descriptor, timeout_ms,
                                  (ProtobufCMessage **)out, err);
}

ordo_status ordo_es_read_async(ordo_grpc_client_t *c, const Eventstore__GetEventsRequest *req, int timeout_ms,
                               ordo_grpc_done_cb done, void *arg, ordo_error_t *err)
{
    return ordo_grpc_client_unary_async(c, "/eventstore.EventStore/GetEvents", &req->base,
                                        &eventstore__get_events_response__descriptor, timeout_ms, NULL, done, arg, err);
}
