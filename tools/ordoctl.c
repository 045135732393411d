/*
 * ordoctl: the operator's command-line client of the event store (gRPC) and
 * of the EVENTS stream (JetStream). Prints JSON, one document per line.
 *
 *   ordoctl append   --aggregate-id ID --aggregate-type T --type E --data JSON [--expected N] [--event-id UUID]
 *   ordoctl get      [--aggregate-id ID] [--aggregate-type T] [--type E] [--event-id UUID] [--from N] [--limit N]
 *   ordoctl tail     [--from N] [--count N] [--timeout-ms MS]     (GetEventsStream)
 *   ordoctl stats
 *   ordoctl republish --from N [--to M]
 *   ordoctl parked list [--durable D] [--from SEQ] [--limit N]    (messages consumers gave up on, and why)
 *   ordoctl parked replay [--durable D] [--seq SEQ]               (deliver them again to that durable)
 *   ordoctl bus-dump [--nats-url URL]                             (every message of EVENTS)
 *   ordoctl consumer-reset --durable NAME [--nats-url URL]        (delete a durable: it replays all on restart)
 *   ordoctl consumers [--nats-url URL]                            (durables of EVENTS and their lag)
 *   ordoctl trace ORDER_ID                                        (its causal chain, with times)
 *   ordoctl verify [--sample N] [--repair]                         (the whole system consistent? verify.c)
 */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore.pb-c.h"
#include "ordo/bus.h"
#include "ordo/config.h"
#include "ordo/grpc.h"
#include "ordo/esclient.h"
#include "ordo/migrate.h"
#include "ordo/order.h"
#include "ordo/trace.h"
#include "ctl.h"

#define OPT(...) ORDO_OPTION(ctl_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, addr, 0, 0, "event store address"),
    OPT("nats-url", "NATS_URL", "nats://127.0.0.1:4222", ORDO_OPT_STRING, nats_url, 0, 0, "NATS server (bus-dump)"),
    OPT("aggregate-id", NULL, "", ORDO_OPT_STRING, aggregate_id, 0, 0, "aggregate id"),
    OPT("aggregate-type", NULL, "", ORDO_OPT_STRING, aggregate_type, 0, 0, "aggregate type"),
    OPT("type", NULL, "", ORDO_OPT_STRING, type, 0, 0, "event type"),
    OPT("data", NULL, "{}", ORDO_OPT_STRING, data, 0, 0, "event data (JSON)"),
    OPT("event-id", NULL, "", ORDO_OPT_STRING, event_id, 0, 0, "event id (UUID)"),
    OPT("metadata", NULL, "", ORDO_OPT_STRING, metadata, 0, 0, "metadata as key=value,key=value"),
    OPT("durable", NULL, "", ORDO_OPT_STRING, durable, 0, 0, "consumer name (consumer-reset; parked: only its messages)"),
    OPT("seq", NULL, "0", ORDO_OPT_INT, seq, 0, 2147483647, "parked replay: only the message with this sequence in PARKED (0: all)"),
    OPT("database-url", "DATABASE_URL", "", ORDO_OPT_STRING, database_url, 0, 0, "migrate: the database, as the role that owns Ordo's tables (password from PGPASSFILE)"),
    OPT("expected", NULL, "-1", ORDO_OPT_INT, expected, -1, 2147483647, "expected version (-1: any)"),
    OPT("from", NULL, "0", ORDO_OPT_INT, from, 0, 2147483647, "position to start after / republish from / parked list from this sequence"),
    OPT("to", NULL, "0", ORDO_OPT_INT, to, 0, 2147483647, "last position to republish (0: the end)"),
    OPT("limit", NULL, "0", ORDO_OPT_INT, limit, 0, 100000, "most events (0: server default)"),
    OPT("count", NULL, "0", ORDO_OPT_INT, count, 0, 100000000, "tail: stop after this many events (0: never)"),
    OPT("timeout-ms", NULL, "10000", ORDO_OPT_INT, timeout_ms, 1, 86400000, "deadline of the call"),
    OPT("fresh", NULL, "false", ORDO_OPT_BOOL, fresh, 0, 0, "republish: publish at once with message ids of their own (up to 10,000 events; past JetStream's 2-minute duplicate window, for messages deleted or lost within it)"),
    OPT("sample", NULL, "0", ORDO_OPT_INT, sample, 0, 100000000, "verify: compare this many orders chosen at random (0: every order)"),
    OPT("stuck-after-s", NULL, "300", ORDO_OPT_INT, stuck_after_s, 1, 86400000, "verify: an order without a final status for longer is stuck"),
    OPT("outbox-max", NULL, "1000", ORDO_OPT_INT, outbox_max, 0, 100000000, "verify: more events waiting in the outbox is a problem"),
    OPT("repair", NULL, "false", ORDO_OPT_BOOL, repair, 0, 0, "verify: fix what can be fixed safely (publish missing events again, rewrite read-model rows that disagree) and say what was done"),
    ORDO_NATS_OPTIONS(ctl_config_t, nats),
    OPT("ca", "ORDO_CA", "", ORDO_OPT_STRING, tls.ca_file, 0, 0, "CA certificate (PEM) of a TLS event store; with --cert and --key"),
    OPT("cert", "ORDO_CERT", "", ORDO_OPT_STRING, tls.cert_file, 0, 0, "client certificate (PEM): its common name is the identity the store maps to a role"),
    OPT("key", "ORDO_KEY", "", ORDO_OPT_STRING, tls.key_file, 0, 0, "the client certificate's private key (PEM file)"),
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static json_t *event_json(const Eventstore__Event *ev)
{
    json_t *meta = json_object();
    json_t *data = json_loads(ev->event_data, JSON_DECODE_ANY, NULL);
    for (size_t i = 0; i < ev->n_metadata; i++)
        json_object_set_new(meta, ev->metadata[i]->key, json_string(ev->metadata[i]->value));
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:I, s:I, s:I, s:o}",
                     "event_id", ev->event_id, "event_type", ev->event_type,
                     "aggregate_id", ev->aggregate_id, "aggregate_type", ev->aggregate_type,
                     "event_data", data ? data : json_string(ev->event_data), "stream", ev->stream,
                     "version", (json_int_t)ev->version, "position", (json_int_t)ev->position,
                     "created_at", (json_int_t)ev->created_at, "metadata", meta);
}

