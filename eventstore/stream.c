/*
 * GetEventsStream: one thread per call. Catch-up reads pages up to the
 * watermark; then it waits for the watermark to move and reads again, until
 * the client cancels or the server stops. The watermark never passes an
 * unsettled gap, so no event that commits late is skipped.
 */
#include <stdlib.h>

#include "es.h"
#include "ordo/log.h"
#include "query.h"

/* A page is read at once; it is sent in chains of CHAIN messages (one wait
 * for the stream thread per chain, and only a chain's packed copies in
 * memory at a time). */
enum { PAGE = 500, CHAIN = 100, WAIT_MS = 200 };

typedef struct stream {
    es_streams_t *owner;
    ordo_grpc_call_t *call;
    const Eventstore__GetEventsRequest *req;
    pthread_t thread;
    atomic_bool done;
    struct stream *next;
} stream_t;

struct es_streams {
    es_ctx_t *ctx;
    pthread_mutex_t mu;
    stream_t *list;
    int active;
    atomic_bool stopping;
};

static bool should_end(stream_t *s)
{
    return atomic_load(&s->owner->stopping) || ordo_grpc_call_cancelled(s->call) ||
           ordo_grpc_server_stopping(ordo_grpc_call_server(s->call));
}

/* Sends the rows of @p res (a page, in chains of messages: one wait per
 * chain, not one per event): ORDO_UNAVAILABLE when the client went away. */
static ordo_status send_rows(stream_t *s, const PGresult *res, int64_t *pos)
{
    int rows = PQntuples(res);
    Eventstore__Event *evs = calloc((size_t)rows, sizeof *evs);
    const ProtobufCMessage **msgs = calloc((size_t)rows, sizeof *msgs);
    ordo_status st = ORDO_NO_MEMORY;

    if (rows == 0)
        st = ORDO_OK;
    else if (evs != NULL && msgs != NULL) {
        for (int i = 0; i < rows; i++) {
            eventstore__event__init(&evs[i]);
            es_event_from_row(&evs[i], res, i);
            msgs[i] = &evs[i].base;
        }
        st = ORDO_OK;
        for (int i = 0; i < rows && st == ORDO_OK; i += CHAIN)
            st = ordo_grpc_call_send_many(s->call, msgs + i, (size_t)(rows - i < CHAIN ? rows - i : CHAIN));
        for (int i = 0; i < rows; i++)
            es_event_free_metadata(&evs[i]);
        if (st == ORDO_OK)
            *pos = evs[rows - 1].position;
    }
    free(evs);
    free(msgs);
    return st;
}

static ordo_status serve(stream_t *s, ordo_pg_t *pg, ordo_error_t *err)
{
    es_watermark_t *wm = s->owner->ctx->watermark;
    int64_t pos = s->req->from_position;
    ordo_status st;

    while (!should_end(s)) {
        int64_t mark = es_watermark_get(wm);
        PGresult *res;
        int rows;

        if (mark <= pos) {
            es_watermark_wait(wm, pos, WAIT_MS);
            continue;
        }
        if ((st = es_query_events(pg, s->req, pos, mark, PAGE, &res, err)) != ORDO_OK)   /* reconnects if needed */
            return st;
        rows = PQntuples(res);
        st = send_rows(s, res, &pos);
        PQclear(res);
        if (st == ORDO_UNAVAILABLE)
            return ORDO_OK;   /* the client went away */
        if (st != ORDO_OK)
            return ordo_error_set(err, st, "cannot send the events: out of memory");
        if (rows < PAGE)
            pos = mark;   /* everything up to the mark has been seen, filtered or not */
    }
    return ORDO_OK;
}

static void *stream_thread(void *arg)
{
    stream_t *s = arg;
    ordo_pg_t *pg;
    ordo_error_t err;
    ordo_status st;

    ordo_error_clear(&err);
    st = ordo_pg_open(s->owner->ctx->cfg->database_url, "eventstore stream", NULL, &pg, &err);
    if (st == ORDO_OK)
        st = serve(s, pg, &err);
    ordo_pg_destroy(pg);
    if (st != ORDO_OK)
        ORDO_WARN("stream ended with an error", "status=%s err=\"%s\"", ordo_status_text(st), err.msg);
    ordo_grpc_call_finish(s->call, st, err.msg, NULL);
    atomic_store(&s->done, true);
    return NULL;
}

/* Joins the threads of streams that ended. Called with mu held. */
static void reap(es_streams_t *ss, bool all)
{
    stream_t **pp = &ss->list;
    while (*pp != NULL) {
        stream_t *s = *pp;
        if (all || atomic_load(&s->done)) {
            pthread_join(s->thread, NULL);
            *pp = s->next;
            ss->active--;
            free(s);
        } else {
            pp = &s->next;
        }
    }
}

void es_streams_start(es_streams_t *ss, ordo_grpc_call_t *call, const Eventstore__GetEventsRequest *req)
{
    ordo_error_t err;
    stream_t *s;

    if (es_query_check(req, &err) != ORDO_OK) {
        ordo_grpc_call_finish(call, err.code, err.msg, NULL);
        return;
    }
    pthread_mutex_lock(&ss->mu);
    reap(ss, false);
    if (ss->active >= ss->ctx->cfg->max_streams) {
        pthread_mutex_unlock(&ss->mu);
        ordo_grpc_call_finish(call, ORDO_TOO_LARGE, "too many open streams: try again later", NULL);
        return;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        pthread_mutex_unlock(&ss->mu);
        ordo_grpc_call_finish(call, ORDO_NO_MEMORY, "out of memory", NULL);
        return;
    }
    *s = (stream_t){.owner = ss, .call = call, .req = req};
    atomic_init(&s->done, false);
    if (pthread_create(&s->thread, NULL, stream_thread, s) != 0) {
        pthread_mutex_unlock(&ss->mu);
        free(s);
        ordo_grpc_call_finish(call, ORDO_UNAVAILABLE, "cannot start a stream thread", NULL);
        return;
    }
    ordo_thread_name(s->thread, "es-stream", -1);
    s->next = ss->list;
    ss->list = s;
    ss->active++;
    pthread_mutex_unlock(&ss->mu);
}

ordo_status es_streams_create(es_ctx_t *ctx, es_streams_t **out)
{
    es_streams_t *ss = calloc(1, sizeof *ss);
    *out = ss;
    if (ss == NULL)
        return ORDO_NO_MEMORY;
    ss->ctx = ctx;
    pthread_mutex_init(&ss->mu, NULL);
    atomic_init(&ss->stopping, false);
    return ORDO_OK;
}

void es_streams_destroy(es_streams_t *ss)
{
    if (ss == NULL)
        return;
    atomic_store(&ss->stopping, true);
    pthread_mutex_lock(&ss->mu);
    reap(ss, true);
    pthread_mutex_unlock(&ss->mu);
    pthread_mutex_destroy(&ss->mu);
    free(ss);
}
