/*
 * The readers' safe high-water mark: the highest position P such that every
 * position at or below P is settled — committed, or never going to be.
 *
 * Positions come from a sequence, so a transaction still in flight can hold
 * a lower position than one already committed. The mark walks the committed
 * positions in order and stops at the first gap, unless the event after the
 * gap is older than gap_timeout: created_at is taken by clock_timestamp()
 * when that event's position was drawn, after the gap's position was drawn,
 * and every writer's transaction is bounded by statement and idle timeouts
 * well below gap_timeout, so such a gap can no longer fill. See
 * docs/eventstore.md, "Gaps".
 *
 * A gap also settles as soon as every transaction that could hold it has
 * ended (PostgreSQL: the sessions that had a transaction open when the gap
 * was first seen, from pg_stat_activity, are all gone from it or in a later
 * transaction, and the position is still not there): a writer whose
 * connection died, or that rolled back, holds up readers for a tick, not
 * for gap_timeout. Where pg_stat_activity cannot tell (CockroachDB has
 * none), the timeout alone settles gaps. See docs/eventstore.md, "Gaps".
 *
 * The writers also tell it which positions they committed. Those need no
 * query: when the positions right after the mark are this process's own
 * committed ones, the writer moves the mark over them itself (no thread
 * wakes up but those waiting for the mark). The watermark thread is poked to
 * read the database only when a position after the mark is not known here
 * as committed (another instance's event, a transaction of ours still in
 * flight or rolled back), and reads it on every tick.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "es.h"
#include "ordo/log.h"
#include "ordo/retry.h"

enum { PAGE = 10000, TICK_MS = 100, START_BACK = 1000000, MAX_RANGES = 8192, MAX_WITNESSES = 1024 };

/* A session that had a transaction open when a gap was first seen. */
typedef struct witness {
    int pid;
    char xact_start[40];   /* as PostgreSQL prints it: with the pid, names the transaction */
} witness_t;

typedef struct range {
    int64_t first, last;
} range_t;

struct es_watermark {
    es_ctx_t *ctx;
    pthread_mutex_t mu;
    pthread_cond_t changed;    /* the mark moved */
    pthread_cond_t poked;      /* a local commit happened */
    int64_t mark;
    int64_t local_commit;
    range_t *ranges;           /* positions committed here, above the mark: sorted, disjoint */
    size_t n_ranges;
    bool poke, stopping, ready;
    ordo_pg_t *pg;             /* the watermark thread's */
    pthread_t thread;
    /* watermark thread only: the gap being watched and the transactions open when it was first seen */
    int64_t gap;               /* 0: none */
    witness_t *witnesses;
    int n_witnesses;
    bool no_activity;          /* pg_stat_activity cannot tell here (CockroachDB): gaps settle by the timeout alone */
    bool checked_server;
    atomic_bool database_ok;   /* the last look at the database succeeded (for /metrics) */
};

/* Where to start walking: a million positions below the top are long settled. */
static ordo_status initial_mark(ordo_pg_t *pg, int64_t *mark, ordo_error_t *err)
{
    PGresult *res;
    ordo_status st = ordo_pg_query(pg, "SELECT coalesce(max(position), 0) FROM events", 0, NULL, &res, err);
    if (st != ORDO_OK)
        return st;
    *mark = strtoll(PQgetvalue(res, 0, 0), NULL, 10) - START_BACK;
    if (*mark < 0)
        *mark = 0;
    PQclear(res);
    return ORDO_OK;
}

/* The transactions open now in this database but ours (at most
 * MAX_WITNESSES; false when there are more or none can be read). */
static bool open_transactions(ordo_pg_t *pg, witness_t *out, int *n)
{
    PGresult *res;
    ordo_error_t err;
    bool ok;

    if (ordo_pg_query(pg, "SELECT pid, xact_start::text FROM pg_stat_activity WHERE datname = current_database()"
                          " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL", 0, NULL, &res, &err) != ORDO_OK)
        return false;
    ok = PQntuples(res) <= MAX_WITNESSES;
    *n = ok ? PQntuples(res) : 0;
    for (int i = 0; i < *n; i++) {
        out[i].pid = atoi(PQgetvalue(res, i, 0));
        snprintf(out[i].xact_start, sizeof out[i].xact_start, "%s", PQgetvalue(res, i, 1));
    }
    PQclear(res);
    return ok;
}

