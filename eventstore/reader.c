/*
 * GetEvents and the admin calls, run on a pool of reader threads (each with
 * its own database connection); calls queue here from the gRPC thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es.h"
#include "ordo/log.h"
#include "ordo/workers.h"
#include "query.h"

/* GetStats' running count of the settled part of the log. A row at or below
 * the readers' high-water mark can no longer appear, so a call counts only
 * the rows above what an earlier call counted and the tally keeps the rest
 * (count(*) over the whole table took 65 ms at 382k events, and grew with
 * the store). Streams are counted by their first events: the statement that
 * creates a stream's row writes its version 1. */
typedef struct tally {
    pthread_mutex_t mu;
    int64_t upto;         /* counted up to this position (settled) */
    int64_t events;       /* rows in events at or below it */
    int64_t aggregates;   /* of them, first events (rows in streams) */
} tally_t;

struct es_readers {
    ordo_workers_t *pool;
    tally_t tally;
};

static void get_events(void *vctx, ordo_pg_t *pg, void *arg)
{
    es_ctx_t *ctx = vctx;
    ordo_grpc_call_t *call = arg;
    const Eventstore__GetEventsRequest *req = (const Eventstore__GetEventsRequest *)ordo_grpc_call_request(call);
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
        int64_t local = es_watermark_local_commit(ctx->watermark);
        upto = es_watermark_wait(ctx->watermark, local - 1, 500);
    }
    st = es_query_events(pg, req, req->from_position, upto, es_query_limit(req->limit), ctx->cfg->read_max_bytes, &res,
                         &err);
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
    resp.more = es_query_more(res);
done:
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    for (int i = 0; i < n; i++)
        es_event_free_metadata(&events[i]);
    free(events);
    free(ptrs);
    PQclear(res);
}

/* The durables' lag into @p resp (nothing while NATS is unreachable: the
 * store's own figures still answer). *lags and *msgs are the caller's to free. */
static void add_lags(es_ctx_t *ctx, Eventstore__StatsResponse *resp, ordo_bus_lag_t **lags,
                     Eventstore__ConsumerLag **msgs, Eventstore__ConsumerLag ***ptrs)
{
    size_t n = 0;
    ordo_error_t err;

    *msgs = NULL;
    *ptrs = NULL;
    if (es_relay_lags(ctx->relay, lags, &n, &err) != ORDO_OK || n == 0)
        return;
    if ((*msgs = calloc(n, sizeof **msgs)) == NULL || (*ptrs = calloc(n, sizeof **ptrs)) == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        Eventstore__ConsumerLag *m = &(*msgs)[i];
        eventstore__consumer_lag__init(m);
        m->name = (*lags)[i].name;
        m->pending = (*lags)[i].pending;
        m->ack_pending = (*lags)[i].ack_pending;
        m->redelivered = (*lags)[i].redelivered;
        m->delivered = (*lags)[i].delivered;
        m->parked = (*lags)[i].parked;
        (*ptrs)[i] = m;
    }
    resp->consumers = *ptrs;
    resp->n_consumers = n;
}

/* The events above @p from (all of them, and those at or below @p settled),
 * how many of each are first events, the outbox backlog and the last
 * position, in one statement. The range is closed above (by the largest
 * int8): a table that grew faster than autovacuum analyses it has no
 * statistics, and PostgreSQL then guesses a third of the rows for an open
 * range (a scan of the whole table: 65 ms at 760k events) but few for a
 * closed one (the primary key's range). */
static const char *const STATS_SQL =
    "SELECT count(*), count(CASE WHEN version = 1 THEN 1 END),"
    " count(CASE WHEN position <= $2::int8 THEN 1 END),"
    " count(CASE WHEN position <= $2::int8 AND version = 1 THEN 1 END),"
    " (SELECT count(*) FROM outbox), (SELECT coalesce(max(position), 0) FROM events)"
    " FROM events WHERE position > $1::int8 AND position <= 9223372036854775807";

static int64_t column(PGresult *res, int i)
{
    return strtoll(PQgetvalue(res, 0, i), NULL, 10);
}

