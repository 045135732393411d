/*
 * es_load: a load generator for the event store. One thread keeps N
 * CreateEvent calls in flight on one gRPC channel and completion queue (so
 * the generator itself costs little CPU on a shared machine) for a fixed
 * time, then prints events/s and latency percentiles.
 *
 *   distinct: every call appends one event to a new aggregate (expected 0)
 *   hot:      calls append to a few hot aggregates with expected versions;
 *             a conflict re-reads the version and tries again (counted)
 *
 * Output: a human line and a JSON line (for scripts).
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore.pb-c.h"
#include "ordo/config.h"
#include "ordo/grpc.h"
#include "ordo/retry.h"
#include "ordo/uuid.h"
#include "samples.h"

typedef struct load_config {
    const char *addr, *mode, *label, *ca, *cert, *key;
    int clients, seconds, hot, payload, rate, events_per_call;
    bool timeline;
} load_config_t;

#define OPT(...) ORDO_OPTION(load_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, addr, 0, 0, "event store address"),
    OPT("ca", "ORDO_CA", "", ORDO_OPT_STRING, ca, 0, 0, "TLS: the store's CA (PEM), with --cert and --key (a writer identity)"),
    OPT("cert", "ORDO_CERT", "", ORDO_OPT_STRING, cert, 0, 0, "TLS: client certificate (PEM)"),
    OPT("key", "ORDO_KEY", "", ORDO_OPT_STRING, key, 0, 0, "TLS: its private key (PEM)"),
    OPT("mode", NULL, "distinct", ORDO_OPT_STRING, mode, 0, 0, "distinct, hot, or invalid (refused before the database: the gRPC path alone)"),
    OPT("label", NULL, "eventstore", ORDO_OPT_STRING, label, 0, 0, "name printed with the results"),
    OPT("clients", NULL, "64", ORDO_OPT_INT, clients, 1, 4096, "calls in flight"),
    OPT("seconds", NULL, "10", ORDO_OPT_INT, seconds, 1, 3600, "duration"),
    OPT("hot", NULL, "8", ORDO_OPT_INT, hot, 1, 1000000, "hot mode: number of aggregates"),
    OPT("payload", NULL, "200", ORDO_OPT_INT, payload, 2, 100000, "bytes of event_data"),
    OPT("rate", NULL, "0", ORDO_OPT_INT, rate, 0, 10000000, "calls/s to start, at most --clients in flight (0: as fast as they complete)"),
    OPT("events-per-call", NULL, "1", ORDO_OPT_INT, events_per_call, 1, 100, "distinct mode: events of one new aggregate per call (the events batch form when > 1)"),
    OPT("timeline", NULL, "false", ORDO_OPT_BOOL, timeline, 0, 0, "print each second's calls, slowest call, calls over 10 ms and how late the driver started calls, on stderr"),
};

/* One call slot: a call in flight at a time, its buffers, and its results. */
typedef struct slot {
    int id;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    double t0;
    char agg[64];
    int64_t expected;
} slot_t;

typedef struct run_state {
    const load_config_t *cfg;
    grpc_channel *channel;
    grpc_completion_queue *cq;
    char *data;
    double *lat;
    size_t n, cap;
    long errors, conflicts;
    char last_error[256];
    /* --timeline: per second of the run (by the time each call was due) */
    double start;
    int n_secs;
    long *sec_calls, *sec_slow;
    double *sec_worst, *sec_late;
} run_state_t;

enum { SLOW_MS = 10 };

/* The second of the run @p t (monotonic seconds) falls in, clamped. */
static int second_of(const run_state_t *r, double t)
{
    int sec = (int)(t - r->start);
    return sec < 0 ? 0 : sec >= r->n_secs ? r->n_secs - 1 : sec;
}

