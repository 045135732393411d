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
 * start once per process, then only what is new. Each re-drive is recorded
 * in the table redrives (sql/006) before it goes out, so that a restart or
 * a new leader neither repeats nor forgets it: the walk passes over heads
 * already re-driven, and the table says which are due to be looked at
 * again (after 2x, 4x the wait). A head is re-driven at most REDRIVES
 * times in all, then logged once as needing a hand (with what ordoctl
 * shows: its parked messages).
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
    DUE_PER_ROUND = 256, /* re-driven heads looked at again in one round */
    REDRIVES = 3,        /* re-drives of one head before it is left to an operator */
    REDRIVE_WAIT_MS = 5000,
};

typedef struct sample {
    int64_t at_ms, position;
} sample_t;

struct es_reconciler {
    const es_config_t *cfg;
    es_stats_t *stats;
    char finals[512];    /* {a,b,c}: the final event types as a PostgreSQL array */
    int64_t cursor;      /* positions at or below are looked at */
    int64_t next_ms;
    sample_t samples[SAMPLES];
    int n_samples, next_sample;
};

/* "{a,b,c}" from "a,b,c" (the names are checked at start: no braces or quotes). */
static void pg_array(const char *list, char *out, size_t cap)
{
    snprintf(out, cap, "{%s}", list);
}

es_reconciler_t *es_reconciler_create(const es_config_t *cfg)
{
    es_reconciler_t *rc = calloc(1, sizeof *rc);
    if (rc == NULL)
        return NULL;
    rc->cfg = cfg;
    pg_array(cfg->reconcile_final, rc->finals, sizeof rc->finals);
    return rc;
}