/* Counts events and aggregates: the tally, plus the rows above it (read
 * with the mark taken before the statement, so every settled row is in its
 * snapshot); the rows up to the mark join the tally, unless another call
 * moved it meanwhile. */
static ordo_status count_log(es_ctx_t *ctx, ordo_pg_t *pg, Eventstore__StatsResponse *resp, ordo_error_t *err)
{
    tally_t *t = &ctx->readers->tally;
    int64_t settled = es_watermark_get(ctx->watermark), from, events, aggregates;
    char from_s[24], settled_s[24];
    const char *params[2] = {from_s, settled_s};
    PGresult *res = NULL;
    ordo_status st;

    pthread_mutex_lock(&t->mu);
    from = t->upto;
    events = t->events;
    aggregates = t->aggregates;
    pthread_mutex_unlock(&t->mu);
    snprintf(from_s, sizeof from_s, "%lld", (long long)from);
    snprintf(settled_s, sizeof settled_s, "%lld", (long long)settled);
    if ((st = ordo_pg_query_idempotent(pg, STATS_SQL, 2, params, &res, err)) != ORDO_OK)
        return st;
    resp->events = events + column(res, 0);
    resp->aggregates = aggregates + column(res, 1);
    resp->outbox_backlog = column(res, 4);
    resp->last_position = column(res, 5);
    pthread_mutex_lock(&t->mu);
    if (t->upto == from && settled > from) {
        t->upto = settled;
        t->events = events + column(res, 2);
        t->aggregates = aggregates + column(res, 3);
    }
    pthread_mutex_unlock(&t->mu);
    PQclear(res);
    return ORDO_OK;
}

static void stats(void *vctx, ordo_pg_t *pg, void *arg)
{
    es_ctx_t *ctx = vctx;
    ordo_grpc_call_t *call = arg;
    Eventstore__StatsResponse resp = EVENTSTORE__STATS_RESPONSE__INIT;
    es_stats_t *s = &ctx->stats;
    ordo_bus_lag_t *lags = NULL;
    Eventstore__ConsumerLag *lag_msgs = NULL, **lag_ptrs = NULL;
    ordo_error_t err;
    ordo_status st;

    st = count_log(ctx, pg, &resp, &err);
    if (st == ORDO_OK) {
        resp.safe_position = es_watermark_get(ctx->watermark);
        resp.published = atomic_load(&s->published);
        resp.publish_errors = atomic_load(&s->publish_errors);
        resp.set_aside = atomic_load(&s->set_aside);
        resp.appends = atomic_load(&s->appends);
        resp.conflicts = atomic_load(&s->conflicts);
        resp.duplicates = atomic_load(&s->duplicates);
        resp.tx_retries = atomic_load(&s->tx_retries);
        resp.batches = atomic_load(&s->batches);
        resp.redriven = atomic_load(&s->redriven);
        resp.stuck = atomic_load(&s->stuck);
        resp.lost_republished = atomic_load(&s->lost_republished);
        resp.write_queue_full = atomic_load(&s->queue_full);
        resp.expired = atomic_load(&s->expired);
        resp.bus_connected = es_relay_connected(ctx->relay);
        resp.relay_leader = es_relay_leading(ctx->relay);
        add_lags(ctx, &resp, &lags, &lag_msgs, &lag_ptrs);
    }
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    free(lags);
    free(lag_msgs);
    free(lag_ptrs);
}

enum { FRESH_MAX = 10000 };   /* events one Republish with fresh ids publishes at most */

/* A Republish with fresh ids, on the relay's connection: each stored event
 * of the range published at once with a message id of its own (positions
 * without an event skipped). */
typedef struct fresh_job {
    ordo_pg_t *pg;
    int64_t from, to, published;
} fresh_job_t;

