/*
 * es_read: how fast a new subscriber catches up. One GetEventsStream call
 * from position 0 reads the whole store (as many events as GetStats counts,
 * or --count), the client decoding and dropping each event; prints events/s
 * and the time to the first event.
 *
 * Output: a human line and a JSON line (for scripts).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore.pb-c.h"
#include "ordo/config.h"
#include "ordo/retry.h"
#include "ordo/grpc.h"

typedef struct read_config {
    const char *addr, *label, *ca, *cert, *key;
    int count, timeout_ms;
} read_config_t;

#define OPT(...) ORDO_OPTION(read_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, addr, 0, 0, "event store address"),
    OPT("label", NULL, "catch-up", ORDO_OPT_STRING, label, 0, 0, "name printed with the results"),
    OPT("count", NULL, "0", ORDO_OPT_INT, count, 0, 1000000000, "events to read (0: as many as the store holds)"),
    OPT("ca", "ORDO_CA", "", ORDO_OPT_STRING, ca, 0, 0, "TLS: the store's CA (PEM), with --cert and --key (admin: GetStats)"),
    OPT("cert", "ORDO_CERT", "", ORDO_OPT_STRING, cert, 0, 0, "TLS: client certificate (PEM)"),
    OPT("key", "ORDO_KEY", "", ORDO_OPT_STRING, key, 0, 0, "TLS: client key (PEM)"),
    OPT("timeout-ms", NULL, "600000", ORDO_OPT_INT, timeout_ms, 1000, 86400000, "deadline of the whole read"),
};

/* The number of events the store holds (GetStats). */
static ordo_status store_events(ordo_grpc_client_t *c, int64_t *events, ordo_error_t *err)
{
    Eventstore__StatsRequest req = EVENTSTORE__STATS_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    ordo_status st = ordo_grpc_client_unary(c, "/eventstore.EventStoreAdmin/GetStats", &req.base,
                                            &eventstore__stats_response__descriptor, 60000, &out, err);
    if (st == ORDO_OK) {
        *events = ((Eventstore__StatsResponse *)out)->events;
        protobuf_c_message_free_unpacked(out, NULL);
    }
    return st;
}

/* Reads @p want events of one stream from position 0; *@p got, *@p first_s. */
static ordo_status read_stream(ordo_grpc_client_t *c, int64_t want, int timeout_ms, int64_t *got, double *first_s,
                               ordo_error_t *err)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
    ordo_grpc_stream_t *s;
    ProtobufCMessage *out;
    ordo_status st = ORDO_OK;
    double t0 = ordo_mono_s();

    *got = 0;
    if ((st = ordo_grpc_stream_open(c, "/eventstore.EventStore/GetEventsStream", &req.base, timeout_ms, &s, err)) !=
        ORDO_OK)
        return st;
    while (*got < want && (st = ordo_grpc_stream_next(s, &eventstore__event__descriptor, &out, err)) == ORDO_OK) {
        if (*got == 0)
            *first_s = ordo_mono_s() - t0;
        protobuf_c_message_free_unpacked(out, NULL);
        (*got)++;
    }
    ordo_grpc_stream_close(s);
    return *got == want ? ORDO_OK : st;
}

int main(int argc, char **argv)
{
    read_config_t cfg;
    ordo_grpc_client_t *c;
    ordo_error_t err;
    int64_t want = 0, got = 0;
    double t0, elapsed, first_s = 0;
    ordo_status st;
    int rc;

    memset(&cfg, 0, sizeof cfg);
    if ((rc = ordo_config_cli("es_read", options, sizeof options / sizeof options[0], &cfg, argc, argv)) >= 0)
        return rc;
    ordo_grpc_tls_t tls = {.ca_file = cfg.ca, .cert_file = cfg.cert, .key_file = cfg.key, .option_prefix = "--"};
    if ((st = ordo_grpc_client_create(cfg.addr, ORDO_GRPC_APPEND_MAX_BYTES, &tls, &c, &err)) != ORDO_OK) {
        fprintf(stderr, "es_read: %s\n", err.msg);
        return 1;
    }
    st = cfg.count > 0 ? ORDO_OK : store_events(c, &want, &err);
    if (cfg.count > 0)
        want = cfg.count;
    t0 = ordo_mono_s();
    if (st == ORDO_OK)
        st = read_stream(c, want, cfg.timeout_ms, &got, &first_s, &err);
    elapsed = ordo_mono_s() - t0;
    ordo_grpc_client_destroy(c);
    if (st != ORDO_OK) {
        fprintf(stderr, "es_read: read %lld of %lld events: %s\n", (long long)got, (long long)want, err.msg);
        return 1;
    }
    printf("%-28s events=%-9lld events/s=%-9.0f first event after %.1f ms\n", cfg.label, (long long)got,
           (double)got / elapsed, first_s * 1e3);
    printf("{\"label\":\"%s\",\"events\":%lld,\"events_per_s\":%.0f,\"first_ms\":%.2f}\n", cfg.label, (long long)got,
           (double)got / elapsed, first_s * 1e3);
    return 0;
}