void es_reconciler_destroy(es_reconciler_t *rc)
{
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
ordo_status es_publish_fresh(ordo_pg_t *pg, ordo_bus_t *bus, int64_t position, ordo_error_t *err)
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
        s = ordo_envelope_fresh_id(msg, "fresh");
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

/* Records one more re-drive of the head (@p aggregate_id at @p position):
 * the first for a head not seen before, the next for the one recorded.
 * *@p n is the re-drive's number; 0 when the head had its REDRIVES already. */
static ordo_status claim(ordo_pg_t *pg, const char *aggregate_id, const char *position, int *n, ordo_error_t *err)
{
    static const char sql[] =
        "INSERT INTO redrives AS r (aggregate_id, position, redrives, last_at) VALUES ($1, $2::int8, 1, now()) "
        "ON CONFLICT (aggregate_id) DO UPDATE SET "
        "  redrives = CASE WHEN r.position = excluded.position THEN r.redrives + 1 ELSE 1 END, "
        "  position = excluded.position, last_at = now() "
        "WHERE r.position <> excluded.position OR r.redrives < $3::int4 "
        "RETURNING redrives";
    char max[12];
    const char *params[3] = {aggregate_id, position, max};
    PGresult *res = NULL;
    ordo_status st;

    snprintf(max, sizeof max, "%d", REDRIVES);
    st = ordo_pg_query_idempotent(pg, sql, 3, params, &res, err);
    *n = st == ORDO_OK && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return st;
}

/* A statement about one head's record: (aggregate_id, position). */
static ordo_status on_record(ordo_pg_t *pg, const char *sql, const char *aggregate_id, const char *position,
                             ordo_error_t *err)
{
    const char *params[2] = {aggregate_id, position};
    return ordo_pg_query_idempotent(pg, sql, 2, params, NULL, err);
}

/* Re-drives the head (recorded first; a publish that fails gives the
 * re-drive back: a bus that is down is waited out, not counted). */
static ordo_status redrive_head(ordo_pg_t *pg, ordo_bus_t *bus, const char *aggregate_id, const char *position,
                                const char *what, int *found, ordo_error_t *err)
{
    int n;
    ordo_status st = claim(pg, aggregate_id, position, &n, err);

    if (st != ORDO_OK || n == 0)
        return st;
    if ((st = es_publish_fresh(pg, bus, strtoll(position, NULL, 10), err)) != ORDO_OK) {
        ordo_error_t ignored;
        on_record(pg, "UPDATE redrives SET redrives = redrives - 1 WHERE aggregate_id = $1 AND position = $2::int8",
                  aggregate_id, position, &ignored);
        return st;
    }
    if (n == 1)
        ORDO_WARN("reconciler: re-driving a stuck order", "aggregate_id=%s position=%s %s", aggregate_id, position,
                  what);
    else
        ORDO_WARN("reconciler: re-driving a stuck order again", "aggregate_id=%s position=%s redrives=%d",
                  aggregate_id, position, n);
    (*found)++;
    return ORDO_OK;
}

/* The stuck heads among positions (lo, hi]: streams of the reconciled type
 * whose last event is there and not final. */
#define STUCK_SQL                                                                                  \
    "SELECT e.position, e.aggregate_id, e.event_type, "                                            \
    "       (extract(epoch FROM clock_timestamp() - e.created_at))::int8 "                         \
    "FROM events e JOIN streams s ON s.aggregate_id = e.aggregate_id AND s.version = e.version "   \
    "WHERE e.position > $1::int8 AND e.position <= $2::int8 AND e.aggregate_type = $3 "            \
    "  AND NOT (e.event_type = ANY($4::text[])) "

/* One chunk of the walk: re-drives what is stuck in (lo, hi] and was never
 * re-driven at that head (those the table follows). */
static ordo_status walk_chunk(es_reconciler_t *rc, ordo_pg_t *pg, ordo_bus_t *bus, int64_t lo, int64_t hi,
                              int *found, ordo_error_t *err)
{
    static const char sql[] = STUCK_SQL
        "  AND NOT EXISTS (SELECT 1 FROM redrives r WHERE r.aggregate_id = e.aggregate_id AND r.position = e.position) "
        "ORDER BY e.position";
    char l[24], h[24], what[160];
    const char *params[4] = {l, h, rc->cfg->reconcile_type, rc->finals};
    PGresult *res = NULL;
    ordo_status st;

    snprintf(l, sizeof l, "%lld", (long long)lo);
    snprintf(h, sizeof h, "%lld", (long long)hi);
    if ((st = ordo_pg_query_idempotent(pg, sql, 4, params, &res, err)) != ORDO_OK)
        return st;
    for (int i = 0; i < PQntuples(res) && st == ORDO_OK; i++) {
        snprintf(what, sizeof what, "last_event=%s age_s=%s", PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
        st = redrive_head(pg, bus, PQgetvalue(res, i, 1), PQgetvalue(res, i, 0), what, found, err);
    }
    PQclear(res);
    return st;
}

/* Whether the recorded head is still the stream's head and not final;
 * ORDO_NOT_FOUND when it moved on. */
static ordo_status still_stuck(es_reconciler_t *rc, ordo_pg_t *pg, const char *position, ordo_error_t *err)
{
    static const char sql[] = STUCK_SQL;
    char l[24];
    const char *params[4] = {l, position, rc->cfg->reconcile_type, rc->finals};
    PGresult *res = NULL;
    ordo_status st;

    snprintf(l, sizeof l, "%lld", strtoll(position, NULL, 10) - 1);
    if ((st = ordo_pg_query_idempotent(pg, sql, 4, params, &res, err)) == ORDO_OK && PQntuples(res) == 0)
        st = ORDO_NOT_FOUND;
    PQclear(res);
    return st;
}

/* Looks again at the recorded heads that are due: those re-driven n times
 * --reconcile-after-s x 2^n ago, and those given up on an hour ago (to
 * forget them once an operator moved them on). */
static ordo_status check_due(es_reconciler_t *rc, ordo_pg_t *pg, ordo_bus_t *bus, int *found, ordo_error_t *err)
{
    static const char sql[] =
        "SELECT aggregate_id, position, redrives FROM redrives "
        "WHERE (redrives <= $2::int4 AND last_at + ($1::int8 * (2 << redrives)) * interval '1 second' <= now()) "
        "   OR (redrives > $2::int4 AND last_at + interval '1 hour' <= now()) "
        "ORDER BY last_at LIMIT $3::int8";
    char wait[24], max[12], limit[12];
    const char *params[3] = {wait, max, limit};
    PGresult *res = NULL;
    ordo_status st;

    snprintf(wait, sizeof wait, "%d", rc->cfg->reconcile_after_s);
    snprintf(max, sizeof max, "%d", REDRIVES);
    snprintf(limit, sizeof limit, "%d", DUE_PER_ROUND);
    if ((st = ordo_pg_query_idempotent(pg, sql, 3, params, &res, err)) != ORDO_OK)
        return st;
    for (int i = 0; i < PQntuples(res) && st == ORDO_OK; i++) {
        const char *id = PQgetvalue(res, i, 0), *position = PQgetvalue(res, i, 1);
        int redrives = atoi(PQgetvalue(res, i, 2));

        if ((st = still_stuck(rc, pg, position, err)) == ORDO_NOT_FOUND) {   /* it moved on: done */
            st = on_record(pg, "DELETE FROM redrives WHERE aggregate_id = $1 AND position = $2::int8", id, position,
                           err);
        } else if (st == ORDO_OK && redrives > REDRIVES) {
            st = on_record(pg, "UPDATE redrives SET last_at = now() WHERE aggregate_id = $1 AND position = $2::int8",
                           id, position, err);
        } else if (st == ORDO_OK && redrives == REDRIVES) {
            ORDO_ERROR("reconciler: an order stays stuck after re-driving it; it needs a hand",
                       "aggregate_id=%s position=%s redrives=%d hint=\"ordoctl parked list; ordoctl get --aggregate-id\"",
                       id, position, redrives);
            atomic_fetch_add(&rc->stats->stuck, 1);
            st = on_record(pg,
                           "UPDATE redrives SET redrives = redrives + 1, last_at = now()"
                           " WHERE aggregate_id = $1 AND position = $2::int8",
                           id, position, err);
        } else if (st == ORDO_OK) {
            st = redrive_head(pg, bus, id, position, "", found, err);
        }
    }
    PQclear(res);
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
        if ((st = walk_chunk(rc, pg, bus, rc->cursor, upto, &found, &err)) == ORDO_OK)
            rc->cursor = upto;
    }
    if (st == ORDO_OK)
        st = check_due(rc, pg, bus, &found, &err);
    if (st != ORDO_OK)
        ORDO_WARN("reconciler cannot look at the log now", "err=\"%s\"", err.msg);
    if (found > 0)
        atomic_fetch_add(&stats->redriven, found);
    if (rc->cursor < hi)
        rc->next_ms = now_ms;   /* catching up: go on at the next turn */
    return found;
}