static ordo_status publish_fresh_on_bus(ordo_bus_t *bus, void *arg, ordo_error_t *err)
{
    fresh_job_t *job = arg;
    ordo_status st = ORDO_OK;

    for (int64_t p = job->from; p <= job->to && st == ORDO_OK; p++) {
        st = es_publish_fresh(job->pg, bus, p, err);
        if (st == ORDO_OK)
            job->published++;
        else if (st == ORDO_NOT_FOUND)
            st = ORDO_OK;   /* a position no committed event has */
    }
    return st;
}

static ordo_status republish_fresh(es_ctx_t *ctx, ordo_pg_t *pg, const Eventstore__RepublishRequest *req,
                                   int64_t *published, ordo_error_t *err)
{
    fresh_job_t job = {pg, req->from_position, req->to_position, 0};
    ordo_status st;

    if (req->to_position == 0 || req->to_position - req->from_position >= FRESH_MAX)
        return ordo_error_set(err, ORDO_INVALID, "fresh_ids publishes at most %d events: give to_position", FRESH_MAX);
    st = es_relay_with_bus(ctx->relay, publish_fresh_on_bus, &job, err);
    *published = job.published;
    if (job.published > 0)
        ORDO_INFO("republished with fresh message ids", "from=%lld to=%lld published=%lld",
                  (long long)req->from_position, (long long)req->to_position, (long long)job.published);
    return st;
}

static void republish(void *vctx, ordo_pg_t *pg, void *arg)
{
    es_ctx_t *ctx = vctx;
    ordo_grpc_call_t *call = arg;
    const Eventstore__RepublishRequest *req = (const Eventstore__RepublishRequest *)ordo_grpc_call_request(call);
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
    if (req->fresh_ids) {
        st = republish_fresh(ctx, pg, req, &resp.queued, &err);
        goto done;
    }
    snprintf(from, sizeof from, "%lld", (long long)req->from_position);
    snprintf(to, sizeof to, "%lld", (long long)req->to_position);
    st = ordo_pg_query_idempotent(pg, "INSERT INTO outbox (position) SELECT position FROM events"   /* idempotent */
                                      " WHERE position >= $1::int8 AND ($2::int8 = 0 OR position <= $2::int8)"
                                      " ON CONFLICT (position) DO NOTHING", 2, params, &res, &err);
    if (st == ORDO_OK) {
        resp.queued = strtoll(PQcmdTuples(res), NULL, 10);
        ORDO_INFO("republish queued", "from=%s to=%s queued=%lld", from, to, (long long)resp.queued);
        es_relay_rescan(ctx->relay);
    }
done:
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    PQclear(res);
}

static void submit(es_readers_t *r, ordo_job_cb fn, ordo_grpc_call_t *call)
{
    if (ordo_workers_submit(r->pool, fn, call) != ORDO_OK)
        ordo_grpc_call_finish(call, ORDO_NO_MEMORY, "out of memory", NULL);
}

void es_readers_get_events(es_readers_t *r, ordo_grpc_call_t *call)
{
    submit(r, get_events, call);
}

void es_readers_stats(es_readers_t *r, ordo_grpc_call_t *call)
{
    submit(r, stats, call);
}

void es_readers_republish(es_readers_t *r, ordo_grpc_call_t *call)
{
    submit(r, republish, call);
}

void es_readers_submit(es_readers_t *r, ordo_job_cb fn, ordo_grpc_call_t *call)
{
    submit(r, fn, call);
}

ordo_status es_readers_create(es_ctx_t *ctx, es_readers_t **out, ordo_error_t *err)
{
    es_readers_t *r = calloc(1, sizeof *r);
    ordo_status st;

    *out = NULL;
    if (r == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    pthread_mutex_init(&r->tally.mu, NULL);
    st = ordo_workers_create(ctx->cfg->readers, ctx->cfg->database_url, NULL, ctx, &r->pool, err);
    if (st != ORDO_OK) {
        pthread_mutex_destroy(&r->tally.mu);
        free(r);
        return st;
    }
    *out = r;
    return ORDO_OK;
}

void es_readers_destroy(es_readers_t *r)
{
    if (r == NULL)
        return;
    ordo_workers_destroy(r->pool);
    pthread_mutex_destroy(&r->tally.mu);
    free(r);
}