/* PostgreSQL lists every open transaction in pg_stat_activity (to a role
 * that sees its own sessions, as the event store's does: only it writes
 * events); CockroachDB's pg_stat_activity does not, nor do servers where it
 * cannot be read. 1: it does, 0: it does not, -1: cannot tell now. */
static int server_shows_transactions(ordo_pg_t *pg)
{
    PGresult *res;
    ordo_error_t err;
    int shows;

    if (ordo_pg_query(pg, "SELECT version() NOT LIKE '%CockroachDB%' AND"
                          " (SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() AND xact_start IS NOT NULL) = 1",
                      0, NULL, &res, &err) != ORDO_OK)
        return -1;   /* unknown: asked again at the next gap */
    shows = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return shows;
}

/* Whether position @p gap (missing; a later one committed) can never
 * commit: the first time it is seen, the open transactions are noted; it is
 * dead once none of them is open any more and it is still not there (a
 * transaction holding it had it drawn before the later position was, so it
 * was open then). */
static bool gap_dead(es_watermark_t *wm, ordo_pg_t *pg, int64_t gap)
{
    witness_t now[MAX_WITNESSES];
    char pos[24];
    const char *params[1] = {pos};
    PGresult *res;
    ordo_error_t err;
    int n = 0;
    bool dead;

    if (!wm->checked_server) {
        int shows = server_shows_transactions(pg);
        if (shows < 0)
            return false;
        wm->checked_server = true;
        wm->no_activity = shows == 0;
        if (wm->no_activity)
            ORDO_INFO("gaps settle by the gap timeout alone: this server does not show its open transactions", "gap_timeout_ms=%d", wm->ctx->cfg->gap_timeout_ms);
    }
    if (wm->no_activity)
        return false;
    if (wm->gap != gap) {
        wm->gap = gap;
        if (!open_transactions(pg, wm->witnesses, &wm->n_witnesses))
            wm->gap = 0;   /* try again next time */
        return false;
    }
    if (!open_transactions(pg, now, &n))
        return false;
    for (int i = 0; i < wm->n_witnesses; i++)
        for (int k = 0; k < n; k++)
            if (wm->witnesses[i].pid == now[k].pid && strcmp(wm->witnesses[i].xact_start, now[k].xact_start) == 0)
                return false;   /* still open */
    snprintf(pos, sizeof pos, "%lld", (long long)gap);
    if (ordo_pg_query(pg, "SELECT 1 FROM events WHERE position = $1::int8", 1, params, &res, &err) != ORDO_OK)
        return false;
    dead = PQntuples(res) == 0;   /* committed meanwhile: the next walk takes it */
    PQclear(res);
    wm->gap = 0;
    return dead;
}

/* One walk from @p mark: returns the new mark in *mark, and whether a full page was read. */
static ordo_status advance(es_watermark_t *wm, ordo_pg_t *pg, int64_t *mark, bool *more, ordo_error_t *err)
{
    char from[24], gap[40];
    const char *params[2] = {from, gap};
    PGresult *res;
    ordo_status st;
    int n;

    snprintf(from, sizeof from, "%lld", (long long)*mark);
    snprintf(gap, sizeof gap, "%d milliseconds", wm->ctx->cfg->gap_timeout_ms);
    st = ordo_pg_query(pg, "SELECT position, created_at < clock_timestamp() - $2::interval"
                                               " FROM events WHERE position > $1::int8 ORDER BY position LIMIT 10000",
                                2, params, &res, err);
    if (st != ORDO_OK)
        return st;
    n = PQntuples(res);
    *more = n == PAGE;
    for (int i = 0; i < n; i++) {
        int64_t p = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        bool old = PQgetvalue(res, i, 1)[0] == 't';
        if (p != *mark + 1) {
            bool ended = !old && gap_dead(wm, pg, *mark + 1);
            if (!old && !ended) {
                *more = false;
                break;
            }
            ORDO_INFO("gap settled: positions never committed", "from=%lld to=%lld by=%s", (long long)*mark + 1,
                      (long long)p - 1, ended ? "their transactions ended" : "gap timeout");
        }
        *mark = p;
    }
    PQclear(res);
    return ORDO_OK;
}

