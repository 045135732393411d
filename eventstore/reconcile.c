/*
 * The saga reconciler (docs/reliability.md, "Nothing stays stuck"): run by
 * the relay that holds the lease, it finds the streams of one aggregate type
 * (orders) whose last event is older than --reconcile-after-s and not one of
 * the final types, and re-drives each by publishing its last event again
 * (with a message id of its own, so that JetStream's duplicate window does
 * not drop it): the services, whose handlers are idempotent, take the saga
 * on from there. What a message lost on the way
 * (a NATS crash, a stream over its limits, a durable reset) left stuck
 * finishes without a hand on it.
 *
 * Bounded work: the log is walked in position chunks, up to the position
 * the watermark had --reconcile-after-s ago (sampled each round), from the
 * start once per process, then only what is new; a re-driven stream is
 * looked at again after twice the wait, at most REDRIVES times, then logged
 * as needing a hand (with what ordoctl shows: its parked messages). The
 * list of those is bounded too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es.h"
#include "ordo/envelope.h"
#include "ordo/log.h"

enum {
    CHUNK = 20000,       /* positions one query looks at */
    CHUNKS_PER_ROUND = 5,
    SAMPLES = 64,        /* watermark samples kept (one per round) */
    WATCH_MAX = 4096,    /* re-driven streams looked at again */
    REDRIVES = 3,        /* re-drives of one stream before it is left to an operator */
    REDRIVE_WAIT_MS = 5000,
};

typedef struct sample {
    int64_t at_ms, position;
} sample_t;

typedef struct watched {
    char aggregate_id[257];
    int64_t position;    /* its last event when re-driven */
    int64_t due_ms;
    int redrives;
} watched_t;

struct es_reconciler {
    const es_config_t *cfg;
    es_stats_t *stats;
    char finals[512];    /* {a,b,c}: the final event types as a PostgreSQL array */
    int64_t cursor;      /* positions at or below are looked at */
    int64_t next_ms;
    sample_t samples[SAMPLES];
    int n_samples, next_sample;
    watched_t *watch;
    int n_watch;
};

/* "{a,b,c}" from "a,b,c" (the names are checked at start: no braces or quotes). */
static void pg_array(const char *list, char *out, size_t cap)
{
    snprintf(out, cap, "{%s}", list);
}

es_reconciler_t *es_reconciler_create(const es_config_t *cfg)
{
    es_reconciler_t *rc = calloc(1, sizeof *rc);
    if (rc == NULL || (rc->watch = calloc(WATCH_MAX, sizeof *rc->watch)) == NULL) {
        free(rc);
        return NULL;
    }
    rc->cfg = cfg;
    pg_array(cfg->reconcile_final, rc->finals, sizeof rc->finals);
    return rc;
}

void es_reconciler_destroy(es_reconciler_t *rc)
{
    if (rc != NULL)
        free(rc->watch);
    free(rc);
}

/* Remembers where the watermark is now (a sample every 1/32 of the wait,
 * so that the ring spans twice the wait); returns where it was
 * --reconcile-after-s ago (0 when no sample is that old yet). */
static int64_t position_then(es_reconciler_t *rc, int64_t now_ms, int64_t safe)
{
    int64_t then = 0, wait_ms = (int64_t)rc->cfg->reconcile_after_s * 1000;
    int last = (rc->next_sample + SAMPLES - 1) % SAMPLES;

    for (int i = 0; i < rc->n_samples; i++)
        if (now_ms - rc->samples[i].at_ms >= wait_ms && rc->samples[i].position > then)
            then = rc->samples[i].position;
    if (rc->n_samples > 0 && now_ms - rc->samples[last].at_ms < wait_ms / (SAMPLES / 2))
        return then;
    rc->samples[rc->next_sample] = (sample_t){now_ms, safe};
    rc->next_sample = (rc->next_sample + 1) % SAMPLES;
    if (rc->n_samples < SAMPLES)
        rc->n_samples++;
    return then;
}

/* Publishes the event at @p position again, with a Nats-Msg-Id of its own
 * (JetStream would drop a copy of a message it still knows within its
 * duplicate window: that message may be the very one that went astray),
 * and waits for JetStream's acknowledgement. */