static void record(run_state_t *r, double t0, double seconds)
{
    bench_samples_add(&r->lat, &r->n, &r->cap, seconds);
    if (r->sec_calls != NULL) {
        int sec = second_of(r, t0);
        r->sec_calls[sec]++;
        r->sec_slow[sec] += seconds * 1e3 > SLOW_MS;
        if (seconds > r->sec_worst[sec])
            r->sec_worst[sec] = seconds;
    }
}

/* --timeline: how late the driver started a call that was due at @p sched
 * (0: not paced), in the second it was due. */
static void record_late(run_state_t *r, double sched, double started)
{
    double *late;

    if (r->sec_late == NULL || sched <= 0)
        return;
    late = &r->sec_late[second_of(r, sched)];
    if (started - sched > *late)
        *late = started - sched;
}

static void print_timeline(const run_state_t *r)
{
    for (int sec = 0; sec < r->n_secs; sec++)
        fprintf(stderr, "timeline t=%2ds calls=%-6ld slowest=%.1fms over %dms=%-5ld driver late by up to %.1fms\n", sec,
                r->sec_calls[sec], r->sec_worst[sec] * 1e3, SLOW_MS, r->sec_slow[sec], r->sec_late[sec] * 1e3);
}

static int64_t version_from(const char *msg)
{
    const char *p = strstr(msg, "is at version ");
    return p ? strtoll(p + 14, NULL, 10) : -1;
}

static grpc_byte_buffer *pack_request(run_state_t *r, slot_t *s)
{
    Eventstore__CreateEventRequest req = EVENTSTORE__CREATE_EVENT_REQUEST__INIT;
    Eventstore__Event ev = EVENTSTORE__EVENT__INIT, *batch[100];
    grpc_slice slice;
    grpc_byte_buffer *bb;

    if (strcmp(r->cfg->mode, "hot") != 0) {
        ordo_uuid_v4(s->agg);
        s->expected = 0;
    }
    ev.aggregate_id = s->agg;
    ev.aggregate_type = "bench";
    ev.event_type = "load-applied";
    ev.event_data = strcmp(r->cfg->mode, "invalid") == 0 ? "not json" : r->data;
    if (r->cfg->events_per_call > 1 && strcmp(r->cfg->mode, "distinct") == 0) {
        for (int i = 0; i < r->cfg->events_per_call; i++)
            batch[i] = &ev;     /* the same content; the store gives each its id and version */
        req.events = batch;
        req.n_events = (size_t)r->cfg->events_per_call;
    } else {
        req.event = &ev;
    }
    req.expected_case = EVENTSTORE__CREATE_EVENT_REQUEST__EXPECTED_EXPECTED_VERSION;
    req.expected_version = s->expected;
    slice = grpc_slice_malloc(eventstore__create_event_request__get_packed_size(&req));
    eventstore__create_event_request__pack(&req, GRPC_SLICE_START_PTR(slice));
    bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

static void start_call(run_state_t *r, slot_t *s, double sched)
{
    grpc_op ops[6];

    memset(ops, 0, sizeof ops);
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->send = pack_request(r, s);
    s->recv = NULL;
    s->details = grpc_empty_slice();
    s->call = grpc_channel_create_call(r->channel, NULL, GRPC_PROPAGATE_DEFAULTS, r->cq,
                                       grpc_slice_from_static_string("/eventstore.EventStore/CreateEvent"), NULL,
                                       gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(10000, GPR_TIMESPAN)),
                                       NULL);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->t0 = ordo_mono_s();
    record_late(r, sched, s->t0);
    if (sched > 0 && sched < s->t0)   /* at a fixed rate, from the time it was due: a call started late because */
        s->t0 = sched;                /* every slot was busy counts its wait (no coordinated omission) */
    grpc_call_start_batch(s->call, ops, 6, s, NULL);
}

