/*
 * Reader threads: GetEvents and the admin calls. Each thread owns one
 * database connection; calls queue here from the gRPC thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es.h"
#include "ordo/log.h"
#include "query.h"

typedef enum job_kind { JOB_GET_EVENTS, JOB_STATS, JOB_REPUBLISH } job_kind;

typedef struct job {
    job_kind kind;
    ordo_grpc_call_t *call;
    const ProtobufCMessage *req;   /* owned by the call */
    struct job *next;
} job_t;

struct es_readers {
    es_ctx_t *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    bool stopping;
    pthread_t *threads;
    int n_threads;
};

static void get_events(es_readers_t *r, ordo_pg_t *pg, ordo_grpc_call_t *call,
                       const Eventstore__GetEventsRequest *req)
{
    Eventstore__GetEventsResponse resp = EVENTSTORE__GET_EVENTS_RESPONSE__INIT;
    Eventstore__Event *events = NULL, **ptrs = NULL;
    PGresult *res = NULL;
    ordo_error_t err;
    ordo_status st;
    int64_t upto = -1;
    int n = 0;

    if ((st = es_query_check(req, &err)) != ORDO_OK)
        goto done;
    if (es_query_needs_watermark(req)) {
        /* read-your-writes: wait (briefly) until what this process committed is readable */
        int64_t local = es_watermark_local_commit(r->ctx->watermark);
        upto = es_watermark_wait(r->ctx->watermark, local - 1, 500);
    }
    if ((st = ordo_pg_ensure(pg, &err)) != ORDO_OK)
        goto done;
    st = es_query_events(pg, req, req->from_position, upto, es_query_limit(req->limit), &res, &err);
    if (st != ORDO_OK)
        goto done;
    n = PQntuples(res);
    events = calloc((size_t)n + 1, sizeof *events);
    ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    if (events == NULL || ptrs == NULL) {
        st = ordo_error_set(&err, ORDO_NO_MEMORY, "out of memory");
        n = 0;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        eventstore__event__init(&events[i]);
        es_event_from_row(&events[i], res, i);
        ptrs[i] = &events[i];
    }
    resp.n_events = (size_t)n;
    resp.events = ptrs;
done:
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    for (int i = 0; i < n; i++)
        es_event_free_metadata(&events[i]);
    free(events);
    free(ptrs);
    PQclear(res);
}

static void stats(es_readers_t *r, ordo_pg_t *pg, ordo_grpc_call_t *call)
{
    Eventstore__StatsResponse resp = EVENTSTORE__STATS_RESPONSE__INIT;
    es_stats_t *s = &r->ctx->stats;
    PGresult *res = NULL;
    ordo_error_t err;
    ordo_status st;

    st = ordo_pg_ensure(pg, &err);
    if (st == ORDO_OK)
        st = ordo_pg_query(pg, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM streams),"
                               " (SELECT count(*) FROM outbox), (SELECT coalesce(max(position), 0) FROM events)",
                           0, NULL, &res, &err);
    if (st == ORDO_OK) {
        resp.events = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        resp.aggregates = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        resp.outbox_backlog = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
        resp.last_position = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
        resp.safe_position = es_watermark_get(r->ctx->watermark);
        resp.published = atomic_load(&s->published);
        resp.publish_errors = atomic_load(&s->publish_errors);
        resp.set_aside = atomic_load(&s->set_aside);
        resp.appends = atomic_load(&s->appends);
        resp.conflicts = atomic_load(&s->conflicts);
        resp.duplicates = atomic_load(&s->duplicates);
        resp.tx_retries = atomic_load(&s->tx_retries);
        resp.batches = atomic_load(&s->batches);
        resp.bus_connected = es_relay_connected(r->ctx->relay);
    }
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    PQclear(res);
}