void print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    puts(text ? text : "null");
    free(text);
    json_decref(doc);
}

int fail(const ordo_error_t *err)
{
    print_json(json_pack("{s:{s:s, s:s}}", "error", "code", ordo_status_text(err->code), "message", err->msg));
    return 1;
}

/* Parses "k=v,k=v" into metadata entries (pointers into a copy of @p text). */
static void parse_metadata(const char *text, Eventstore__Event *ev, Eventstore__Event__MetadataEntry *entries,
                           Eventstore__Event__MetadataEntry **ptrs, size_t cap, char *copy)
{
    char *save = NULL;
    strcpy(copy, text);
    for (char *kv = strtok_r(copy, ",", &save); kv != NULL && ev->n_metadata < cap; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL)
            continue;
        *eq = '\0';
        eventstore__event__metadata_entry__init(&entries[ev->n_metadata]);
        entries[ev->n_metadata].key = kv;
        entries[ev->n_metadata].value = eq + 1;
        ptrs[ev->n_metadata] = &entries[ev->n_metadata];
        ev->n_metadata++;
    }
    ev->metadata = ptrs;
}

static int cmd_append(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__CreateEventRequest req = EVENTSTORE__CREATE_EVENT_REQUEST__INIT;
    Eventstore__Event ev = EVENTSTORE__EVENT__INIT;
    Eventstore__Event__MetadataEntry entries[16], *ptrs[16];
    char *copy = malloc(strlen(cfg->metadata) + 1);
    Eventstore__CreateEventResponse *resp;
    ProtobufCMessage *out;
    ordo_error_t err;
    ordo_status st;

    ev.event_id = (char *)cfg->event_id;
    ev.aggregate_id = (char *)cfg->aggregate_id;
    ev.aggregate_type = (char *)cfg->aggregate_type;
    ev.event_type = (char *)cfg->type;
    ev.event_data = (char *)cfg->data;
    parse_metadata(cfg->metadata, &ev, entries, ptrs, 16, copy);
    req.event = &ev;
    if (cfg->expected >= 0) {
        req.expected_case = EVENTSTORE__CREATE_EVENT_REQUEST__EXPECTED_EXPECTED_VERSION;
        req.expected_version = cfg->expected;
    }
    st = ordo_grpc_client_unary(c, "/eventstore.EventStore/CreateEvent", &req.base,
                                &eventstore__create_event_response__descriptor, cfg->timeout_ms, &out, &err);
    free(copy);
    if (st != ORDO_OK)
        return fail(&err);
    resp = (Eventstore__CreateEventResponse *)out;
    print_json(json_pack("{s:b, s:I, s:I, s:b}", "is_success", resp->is_success, "version", (json_int_t)resp->version,
                         "position", (json_int_t)resp->position, "duplicate", resp->duplicate));
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static void fill_get_request(Eventstore__GetEventsRequest *req, const ctl_config_t *cfg)
{
    req->event_id = (char *)cfg->event_id;
    req->aggregate_id = (char *)cfg->aggregate_id;
    req->aggregate_type = (char *)cfg->aggregate_type;
    req->event_type = (char *)cfg->type;
    req->from_position = cfg->from;
    req->limit = cfg->limit;
}

static int cmd_get(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
    Eventstore__GetEventsResponse *resp;
    ProtobufCMessage *out;
    ordo_error_t err;

    fill_get_request(&req, cfg);
    if (ordo_grpc_client_unary(c, "/eventstore.EventStore/GetEvents", &req.base,
                               &eventstore__get_events_response__descriptor, cfg->timeout_ms, &out, &err) != ORDO_OK)
        return fail(&err);
    resp = (Eventstore__GetEventsResponse *)out;
    for (size_t i = 0; i < resp->n_events; i++)
        print_json(event_json(resp->events[i]));
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int cmd_tail(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
    ordo_grpc_stream_t *s;
    ProtobufCMessage *out;
    ordo_error_t err;
    ordo_status st;
    int seen = 0;

    fill_get_request(&req, cfg);
    if (ordo_grpc_stream_open(c, "/eventstore.EventStore/GetEventsStream", &req.base, cfg->timeout_ms, &s, &err) != ORDO_OK)
        return fail(&err);
    while ((cfg->count == 0 || seen < cfg->count) &&
           (st = ordo_grpc_stream_next(s, &eventstore__event__descriptor, &out, &err)) == ORDO_OK) {
        print_json(event_json((Eventstore__Event *)out));
        fflush(stdout);
        protobuf_c_message_free_unpacked(out, NULL);
        seen++;
    }
    ordo_grpc_stream_close(s);
    if (cfg->count > 0 && seen < cfg->count)
        return fail(&err);
    return 0;
}

/* One durable's lag and parked messages, as both `consumers` and `stats` print them. */
static json_t *lag_json(const char *name, int64_t pending, int64_t ack_pending, int64_t redelivered,
                        int64_t delivered, int64_t parked)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name", name, "pending", (json_int_t)pending, "ack_pending",
                     (json_int_t)ack_pending, "redelivered", (json_int_t)redelivered, "delivered",
                     (json_int_t)delivered, "parked", (json_int_t)parked);
}

