/*
 * es_load: a load generator for the event store. N client threads each keep
 * one CreateEvent call in flight over a shared gRPC channel for a fixed time,
 * then it prints events/s and latency percentiles.
 *
 *   distinct: every call appends one event to a new aggregate (expected 0)
 *   hot:      calls append to a few hot aggregates with expected versions;
 *             a conflict re-reads the version and tries again (counted)
 *
 * Output: a human line and a JSON line (for scripts).
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore.pb-c.h"
#include "ordo/config.h"
#include "ordo/grpc.h"
#include "ordo/uuid.h"

typedef struct load_config {
    const char *addr, *mode, *label;
    int clients, seconds, hot, payload;
} load_config_t;

#define OPT(flag, env, def, type, field, min, max, help) \
    {flag, env, def, type, offsetof(load_config_t, field), min, max, help}

static const ordo_option_t options[] = {
    OPT("addr", "EVENTSTORE_ADDR", "127.0.0.1:50051", ORDO_OPT_STRING, addr, 0, 0, "event store address"),
    OPT("mode", NULL, "distinct", ORDO_OPT_STRING, mode, 0, 0, "distinct or hot"),
    OPT("label", NULL, "eventstore", ORDO_OPT_STRING, label, 0, 0, "name printed with the results"),
    OPT("clients", NULL, "64", ORDO_OPT_INT, clients, 1, 4096, "concurrent calls"),
    OPT("seconds", NULL, "10", ORDO_OPT_INT, seconds, 1, 3600, "duration"),
    OPT("hot", NULL, "8", ORDO_OPT_INT, hot, 1, 1000000, "hot mode: number of aggregates"),
    OPT("payload", NULL, "200", ORDO_OPT_INT, payload, 2, 100000, "bytes of event_data"),
};

typedef struct worker {
    const load_config_t *cfg;
    ordo_grpc_client_t *client;
    int id;
    double deadline;
    double *lat;          /* seconds, one per successful call */
    size_t n, cap;
    long errors, conflicts;
    char last_error[512];
    pthread_t thread;
} worker_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void record(worker_t *w, double seconds)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4096;
        double *grown = realloc(w->lat, cap * sizeof *grown);
        if (grown == NULL)
            return;
        w->lat = grown;
        w->cap = cap;
    }
    w->lat[w->n++] = seconds;
}

static int64_t version_from(const char *msg)
{
    const char *p = strstr(msg, "is at version ");
    return p ? strtoll(p + 14, NULL, 10) : -1;
}

static void *run(void *arg)
{
    worker_t *w = arg;
    const load_config_t *cfg = w->cfg;
    bool hot = strcmp(cfg->mode, "hot") == 0;
    char agg[64], data[100016];
    int64_t expected = 0;

    /* {"p":"xxx...x"}: payload bytes in all (at least 8) */
    size_t fill = cfg->payload > 8 ? (size_t)cfg->payload - 8 : 0;
    memcpy(data, "{\"p\":\"", 6);
    memset(data + 6, 'x', fill);
    memcpy(data + 6 + fill, "\"}", 3);
    if (hot)
        snprintf(agg, sizeof agg, "hot-%d", w->id % cfg->hot);
    while (now_s() < w->deadline) {
        Eventstore__CreateEventRequest req = EVENTSTORE__CREATE_EVENT_REQUEST__INIT;
        Eventstore__Event ev = EVENTSTORE__EVENT__INIT;
        ProtobufCMessage *resp = NULL;
        ordo_error_t err;
        double t0;

        if (!hot) {
            ordo_uuid_v4(agg);
            expected = 0;
        }
        ev.aggregate_id = agg;
        ev.aggregate_type = "bench";
        ev.event_type = "load-applied";
        ev.event_data = data;
        req.event = &ev;
        req.expected_case = EVENTSTORE__CREATE_EVENT_REQUEST__EXPECTED_EXPECTED_VERSION;
        req.expected_version = expected;
        t0 = now_s();
        ordo_status st = ordo_grpc_client_unary(w->client, "/eventstore.EventStore/CreateEvent", &req.base,
                                                &eventstore__create_event_response__descriptor, 10000, &resp, &err);
        if (st == ORDO_OK) {
            record(w, now_s() - t0);
            expected = ((Eventstore__CreateEventResponse *)resp)->version;
            protobuf_c_message_free_unpacked(resp, NULL);
        } else if (st == ORDO_CONFLICT && hot) {
            w->conflicts++;
            expected = version_from(err.msg);
        } else {
            w->errors++;
            snprintf(w->last_error, sizeof w->last_error, "%s", err.msg);
        }
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    load_config_t cfg;
    ordo_grpc_client_t *client;
    ordo_error_t err;
    worker_t *w;
    double *all, start, elapsed;
    size_t total = 0, k = 0;
    long errors = 0, conflicts = 0;
    bool help;

    memset(&cfg, 0, sizeof cfg);
    if (ordo_config_load(options, sizeof options / sizeof options[0], &cfg, argc, argv, &help, &err) != ORDO_OK) {
        fprintf(stderr, "es_load: %s\n", err.msg);
        return 2;
    }
    if (help) {
        ordo_config_usage(stdout, "es_load", options, sizeof options / sizeof options[0]);
        return 0;
    }
    if (ordo_grpc_client_create(cfg.addr, 4 << 20, &client, &err) != ORDO_OK) {
        fprintf(stderr, "es_load: %s\n", err.msg);
        return 1;
    }
    w = calloc((size_t)cfg.clients, sizeof *w);
    start = now_s();
    for (int i = 0; i < cfg.clients; i++) {
        w[i] = (worker_t){.cfg = &cfg, .client = client, .id = i, .deadline = start + cfg.seconds};
        pthread_create(&w[i].thread, NULL, run, &w[i]);
    }
    for (int i = 0; i < cfg.clients; i++) {
        pthread_join(w[i].thread, NULL);
        total += w[i].n;
        errors += w[i].errors;
        conflicts += w[i].conflicts;
    }
    elapsed = now_s() - start;
    all = malloc((total + 1) * sizeof *all);
    for (int i = 0; i < cfg.clients; i++) {
        memcpy(all + k, w[i].lat, w[i].n * sizeof *all);
        k += w[i].n;
        if (w[i].errors && i == 0)
            fprintf(stderr, "es_load: errors, e.g.: %s\n", w[i].last_error);
        free(w[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_double);
    printf("%-28s mode=%-8s clients=%-4d events/s=%-9.0f p50=%.2fms p99=%.2fms p99.9=%.2fms errors=%ld conflicts=%ld\n",
           cfg.label, cfg.mode, cfg.clients, (double)total / elapsed, pct(all, total, 0.5) * 1e3,
           pct(all, total, 0.99) * 1e3, pct(all, total, 0.999) * 1e3, errors, conflicts);
    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"clients\":%d,\"events_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"p999_ms\":%.3f,\"errors\":%ld,\"conflicts\":%ld}\n",
           cfg.label, cfg.mode, cfg.clients, (double)total / elapsed, pct(all, total, 0.5) * 1e3,
           pct(all, total, 0.99) * 1e3, pct(all, total, 0.999) * 1e3, errors, conflicts);
    free(all);
    free(w);
    ordo_grpc_client_destroy(client);
    return errors > 0 ? 1 : 0;
}