static ordo_status redrive(ordo_pg_t *pg, ordo_bus_t *bus, int64_t position, ordo_error_t *err)
{
    char pos[24];
    const char *params[1] = {pos};
    PGresult *res = NULL;
    Eventstore__Event ev = EVENTSTORE__EVENT__INIT;
    natsMsg *msg = NULL;
    jsPubOptions po;
    jsErrCode jerr = 0;
    natsStatus s;
    ordo_status st;

    snprintf(pos, sizeof pos, "%lld", (long long)position);
    st = ordo_pg_query_idempotent(pg, "SELECT " ES_EVENT_COLUMNS " FROM events e WHERE e.position = $1::int8", 1, params,
                                  &res, err);
    if (st != ORDO_OK || PQntuples(res) != 1) {
        PQclear(res);
        return st != ORDO_OK ? st : ordo_error_set(err, ORDO_NOT_FOUND, "no event at position %s", pos);
    }
    es_event_from_row(&ev, res, 0);
    s = ordo_envelope_encode(&ev, &msg);
    if (s == NATS_OK)
        s = ordo_envelope_fresh_id(msg, "redrive");
    es_event_free_metadata(&ev);
    PQclear(res);
    if (s == NATS_OK) {
        jsPubOptions_Init(&po);
        po.MaxWait = REDRIVE_WAIT_MS;
        s = js_PublishMsg(NULL, ordo_bus_js(bus), msg, &po, &jerr);
    }
    natsMsg_Destroy(msg);
    return ordo_status_of_nats(s, jerr, "cannot publish the re-driven event", err);
}

static void watch(es_reconciler_t *rc, const char *aggregate_id, int64_t position, int redrives, int64_t now_ms)
{
    watched_t *w;
    if (rc->n_watch == WATCH_MAX) {   /* full: the oldest entry makes room (logged) */
        ORDO_WARN("reconciler: too many re-driven orders to follow; forgetting the oldest", "aggregate_id=%s",
                  rc->watch[0].aggregate_id);
        memmove(&rc->watch[0], &rc->watch[1], (WATCH_MAX - 1) * sizeof *rc->watch);
        rc->n_watch--;
    }
    w = &rc->watch[rc->n_watch++];
    snprintf(w->aggregate_id, sizeof w->aggregate_id, "%s", aggregate_id);
    w->position = position;
    w->redrives = redrives;
    w->due_ms = now_ms + (int64_t)rc->cfg->reconcile_after_s * 1000 * (2 << redrives);
}

/* The stuck heads among positions (lo, hi]: streams of the reconciled type
 * whose last event is there and not final. */
static const char STUCK_SQL[] =
    "SELECT e.position, e.aggregate_id, e.event_type, "
    "       (extract(epoch FROM clock_timestamp() - e.created_at))::int8 "
    "FROM events e JOIN streams s ON s.aggregate_id = e.aggregate_id AND s.version = e.version "
    "WHERE e.position > $1::int8 AND e.position <= $2::int8 AND e.aggregate_type = $3 "
    "  AND NOT (e.event_type = ANY($4::text[])) "
    "ORDER BY e.position";

/* One chunk of the walk: re-drives what is stuck in (lo, hi]. */
static ordo_status walk_chunk(es_reconciler_t *rc, ordo_pg_t *pg, ordo_bus_t *bus, int64_t lo, int64_t hi, int64_t now_ms, int *found,
                              ordo_error_t *err)
{
    char l[24], h[24];
    const char *params[4] = {l, h, rc->cfg->reconcile_type, rc->finals};
    PGresult *res = NULL;
    ordo_status st;

    snprintf(l, sizeof l, "%lld", (long long)lo);
    snprintf(h, sizeof h, "%lld", (long long)hi);
    if ((st = ordo_pg_query_idempotent(pg, STUCK_SQL, 4, params, &res, err)) != ORDO_OK)
        return st;
    for (int i = 0; i < PQntuples(res) && st == ORDO_OK; i++) {
        int64_t position = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        if ((st = redrive(pg, bus, position, err)) != ORDO_OK)
            break;
        ORDO_WARN("reconciler: re-driving a stuck order", "aggregate_id=%s last_event=%s position=%lld age_s=%s",
                  PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), (long long)position, PQgetvalue(res, i, 3));
        watch(rc, PQgetvalue(res, i, 1), position, 0, now_ms);
        (*found)++;
    }
    PQclear(res);
    return st;
}