static int cmd_stats(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__StatsRequest req = EVENTSTORE__STATS_REQUEST__INIT;
    Eventstore__StatsResponse *r;
    ProtobufCMessage *out;
    ordo_error_t err;

    if (ordo_grpc_client_unary(c, "/eventstore.EventStoreAdmin/GetStats", &req.base,
                               &eventstore__stats_response__descriptor, cfg->timeout_ms, &out, &err) != ORDO_OK)
        return fail(&err);
    r = (Eventstore__StatsResponse *)out;
    json_t *consumers = json_array();
    for (size_t i = 0; i < r->n_consumers; i++) {
        const Eventstore__ConsumerLag *l = r->consumers[i];
        json_array_append_new(consumers,
                              lag_json(l->name, l->pending, l->ack_pending, l->redelivered, l->delivered, l->parked));
    }
    json_t *doc = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b}",
                            "events", (json_int_t)r->events, "aggregates", (json_int_t)r->aggregates,
                            "outbox_backlog", (json_int_t)r->outbox_backlog, "last_position",
                            (json_int_t)r->last_position, "safe_position", (json_int_t)r->safe_position,
                            "published", (json_int_t)r->published, "publish_errors", (json_int_t)r->publish_errors,
                            "set_aside", (json_int_t)r->set_aside, "appends", (json_int_t)r->appends, "conflicts",
                            (json_int_t)r->conflicts, "duplicates", (json_int_t)r->duplicates, "tx_retries",
                            (json_int_t)r->tx_retries, "batches", (json_int_t)r->batches, "bus_connected",
                            r->bus_connected, "relay_leader", r->relay_leader);
    json_object_update_new(doc, json_pack("{s:I, s:I, s:I, s:I, s:I, s:o}", "redriven", (json_int_t)r->redriven,
                                          "stuck", (json_int_t)r->stuck, "lost_republished",
                                          (json_int_t)r->lost_republished, "write_queue_full",
                                          (json_int_t)r->write_queue_full, "expired", (json_int_t)r->expired,
                                          "consumers", consumers));
    print_json(doc);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int cmd_republish(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__RepublishRequest req = EVENTSTORE__REPUBLISH_REQUEST__INIT;
    ProtobufCMessage *out;
    ordo_error_t err;

    req.from_position = cfg->from;
    req.to_position = cfg->to;
    req.fresh_ids = cfg->fresh;
    if (ordo_grpc_client_unary(c, "/eventstore.EventStoreAdmin/Republish", &req.base,
                               &eventstore__republish_response__descriptor, cfg->timeout_ms, &out, &err) != ORDO_OK)
        return fail(&err);
    print_json(json_pack("{s:I}", "queued", (json_int_t)((Eventstore__RepublishResponse *)out)->queued));
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* ordoctl trace ORDER_ID: the order's causal chain from the store, each
 * event with the service that appended it, its time, its span and the time
 * since the event that caused it; then the time to the final status. */
static int cmd_trace(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
    Eventstore__GetEventsResponse *r = NULL;
    const Eventstore__Event *final = NULL;
    ordo_error_t err;
    char trace_id[33] = "";

    if (cfg->aggregate_id[0] == '\0') {
        ordo_error_set(&err, ORDO_INVALID, "usage: ordoctl trace ORDER_ID (or --aggregate-id ID)");
        return fail(&err);
    }
    req.aggregate_id = (char *)cfg->aggregate_id;
    req.limit = 1000;
    if (ordo_es_read(c, &req, cfg->timeout_ms, &r, &err) != ORDO_OK)
        return fail(&err);
    if (r->n_events == 0) {
        eventstore__get_events_response__free_unpacked(r, NULL);
        ordo_error_set(&err, ORDO_NOT_FOUND, "no events for %s", cfg->aggregate_id);
        return fail(&err);
    }
    for (size_t i = 0; i < r->n_events; i++) {
        const Eventstore__Event *e = r->events[i], *cause = NULL;
        const char *cause_id = ordo_es_event_meta(e, "causation_id"), *tp = ordo_es_event_meta(e, "traceparent");
        const char *svc = ordo_es_event_meta(e, "service");
        ordo_trace_t span;
        bool traced = ordo_trace_parse(tp, &span);
        for (size_t k = 0; cause_id != NULL && k < i; k++)
            if (strcmp(r->events[k]->event_id, cause_id) == 0)
                cause = r->events[k];
        if (traced && trace_id[0] == '\0')
            memcpy(trace_id, span.trace_id, sizeof trace_id);
        json_t *doc = json_pack("{s:I, s:s, s:s, s:I, s:I}", "version", (json_int_t)e->version, "type", e->event_type,
                                "service", svc ? svc : "?", "position", (json_int_t)e->position, "created_at",
                                (json_int_t)e->created_at);
        json_object_set_new(doc, "trace_id", traced ? json_string(span.trace_id) : json_null());
        json_object_set_new(doc, "span_id", traced ? json_string(span.span_id) : json_null());
        json_object_set_new(doc, "caused_by", cause ? json_string(cause->event_type) : json_null());
        json_object_set_new(doc, "since_cause_ms",
                            cause ? json_real((double)(e->created_at - cause->created_at) / 1000.0) : json_null());
        print_json(doc);
        if (final == NULL && ordo_order_status_final(ordo_order_status_after(e->event_type)))
            final = e;
    }
    print_json(json_pack("{s:s, s:s, s:I, s:o, s:o}", "order_id", cfg->aggregate_id, "trace_id", trace_id, "events",
                         (json_int_t)r->n_events, "final", final ? json_string(final->event_type) : json_null(),
                         "total_ms",
                         final ? json_real((double)(final->created_at - r->events[0]->created_at) / 1000.0)
                               : json_null()));
    eventstore__get_events_response__free_unpacked(r, NULL);
    return 0;
}

/* One parked message: where it came from, why it was parked, its body (as
 * JSON when it is JSON, else as text). */
static json_t *parked_json(const Eventstore__ParkedMessage *p)
{
    char *body = strndup((const char *)p->data.data, p->data.len);
    json_t *data = body != NULL ? json_loads(body, JSON_DECODE_ANY, NULL) : NULL;
    json_t *doc = json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:I, s:o}", "seq", (json_int_t)p->seq,
                            "durable", p->durable, "reason", p->reason, "subject", p->subject, "stream_seq",
                            (json_int_t)p->stream_seq, "parked_at", (json_int_t)p->parked_at, "event_id", p->event_id,
                            "event_type", p->event_type, "aggregate_id", p->aggregate_id, "position",
                            (json_int_t)p->position,
                            "data", data != NULL ? data : json_stringn(body ? body : "", body ? strlen(body) : 0));
    free(body);
    return doc;
}

