/* The gRPC face of the event store: hands each call to the module that serves it. */
#include "es.h"

static void on_create_event(void *vctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    es_ctx_t *ctx = vctx;
    es_append_t *a;
    ordo_error_t err;

    if (es_validate_append(ctx->cfg, call, (const Eventstore__CreateEventRequest *)msg, &a, &err) != ORDO_OK) {
        ordo_grpc_call_finish(call, err.code, err.msg, NULL);
        return;
    }
    if (es_writer_submit(ctx->writer, a, &err) != ORDO_OK) {
        es_append_free(a);
        ordo_grpc_call_finish(call, err.code, err.msg, NULL);
    }
}

static void on_get_events(void *vctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    es_ctx_t *ctx = vctx;
    (void)msg;
    es_readers_get_events(ctx->readers, call);
}

static void on_get_events_stream(void *vctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    es_ctx_t *ctx = vctx;
    es_streams_start(ctx->streams, call, (const Eventstore__GetEventsRequest *)msg);
}

static void on_get_stats(void *vctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    es_ctx_t *ctx = vctx;
    (void)msg;
    es_readers_stats(ctx->readers, call);
}

static void on_republish(void *vctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    es_ctx_t *ctx = vctx;
    (void)msg;
    es_readers_republish(ctx->readers, call);
}

static void on_list_parked(void *vctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    es_ctx_t *ctx = vctx;
    (void)msg;
    es_readers_submit(ctx->readers, es_parked_list, call);
}

static void on_replay_parked(void *vctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    es_ctx_t *ctx = vctx;
    (void)msg;
    es_readers_submit(ctx->readers, es_parked_replay, call);
}

ordo_status es_service_register(es_ctx_t *ctx, ordo_error_t *err)
{
    /* With TLS, who may call what (docs/security.md). GetStats only reads
     * counters: readers may (orderapi's /healthz asks it); a replay, and
     * parked messages (whose bodies may hold anything), are admin's. */
    static const ordo_grpc_method_t store[] = {
        {"CreateEvent", on_create_event, false, ORDO_ROLE_WRITER},
        {"GetEvents", on_get_events, false, ORDO_ROLE_READER},
        {"GetEventsStream", on_get_events_stream, true, ORDO_ROLE_READER},
    };
    static const ordo_grpc_method_t admin[] = {
        {"GetStats", on_get_stats, false, ORDO_ROLE_READER},
        {"Republish", on_republish, false, ORDO_ROLE_ADMIN},
        {"ListParked", on_list_parked, false, ORDO_ROLE_ADMIN},
        {"ReplayParked", on_replay_parked, false, ORDO_ROLE_ADMIN},
    };
    ordo_status st = ordo_grpc_server_add_service(ctx->server, &eventstore__event_store__descriptor,
                                                  store, sizeof store / sizeof store[0], ctx, err);
    if (st == ORDO_OK)
        st = ordo_grpc_server_add_service(ctx->server, &eventstore__event_store_admin__descriptor,
                                          admin, sizeof admin / sizeof admin[0], ctx, err);
    return st;
}