/* A call finished: record it and free its resources. */
static void finish_call(run_state_t *r, slot_t *s)
{
    if (s->status == GRPC_STATUS_OK && s->recv != NULL) {
        grpc_byte_buffer_reader reader;
        grpc_byte_buffer_reader_init(&reader, s->recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
        Eventstore__CreateEventResponse *resp =
            eventstore__create_event_response__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
        record(r, s->t0, ordo_mono_s() - s->t0);
        if (resp != NULL)
            s->expected = resp->version;
        eventstore__create_event_response__free_unpacked(resp, NULL);
        grpc_slice_unref(all);
        grpc_byte_buffer_reader_destroy(&reader);
    } else {
        char *msg = grpc_slice_to_c_string(s->details);
        if (s->status == GRPC_STATUS_INVALID_ARGUMENT && strcmp(r->cfg->mode, "invalid") == 0) {
            record(r, s->t0, ordo_mono_s() - s->t0);
        } else if (s->status == GRPC_STATUS_FAILED_PRECONDITION && strcmp(r->cfg->mode, "hot") == 0) {
            r->conflicts++;
            s->expected = version_from(msg);
        } else {
            r->errors++;
            snprintf(r->last_error, sizeof r->last_error, "%s", msg);
        }
        gpr_free(msg);
    }
    if (s->recv != NULL)
        grpc_byte_buffer_destroy(s->recv);
    grpc_byte_buffer_destroy(s->send);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_call_unref(s->call);
}

/* Keeps up to cfg->clients calls in flight on one completion queue until the
 * time is up: each slot starts its next call as soon as the last one ends,
 * or, with --rate, calls start on a fixed schedule while slots are free. */
static void drive(run_state_t *r, slot_t *slots, double deadline)
{
    const int n = r->cfg->clients;
    slot_t **idle = calloc((size_t)n, sizeof *idle);
    double interval = r->cfg->rate > 0 ? 1.0 / r->cfg->rate : 0, next = ordo_mono_s();
    int n_idle = 0, in_flight = 0;

    for (int i = 0; i < n; i++)
        idle[n_idle++] = &slots[i];
    for (;;) {
        double now = ordo_mono_s();
        while (n_idle > 0 && now < deadline && (interval == 0 || now >= next)) {
            start_call(r, idle[--n_idle], interval > 0 ? next : 0);
            in_flight++;
            next += interval;
        }
        if (in_flight == 0 && now >= deadline)
            break;
        gpr_timespec wait = interval > 0 && n_idle > 0 && now < deadline
                                ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                               gpr_time_from_micros((int64_t)((next - now) * 1e6) + 1, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_REALTIME);
        grpc_event ev = grpc_completion_queue_next(r->cq, wait, NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            finish_call(r, ev.tag);
            idle[n_idle++] = ev.tag;
            in_flight--;
        } else if (ev.type != GRPC_QUEUE_TIMEOUT) {
            break;
        }
    }
    free(idle);
}

static char *make_payload(int bytes)
{
    /* {"p":"xxx...x"}: payload bytes in all (at least 8) */
    size_t fill = bytes > 8 ? (size_t)bytes - 8 : 0;
    char *data = malloc(fill + 16);
    if (data == NULL)
        return NULL;
    memcpy(data, "{\"p\":\"", 6);
    memset(data + 6, 'x', fill);
    memcpy(data + 6 + fill, "\"}", 3);
    return data;
}

/* Plaintext, or TLS with a client certificate when --ca is given. */
static grpc_channel_credentials *channel_credentials(const load_config_t *cfg)
{
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *creds;
    ordo_error_t err;

    if (cfg->ca[0] == '\0')
        return grpc_insecure_credentials_create();
    if (ordo_file_read(cfg->ca, 1 << 20, &ca, &err) != ORDO_OK || ordo_file_read(cfg->cert, 1 << 20, &cert, &err) != ORDO_OK ||
        ordo_file_read(cfg->key, 1 << 20, &key, &err) != ORDO_OK) {
        fprintf(stderr, "es_load: %s\n", err.msg);
        creds = NULL;
    } else {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_credentials_create_ex(ca, &pair, NULL, NULL);
    }
    free(ca);
    free(cert);
    free(key);
    return creds;
}

int main(int argc, char **argv)
{
    load_config_t cfg;
    run_state_t r;
    slot_t *slots;
    grpc_channel_credentials *creds;
    double start, elapsed;
    size_t per_call;
    int rc;

    memset(&cfg, 0, sizeof cfg);
    if ((rc = ordo_config_cli("es_load", options, sizeof options / sizeof options[0], &cfg, argc, argv)) >= 0)
        return rc;
    ordo_grpc_library_init();
    memset(&r, 0, sizeof r);
    r.cfg = &cfg;
    r.data = make_payload(cfg.payload);
    if ((creds = channel_credentials(&cfg)) == NULL)
        return 2;
    r.channel = grpc_channel_create(cfg.addr, creds, NULL);
    grpc_channel_credentials_release(creds);
    r.cq = grpc_completion_queue_create_for_next(NULL);
    slots = calloc((size_t)cfg.clients, sizeof *slots);
    for (int i = 0; i < cfg.clients; i++) {
        slots[i].id = i;
        snprintf(slots[i].agg, sizeof slots[i].agg, "hot-%d", i % cfg.hot);
    }
    start = r.start = ordo_mono_s();
    if (cfg.timeline) {
        r.n_secs = cfg.seconds + 1;
        r.sec_calls = calloc((size_t)r.n_secs, sizeof *r.sec_calls);
        r.sec_slow = calloc((size_t)r.n_secs, sizeof *r.sec_slow);
        r.sec_worst = calloc((size_t)r.n_secs, sizeof *r.sec_worst);
        r.sec_late = calloc((size_t)r.n_secs, sizeof *r.sec_late);
        if (!r.sec_calls || !r.sec_slow || !r.sec_worst || !r.sec_late)
            return 2;
    }
    drive(&r, slots, start + cfg.seconds);
    elapsed = ordo_mono_s() - start;
    if (r.errors)
        fprintf(stderr, "es_load: %ld errors, e.g.: %s\n", r.errors, r.last_error);
    qsort(r.lat, r.n, sizeof *r.lat, bench_cmp_double);
    /* latencies are per call; each successful call stored per_call events */
    per_call = strcmp(cfg.mode, "distinct") == 0 ? (size_t)cfg.events_per_call : 1;
    printf("%-28s mode=%-8s clients=%-4d rate=%-6d events/s=%-9.0f p50=%.2fms p99=%.2fms p99.9=%.2fms errors=%ld conflicts=%ld%s\n",
           cfg.label, cfg.mode, cfg.clients, cfg.rate, (double)(r.n * per_call) / elapsed, bench_pct(r.lat, r.n, 0.5) * 1e3,
           bench_pct(r.lat, r.n, 0.99) * 1e3, bench_pct(r.lat, r.n, 0.999) * 1e3, r.errors, r.conflicts,
           r.errors > 0 || r.n == 0 ? "  NOT CLEAN: errors, figures not comparable" : "");
    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"clients\":%d,\"events\":%zu,\"events_per_s\":%.0f,\"p50_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"errors\":%ld,\"conflicts\":%ld}\n",
           cfg.label, cfg.mode, cfg.clients, (size_t)r.n * per_call, (double)(r.n * per_call) / elapsed,
           bench_pct(r.lat, r.n, 0.5) * 1e3,
           bench_pct(r.lat, r.n, 0.99) * 1e3, bench_pct(r.lat, r.n, 0.999) * 1e3, r.errors, r.conflicts);
    if (cfg.timeline)
        print_timeline(&r);
    free(r.sec_calls);
    free(r.sec_slow);
    free(r.sec_worst);
    free(r.sec_late);
    free(r.lat);
    free(r.data);
    free(slots);
    grpc_completion_queue_shutdown(r.cq);
    while (grpc_completion_queue_next(r.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(r.cq);
    grpc_channel_destroy(r.channel);
    grpc_shutdown();
    return r.errors > 0 ? 1 : 0;
}
