/*
 * GetEventsStream: one thread per call. Catch-up reads pages up to the
 * watermark; then it waits for the watermark to move and reads again, until
 * the client cancels or the server stops. The watermark never passes an
 * unsettled gap, so no event that commits late is skipped.
 *
 * Bounded: a page is at most PAGE events and about --read-max-bytes; a
 * chain handed to gRPC at once at most CHAIN messages and CHAIN_BYTES; a
 * client that takes nothing for --stream-idle-ms has its stream ended
 * (DEADLINE_EXCEEDED); open streams are limited in all (--max-streams) and
 * per client (--max-streams-per-client: its certificate's name with TLS,
 * else its address), so one client cannot lock the others out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es.h"
#include "ordo/log.h"
#include "query.h"

/* A page is read at once; it is sent in chains of CHAIN messages (one wait
 * for the stream thread per chain, and only a chain's packed copies in
 * memory at a time). */
enum { PAGE = 500, CHAIN = 100, CHAIN_BYTES = 1 << 20, WAIT_MS = 200, CLIENT_NAME = 128 };

typedef struct stream {
    es_streams_t *owner;
    ordo_grpc_call_t *call;
    const Eventstore__GetEventsRequest *req;
    char client[CLIENT_NAME];
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

/* How many of the @p n messages from @p evs go in one chain: CHAIN at
 * most, and no more once CHAIN_BYTES of event data are in it. */
static int chain_length(const Eventstore__Event *evs, int n)
{
    size_t bytes = 0;
    int k = 0;
    while (k < n && k < CHAIN && (k == 0 || bytes < CHAIN_BYTES))
        bytes += strlen(evs[k++].event_data);
    return k;
}

/* Sends the rows of @p res (a page, in chains of messages: one wait per
 * chain, not one per event): ORDO_UNAVAILABLE when the client went away,
 * ORDO_TIMEOUT when it took nothing for --stream-idle-ms (the call is then
 * cancelled). */
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
        for (int i = 0, k; i < rows && st == ORDO_OK; i += k) {
            k = chain_length(evs + i, rows - i);
            st = ordo_grpc_call_send_many_within(s->call, msgs + i, (size_t)k, s->owner->ctx->cfg->stream_idle_ms);
        }
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
    bool more;

    while (!should_end(s)) {
        int64_t mark = es_watermark_get(wm);
        PGresult *res;
        int rows;

        if (mark <= pos) {
            es_watermark_wait(wm, pos, WAIT_MS);
            continue;
        }
        if ((st = es_query_events(pg, s->req, pos, mark, PAGE, s->owner->ctx->cfg->read_max_bytes, &res, err)) !=
            ORDO_OK)   /* reconnects if needed */
            return st;
        rows = PQntuples(res);
        more = es_query_more(res);
        st = send_rows(s, res, &pos);
        PQclear(res);
        if (st == ORDO_UNAVAILABLE)
            return ORDO_OK;   /* the client went away */
        if (st == ORDO_TIMEOUT) {
            ORDO_WARN("stream ended: the client read nothing", "client=%s idle_ms=%d", s->client,
                      s->owner->ctx->cfg->stream_idle_ms);
            return ORDO_OK;   /* (the call is cancelled: its status says why) */
        }
        if (st != ORDO_OK)
            return ordo_error_set(err, st, "cannot send the events: out of memory");
        if (rows == 0 || !more)
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

/* The streams open for @p client (mu held). */
static int open_by(const es_streams_t *ss, const char *client)
{
    int n = 0;
    for (const stream_t *s = ss->list; s != NULL; s = s->next)
        n += !atomic_load(&s->done) && strcmp(s->client, client) == 0;
    return n;
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
    if ((s = calloc(1, sizeof *s)) == NULL) {
        ordo_grpc_call_finish(call, ORDO_NO_MEMORY, "out of memory", NULL);
        return;
    }
    *s = (stream_t){.owner = ss, .call = call, .req = req};
    ordo_grpc_call_client(call, s->client, sizeof s->client);
    pthread_mutex_lock(&ss->mu);
    reap(ss, false);
    if (ss->active >= ss->ctx->cfg->max_streams || open_by(ss, s->client) >= ss->ctx->cfg->max_streams_per_client) {
        bool all = ss->active >= ss->ctx->cfg->max_streams;
        char msg[256];
        pthread_mutex_unlock(&ss->mu);
        snprintf(msg, sizeof msg, "too many open streams%s%s: try again later", all ? "" : " from ",
                 all ? "" : s->client);
        ORDO_WARN("stream refused", "client=%s reason=\"%s\"", s->client, msg);
        free(s);
        ordo_grpc_call_finish(call, ORDO_TOO_LARGE, msg, NULL);
        return;
    }
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