/* Adds committed positions [first, last] to the sorted ranges (mu held). */
static void add_range(es_watermark_t *wm, int64_t first, int64_t last)
{
    size_t i = wm->n_ranges;

    if (i > 0 && wm->ranges[i - 1].last + 1 == first) {
        wm->ranges[i - 1].last = last;      /* the usual case: right after the last one */
        return;
    }
    if (i == MAX_RANGES)
        return;                             /* the database walk will cover these */
    while (i > 0 && wm->ranges[i - 1].first > first) {
        wm->ranges[i] = wm->ranges[i - 1];
        i--;
    }
    wm->ranges[i] = (range_t){first, last};
    wm->n_ranges++;
}

/* Moves @p mark over this process's committed positions that follow it and
 * forgets those at or below it (mu held). */
static void skip_ranges(es_watermark_t *wm, int64_t *mark)
{
    size_t k = 0;

    while (k < wm->n_ranges && wm->ranges[k].first <= *mark + 1) {
        if (wm->ranges[k].last > *mark)
            *mark = wm->ranges[k].last;
        k++;
    }
    memmove(wm->ranges, wm->ranges + k, (wm->n_ranges - k) * sizeof *wm->ranges);
    wm->n_ranges -= k;
}

/* The thread's walk over local commits: starts from the published mark when
 * a writer moved it further, then skip_ranges. Returns whether any committed
 * here remain above the mark (something unknown lies between: ask the database). */
static bool advance_locally(es_watermark_t *wm, int64_t *mark)
{
    bool left;

    pthread_mutex_lock(&wm->mu);
    if (wm->ready && wm->mark > *mark)
        *mark = wm->mark;
    skip_ranges(wm, mark);
    left = wm->n_ranges > 0;
    pthread_mutex_unlock(&wm->mu);
    return left;
}

static void publish(es_watermark_t *wm, int64_t mark)
{
    pthread_mutex_lock(&wm->mu);
    if (mark > wm->mark || !wm->ready) {
        wm->mark = mark;
        wm->ready = true;
        pthread_cond_broadcast(&wm->changed);
    }
    pthread_mutex_unlock(&wm->mu);
}

/* Waits for a local commit or the tick; *poked tells which. False: stop. */
static bool wait_for_work(es_watermark_t *wm, bool *poked)
{
    struct timespec until = ordo_deadline_ms(TICK_MS);
    bool stop;
    pthread_mutex_lock(&wm->mu);
    while (!wm->poke && !wm->stopping)
        if (pthread_cond_timedwait(&wm->poked, &wm->mu, &until) != 0)
            break;
    *poked = wm->poke;
    wm->poke = false;
    stop = wm->stopping;
    pthread_mutex_unlock(&wm->mu);
    return !stop;
}

static void *watermark_thread(void *arg)
{
    es_watermark_t *wm = arg;
    ordo_pg_t *pg = wm->pg;
    ordo_error_t err;
    int64_t mark = -1;
    bool more = false, warned = false, poked = false;

    do {
        if (mark >= 0) {
            int64_t before = mark;
            bool unknown = advance_locally(wm, &mark);
            if (mark > before)
                publish(wm, mark);
            if (poked && !unknown)
                continue;           /* caught up with our own commits: nothing to ask */
        }
        do {
            ordo_status st = ordo_pg_ensure(pg, &err);
            if (st == ORDO_OK && mark < 0)
                st = initial_mark(pg, &mark, &err);
            if (st == ORDO_OK)
                st = advance(wm, pg, &mark, &more, &err);
            atomic_store(&wm->database_ok, st == ORDO_OK);
            if (st != ORDO_OK) {
                if (!warned)
                    ORDO_WARN("watermark cannot read the database", "err=\"%s\"", err.msg);
                warned = true;
                break;
            }
            warned = false;
            advance_locally(wm, &mark);
            publish(wm, mark);
        } while (more);
    } while (wait_for_work(wm, &poked));
    return NULL;
}