static void republish(es_readers_t *r, ordo_pg_t *pg, ordo_grpc_call_t *call,
                      const Eventstore__RepublishRequest *req)
{
    Eventstore__RepublishResponse resp = EVENTSTORE__REPUBLISH_RESPONSE__INIT;
    char from[24], to[24];
    const char *params[2] = {from, to};
    PGresult *res = NULL;
    ordo_error_t err;
    ordo_status st;

    if (req->from_position < 1 || req->to_position < 0 || (req->to_position > 0 && req->to_position < req->from_position)) {
        st = ordo_error_set(&err, ORDO_INVALID, "give from_position >= 1 and to_position >= from_position (0: to the end)");
        goto done;
    }
    snprintf(from, sizeof from, "%lld", (long long)req->from_position);
    snprintf(to, sizeof to, "%lld", (long long)req->to_position);
    st = ordo_pg_ensure(pg, &err);
    if (st == ORDO_OK)
        st = ordo_pg_query(pg, "INSERT INTO outbox (position) SELECT position FROM events"
                               " WHERE position >= $1::int8 AND ($2::int8 = 0 OR position <= $2::int8)"
                               " ON CONFLICT (position) DO NOTHING", 2, params, &res, &err);
    if (st == ORDO_OK) {
        resp.queued = strtoll(PQcmdTuples(res), NULL, 10);
        ORDO_INFO("republish queued", "from=%s to=%s queued=%lld", from, to, (long long)resp.queued);
        es_relay_rescan(r->ctx->relay);
    }
done:
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    PQclear(res);
}

static job_t *take(es_readers_t *r)
{
    job_t *j;
    pthread_mutex_lock(&r->mu);
    while (r->head == NULL && !r->stopping)
        pthread_cond_wait(&r->cv, &r->mu);
    j = r->head;
    if (j != NULL && (r->head = j->next) == NULL)
        r->tail = NULL;
    pthread_mutex_unlock(&r->mu);
    return j;
}

static void *reader_thread(void *arg)
{
    es_readers_t *r = arg;
    ordo_pg_t pg;
    ordo_error_t err;
    job_t *j;

    if (ordo_pg_open(&pg, r->ctx->cfg->database_url, NULL, &err) != ORDO_OK)
        ORDO_WARN("reader cannot reach the database yet", "err=\"%s\"", err.msg);
    while ((j = take(r)) != NULL) {
        switch (j->kind) {
        case JOB_GET_EVENTS:
            get_events(r, &pg, j->call, (const Eventstore__GetEventsRequest *)j->req);
            break;
        case JOB_STATS:
            stats(r, &pg, j->call);
            break;
        case JOB_REPUBLISH:
            republish(r, &pg, j->call, (const Eventstore__RepublishRequest *)j->req);
            break;
        }
        free(j);
    }
    ordo_pg_close(&pg);
    return NULL;
}

static void submit(es_readers_t *r, job_kind kind, ordo_grpc_call_t *call, const ProtobufCMessage *req)
{
    job_t *j = calloc(1, sizeof *j);
    if (j == NULL) {
        ordo_grpc_call_finish(call, ORDO_NO_MEMORY, "out of memory", NULL);
        return;
    }
    *j = (job_t){kind, call, req, NULL};
    pthread_mutex_lock(&r->mu);
    if (r->tail != NULL)
        r->tail->next = j;
    else
        r->head = j;
    r->tail = j;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void es_readers_get_events(es_readers_t *r, ordo_grpc_call_t *call, const Eventstore__GetEventsRequest *req)
{
    submit(r, JOB_GET_EVENTS, call, &req->base);
}

void es_readers_stats(es_readers_t *r, ordo_grpc_call_t *call)
{
    submit(r, JOB_STATS, call, NULL);
}

void es_readers_republish(es_readers_t *r, ordo_grpc_call_t *call, const Eventstore__RepublishRequest *req)
{
    submit(r, JOB_REPUBLISH, call, &req->base);
}

ordo_status es_readers_create(es_ctx_t *ctx, es_readers_t **out, ordo_error_t *err)
{
    es_readers_t *r = calloc(1, sizeof *r);

    *out = NULL;
    if (r == NULL || (r->threads = calloc((size_t)ctx->cfg->readers, sizeof *r->threads)) == NULL) {
        free(r);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    r->ctx = ctx;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    for (int i = 0; i < ctx->cfg->readers; i++) {
        if (pthread_create(&r->threads[i], NULL, reader_thread, r) != 0) {
            es_readers_destroy(r);
            return ordo_error_set(err, ORDO_INTERNAL, "cannot start reader threads");
        }
        r->n_threads++;
    }
    *out = r;
    return ORDO_OK;
}

void es_readers_destroy(es_readers_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < r->n_threads; i++)
        pthread_join(r->threads[i], NULL);
    free(r->threads);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