static int cmd_parked_list(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__ListParkedRequest req = EVENTSTORE__LIST_PARKED_REQUEST__INIT;
    ProtobufCMessage *out;
    ordo_error_t err;

    req.durable = (char *)cfg->durable;
    req.from_seq = (uint64_t)cfg->from;
    req.limit = cfg->limit;
    if (ordo_grpc_client_unary(c, "/eventstore.EventStoreAdmin/ListParked", &req.base,
                               &eventstore__list_parked_response__descriptor, cfg->timeout_ms, &out, &err) != ORDO_OK)
        return fail(&err);
    const Eventstore__ListParkedResponse *r = (const Eventstore__ListParkedResponse *)out;
    for (size_t i = 0; i < r->n_messages; i++)
        print_json(parked_json(r->messages[i]));
    if (r->next_seq > 0)
        print_json(json_pack("{s:I}", "next_seq", (json_int_t)r->next_seq));
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int cmd_parked_replay(ordo_grpc_client_t *c, const ctl_config_t *cfg)
{
    Eventstore__ReplayParkedRequest req = EVENTSTORE__REPLAY_PARKED_REQUEST__INIT;
    ProtobufCMessage *out;
    ordo_error_t err;

    req.durable = (char *)cfg->durable;
    req.seq = (uint64_t)cfg->seq;
    if (ordo_grpc_client_unary(c, "/eventstore.EventStoreAdmin/ReplayParked", &req.base,
                               &eventstore__replay_parked_response__descriptor, cfg->timeout_ms, &out, &err) != ORDO_OK)
        return fail(&err);
    print_json(json_pack("{s:I}", "replayed", (json_int_t)((Eventstore__ReplayParkedResponse *)out)->replayed));
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static json_t *msg_json(natsMsg *m, uint64_t seq)
{
    json_t *headers = json_object();
    const char **keys = NULL;
    int n = 0;
    char *body = strndup(natsMsg_GetData(m) ? natsMsg_GetData(m) : "", (size_t)natsMsg_GetDataLength(m));

    if (natsMsgHeader_Keys(m, &keys, &n) == NATS_OK) {
        for (int i = 0; i < n; i++) {
            const char *v = NULL;
            if (natsMsgHeader_Get(m, keys[i], &v) == NATS_OK)
                json_object_set_new(headers, keys[i], json_string(v));
        }
        free((void *)keys);
    }
    json_t *doc = json_pack("{s:I, s:s, s:s, s:o}", "seq", (json_int_t)seq, "subject", natsMsg_GetSubject(m),
                            "data", body, "headers", headers);
    free(body);
    return doc;
}

static int fail_nats(ordo_bus_t *bus, natsStatus s, jsErrCode jerr, const char *what)
{
    ordo_error_t err;
    ordo_bus_status(bus, s, jerr, what, &err);
    return fail(&err);
}

static int cmd_bus_dump(ordo_bus_t *bus, const ctl_config_t *cfg)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;

    (void)cfg;
    s = js_GetStreamInfo(&si, ordo_bus_js(bus), ORDO_BUS_STREAM, NULL, &jerr);
    if (s != NATS_OK)
        return fail_nats(bus, s, jerr, "cannot read the EVENTS stream");
    for (uint64_t seq = si->State.FirstSeq; seq > 0 && seq <= si->State.LastSeq; seq++) {
        natsMsg *m = NULL;
        if (js_GetMsg(&m, ordo_bus_js(bus), ORDO_BUS_STREAM, seq, NULL, &jerr) != NATS_OK)
            continue;   /* deleted */
        print_json(msg_json(m, seq));
        natsMsg_Destroy(m);
    }
    jsStreamInfo_Destroy(si);
    return 0;
}

static int cmd_consumer_reset(ordo_bus_t *bus, const ctl_config_t *cfg)
{
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteConsumer(ordo_bus_js(bus), ORDO_BUS_STREAM, cfg->durable, NULL, &jerr);

    if (s != NATS_OK)
        return fail_nats(bus, s, jerr, "cannot delete the consumer");
    print_json(json_pack("{s:s}", "deleted", cfg->durable));
    return 0;
}

static int cmd_consumers(ordo_bus_t *bus, const ctl_config_t *cfg)
{
    ordo_bus_lag_t *lags;
    ordo_error_t err;
    size_t n;

    (void)cfg;
    if (ordo_bus_lags(bus, &lags, &n, &err) != ORDO_OK)
        return fail(&err);
    for (size_t i = 0; i < n; i++)
        print_json(lag_json(lags[i].name, lags[i].pending, lags[i].ack_pending, lags[i].redelivered,
                            lags[i].delivered, lags[i].parked));
    free(lags);
    return 0;
}

/* Applies sql/'s migrations as the owner and exits: the explicit step that
 * lets the services run as roles without DDL rights (docs/security.md). */
static int cmd_migrate(const ctl_config_t *cfg)
{
    ordo_error_t err;

    if (cfg->database_url[0] == '\0') {
        ordo_error_set(&err, ORDO_INVALID, "migrate needs --database-url (or DATABASE_URL)");
        return fail(&err);
    }
    if (ordo_migrate_url(cfg->database_url, &err) != ORDO_OK)
        return fail(&err);
    print_json(json_pack("{s:i}", "migrations", (int)ordo_migrations_count));
    return 0;
}

/* Every command: what it talks to, and what it does (ordoctl --help). */
typedef struct command {
    const char *name;
    const char *summary;
    int (*store)(ordo_grpc_client_t *c, const ctl_config_t *cfg);   /* talks to the event store (--addr) */
    int (*bus)(ordo_bus_t *bus, const ctl_config_t *cfg);           /* or to JetStream (--nats-url) */
    int (*db)(const ctl_config_t *cfg);                             /* or to the database (--database-url) */
} command_t;

static const command_t commands[] = {
    {"append", "append one event (--aggregate-id, --aggregate-type, --type, --data, --expected)", .store = cmd_append},
    {"get", "print stored events: --aggregate-id, --event-id, --aggregate-type or --type, after --from",
     .store = cmd_get},
    {"tail", "print every event after --from, then follow new ones (--count to stop)", .store = cmd_tail},
    {"stats", "print the store's counters, outbox backlog, watermark and consumer lag", .store = cmd_stats},
    {"republish", "publish stored events again, --from to --to (admin)", .store = cmd_republish},
    {"parked list", "print the messages consumers parked, with why (--durable, --from, --limit; admin)",
     .store = cmd_parked_list},
    {"parked replay", "deliver parked messages again to the durable that parked them (--durable, --seq; admin)",
     .store = cmd_parked_replay},
    {"trace", "print an order's causal chain (ORDER_ID): each event's service, time, span and time since its cause,"
              " then the time to its final status",
     .store = cmd_trace},
    {"bus-dump", "print every message of the EVENTS stream with its headers", .bus = cmd_bus_dump},
    {"consumers", "print each durable consumer and how far behind it is", .bus = cmd_consumers},
    {"consumer-reset", "delete the durable --durable; its service creates it anew on start", .bus = cmd_consumer_reset},
    {"migrate", "apply the schema migrations to --database-url (as the tables' owner) and exit", .db = cmd_migrate},
    {"verify", "audit the store, the bus and the read model against each other; exit 1 naming what disagrees"
               " (--database-url, --addr, --nats-url; --sample, --stuck-after-s, --outbox-max, --repair)",
     .db = ctl_verify},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *out)
{
    fprintf(out, "usage: ordoctl COMMAND [--option value ...]\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-16s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\noptions (each command reads those it names; the environment variable is the default):\n");
    ordo_config_print_options(out, options, N_OPTIONS);
}

static const command_t *command_named(const char *name)
{
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int run_bus_command(const command_t *cmd, const ctl_config_t *cfg)
{
    ordo_bus_config_t bcfg = {.url = cfg->nats_url, .name = "ordoctl", .connect_timeout_ms = 2000, .auth = &cfg->nats};
    ordo_bus_t *bus;
    ordo_error_t err;
    int rc;

    if (ordo_bus_connect(&bcfg, &bus, &err) != ORDO_OK)
        return fail(&err);
    rc = cmd->bus(bus, cfg);
    ordo_bus_destroy(bus);
    return rc;
}

static int run_store_command(const command_t *cmd, const ctl_config_t *cfg)
{
    ordo_grpc_client_t *c = NULL;
    ordo_error_t err;
    int rc;

    if (ordo_grpc_client_create(cfg->addr, ORDO_GRPC_READ_MAX_BYTES, &cfg->tls, &c, &err) != ORDO_OK)
        return fail(&err);
    rc = cmd->store(c, cfg);
    ordo_grpc_client_destroy(c);
    return rc;
}

int main(int argc, char **argv)
{
    ctl_config_t cfg;
    ordo_error_t err;
    const char *name = argc > 1 ? argv[1] : "";
    const command_t *cmd;
    char two_words[64];
    bool help;

    memset(&cfg, 0, sizeof cfg);
    cfg.tls.option_prefix = "--";
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (argc > 2 && argv[2][0] != '-' && strlen(name) + strlen(argv[2]) + 2 <= sizeof two_words) {
        strcpy(two_words, name);   /* "parked list" (it fits: checked above) */
        strcat(two_words, " ");
        strcat(two_words, argv[2]);
        if (command_named(two_words) != NULL) {
            name = two_words;
            argv++;
            argc--;
        }
    }
    if ((cmd = command_named(name)) == NULL) {
        if (argc > 1)
            fprintf(stderr, "ordoctl: unknown command \"%s\"\n\n", name);
        usage(stderr);
        return 2;
    }
    const char *order_id = NULL;   /* ordoctl trace ORDER_ID */
    if (strcmp(name, "trace") == 0 && argc > 2 && argv[2][0] != '-') {
        order_id = argv[2];
        argv[2] = argv[1];
        argv++;
        argc--;
    }
    if (ordo_config_load(options, N_OPTIONS, &cfg, argc - 1, argv + 1, &help, &err) != ORDO_OK) {
        fprintf(stderr, "ordoctl: %s\n", err.msg);
        return 2;
    }
    if (help) {
        usage(stdout);
        return 0;
    }
    if (order_id != NULL)
        cfg.aggregate_id = order_id;
    if (cmd->db != NULL)
        return cmd->db(&cfg);
    return cmd->bus != NULL ? run_bus_command(cmd, &cfg) : run_store_command(cmd, &cfg);
}