/* The one cleanup: what es_watermark_create made, once the thread is gone (or never ran). */
static void watermark_free(es_watermark_t *wm)
{
    pthread_mutex_destroy(&wm->mu);
    pthread_cond_destroy(&wm->changed);
    pthread_cond_destroy(&wm->poked);
    ordo_pg_destroy(wm->pg);
    free(wm->ranges);
    free(wm->witnesses);
    free(wm);
}

ordo_status es_watermark_create(es_ctx_t *ctx, es_watermark_t **out, ordo_error_t *err)
{
    es_watermark_t *wm = calloc(1, sizeof *wm);
    *out = NULL;
    if (wm == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    wm->ctx = ctx;
    pthread_mutex_init(&wm->mu, NULL);
    pthread_cond_init(&wm->changed, NULL);
    pthread_cond_init(&wm->poked, NULL);
    if (ordo_pg_create(ctx->cfg->database_url, "eventstore watermark", NULL, &wm->pg, err) != ORDO_OK ||
        (wm->ranges = calloc(MAX_RANGES, sizeof *wm->ranges)) == NULL ||
        (wm->witnesses = calloc(MAX_WITNESSES, sizeof *wm->witnesses)) == NULL) {
        watermark_free(wm);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    if (pthread_create(&wm->thread, NULL, watermark_thread, wm) != 0) {
        watermark_free(wm);
        return ordo_error_set(err, ORDO_INTERNAL, "cannot start the watermark thread");
    }
    ordo_thread_name(wm->thread, "es-watermark", -1);
    *out = wm;
    return ORDO_OK;
}

bool es_watermark_database_ok(es_watermark_t *wm)
{
    return atomic_load(&wm->database_ok);
}

int64_t es_watermark_get(es_watermark_t *wm)
{
    int64_t m;
    pthread_mutex_lock(&wm->mu);
    m = wm->mark;
    pthread_mutex_unlock(&wm->mu);
    return m;
}

int64_t es_watermark_wait(es_watermark_t *wm, int64_t above, int timeout_ms)
{
    struct timespec until = ordo_deadline_ms(timeout_ms);
    int64_t m;
    pthread_mutex_lock(&wm->mu);
    while (wm->mark <= above && !wm->stopping)
        if (pthread_cond_timedwait(&wm->changed, &wm->mu, &until) != 0)
            break;
    m = wm->mark;
    pthread_mutex_unlock(&wm->mu);
    return m;
}

void es_watermark_committed(es_watermark_t *wm, const int64_t *positions, size_t n)
{
    pthread_mutex_lock(&wm->mu);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && positions[j + 1] == positions[j] + 1)
            j++;
        add_range(wm, positions[i], positions[j]);
        i = j + 1;
    }
    if (n > 0 && positions[n - 1] > wm->local_commit)
        wm->local_commit = positions[n - 1];
    if (wm->ready) {
        int64_t mark = wm->mark;
        skip_ranges(wm, &mark);
        if (mark > wm->mark) {
            wm->mark = mark;
            pthread_cond_broadcast(&wm->changed);
        }
    }
    if (!wm->ready || wm->n_ranges > 0) {   /* something unknown lies between: ask the database */
        wm->poke = true;
        pthread_cond_signal(&wm->poked);
    }
    pthread_mutex_unlock(&wm->mu);
}

int64_t es_watermark_local_commit(es_watermark_t *wm)
{
    int64_t p;
    pthread_mutex_lock(&wm->mu);
    p = wm->local_commit;
    pthread_mutex_unlock(&wm->mu);
    return p;
}

void es_watermark_destroy(es_watermark_t *wm)
{
    if (wm == NULL)
        return;
    pthread_mutex_lock(&wm->mu);
    wm->stopping = true;
    pthread_cond_broadcast(&wm->poked);
    pthread_cond_broadcast(&wm->changed);
    pthread_mutex_unlock(&wm->mu);
    pthread_join(wm->thread, NULL);
    watermark_free(wm);
}