/* Whether @p w's stream is still where it was re-driven (its head the same
 * non-final event); ORDO_NOT_FOUND when it moved on. */
static ordo_status still_stuck(es_reconciler_t *rc, ordo_pg_t *pg, const watched_t *w, ordo_error_t *err)
{
    char l[24], h[24];
    const char *params[4] = {l, h, rc->cfg->reconcile_type, rc->finals};
    PGresult *res = NULL;
    ordo_status st;

    snprintf(l, sizeof l, "%lld", (long long)w->position - 1);
    snprintf(h, sizeof h, "%lld", (long long)w->position);
    if ((st = ordo_pg_query_idempotent(pg, STUCK_SQL, 4, params, &res, err)) == ORDO_OK && PQntuples(res) == 0)
        st = ORDO_NOT_FOUND;
    PQclear(res);
    return st;
}

/* Looks again at the re-driven streams that are due. */
static ordo_status check_watched(es_reconciler_t *rc, ordo_pg_t *pg, ordo_bus_t *bus, int64_t now_ms, int *found, ordo_error_t *err)
{
    int kept = 0;
    ordo_status st = ORDO_OK;

    for (int i = 0; i < rc->n_watch; i++) {
        watched_t w = rc->watch[i];
        if (st != ORDO_OK || w.due_ms > now_ms) {
            rc->watch[kept++] = w;
            continue;
        }
        if ((st = still_stuck(rc, pg, &w, err)) == ORDO_NOT_FOUND) {
            st = ORDO_OK;   /* it moved on: done */
            continue;
        }
        if (st != ORDO_OK) {
            rc->watch[kept++] = w;
            continue;
        }
        if (w.redrives + 1 >= REDRIVES) {
            ORDO_ERROR("reconciler: an order stays stuck after re-driving it; it needs a hand",
                       "aggregate_id=%s position=%lld redrives=%d hint=\"ordoctl parked list; ordoctl get --aggregate-id\"",
                       w.aggregate_id, (long long)w.position, w.redrives + 1);
            atomic_fetch_add(&rc->stats->stuck, 1);
            continue;
        }
        if ((st = redrive(pg, bus, w.position, err)) != ORDO_OK) {
            rc->watch[kept++] = w;
            continue;
        }
        ORDO_WARN("reconciler: re-driving a stuck order again", "aggregate_id=%s position=%lld redrives=%d",
                  w.aggregate_id, (long long)w.position, w.redrives + 2);
        w.redrives++;
        w.due_ms = now_ms + (int64_t)rc->cfg->reconcile_after_s * 1000 * (2 << w.redrives);
        rc->watch[kept++] = w;
        (*found)++;
    }
    rc->n_watch = kept;
    return st;
}

int es_reconciler_round(es_reconciler_t *rc, es_stats_t *stats, ordo_pg_t *pg, ordo_bus_t *bus, int64_t safe_position)
{
    int64_t now_ms = ordo_mono_ms(), hi;
    int found = 0;
    ordo_error_t err;
    ordo_status st = ORDO_OK;

    if (rc == NULL || rc->cfg->reconcile_after_s <= 0 || now_ms < rc->next_ms)
        return 0;
    rc->next_ms = now_ms + (int64_t)rc->cfg->reconcile_every_ms;
    rc->stats = stats;
    hi = position_then(rc, now_ms, safe_position);
    for (int k = 0; k < CHUNKS_PER_ROUND && rc->cursor < hi && st == ORDO_OK; k++) {
        int64_t upto = rc->cursor + CHUNK < hi ? rc->cursor + CHUNK : hi;
        if ((st = walk_chunk(rc, pg, bus, rc->cursor, upto, now_ms, &found, &err)) == ORDO_OK)
            rc->cursor = upto;
    }
    if (st == ORDO_OK)
        st = check_watched(rc, pg, bus, now_ms, &found, &err);
    if (st != ORDO_OK)
        ORDO_WARN("reconciler cannot look at the log now", "err=\"%s\"", err.msg);
    if (found > 0)
        atomic_fetch_add(&stats->redriven, found);
    if (rc->cursor < hi)
        rc->next_ms = now_ms;   /* catching up: go on at the next turn */
    return found;
}
