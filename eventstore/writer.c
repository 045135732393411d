/*
 * The write path: CreateEvent calls queue here; writer threads take up to
 * group_commit_max of them at a time and append them in ONE transaction
 * (REPEATABLE READ; SERIALIZABLE on CockroachDB), still giving each call its
 * own result:
 *
 *   1+2. one statement looks up every event id (duplicates are answered
 *        from what is stored) and locks the stream heads (each call's
 *        expected version is then checked in queue order)
 *   3.   one INSERT statement writes stream heads, events and outbox rows
 *   4.   COMMIT, then answer every call
 *
 * When every call of a batch names its expected version and no two share an
 * aggregate (the order flow's appends), steps 1 and 2 are skipped: the
 * guarded insert creates or moves each stream head only from the version
 * its call expects and writes the events of the heads it created or moved,
 * with BEGIN and COMMIT in one round trip. A call it did not take (another
 * version, another aggregate type, a replay) goes to the next batch, which
 * reads first and answers it exactly as above. (Guarded inserts are checked
 * before positions are drawn: a refused call leaves no gap for readers.)
 *
 * A call that fails its own check never fails its neighbours; a statement
 * error that one call's data may have caused makes the batch run again one
 * call per transaction. Retries (40001/40P01, lost connection) repeat the
 * whole transaction; a COMMIT whose answer was lost is resolved by looking
 * the event ids up.
 *
 * What is decided about a batch apart from the database (heads, expected
 * versions, overlaps, whether the guarded insert can take it) is batch.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "es.h"
#include "ordo/buf.h"
#include "ordo/envelope.h"
#include "ordo/log.h"
#include "ordo/retry.h"

/* transactions a sign of concurrent callers is remembered for; the batch
 * size from which a lane no longer waits for more; transactions a lane reads
 * first after the guarded insert left a call */
enum { BUSY_MEMORY = 8, SMALL_BATCH = 4, GUARD_REST = 16 };

/* One writer thread and its queue. Calls are routed to a lane by their
 * aggregate, so two lanes never contend for the same stream head. */
typedef struct lane {
    es_writer_t *w;
    ordo_pg_t *pg;    /* the writer thread's */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    es_append_t *head, *tail;
    bool stopping, started;
    pthread_t thread;
    int busy;   /* (mu) > 0 when calls arrived during one of the lane's last BUSY_MEMORY transactions */
    int guard_rest;   /* (writer thread) > 0: the guarded insert left calls lately; read first */
} lane_t;

struct es_writer {
    es_ctx_t *ctx;
    lane_t *lanes;
    int n_lanes;
    /* calls and their bytes admitted and not yet answered, across the lanes:
     * bounded by --write-queue-calls and --write-queue-bytes */
    atomic_llong admitted_calls, admitted_bytes;
    char session[160];   /* the lanes' connections' setup (es_writer_session_sql) */
};

/* The insert's thirteen arrays, for what is done to each alike. */
enum { N_INSERT_ARRAYS = 13 };
static void insert_arrays(es_arrays_t *x, ordo_buf_t *out[N_INSERT_ARRAYS])
{
    ordo_buf_t *all[N_INSERT_ARRAYS] = {&x->head_agg,   &x->head_type, &x->head_version, &x->head_expected,
                                        &x->head_ids,   &x->ev_id,     &x->ev_agg,       &x->ev_type,
                                        &x->ev_version, &x->ev_event_type, &x->ev_data,  &x->ev_meta,
                                        &x->ev_stream};
    memcpy(out, all, sizeof all);
}

static void arrays_free(es_arrays_t *x)
{
    ordo_buf_t *insert[N_INSERT_ARRAYS];
    insert_arrays(x, insert);
    for (int i = 0; i < N_INSERT_ARRAYS; i++)
        ordo_buf_free(insert[i]);
    ordo_buf_free(&x->lookup_ids);
    ordo_buf_free(&x->lookup_aggs);
}

const ordo_retry_policy_t es_retry_policy = {8, 2, 250};

/* The writer's statements take arrays, and PostgreSQL plans a prepared
 * statement anew for every execution while a plan for the arrays' actual
 * lengths looks cheaper than one for any length: ~30% of the writer's
 * backend went to planning the guarded insert. So it plans each once. A
 * plan made once must not depend on the tables' sizes then (made on an empty
 * store, it scanned events whole for every lookup as they grew: 4,926
 * instead of 10-13k events/s): every statement of the writer looks rows up
 * by key, so it is told to use the indexes. (CockroachDB before 23.2 does
 * not know plan_cache_mode and keeps its own planning.) */
static const char WRITER_PLANS_SQL[] = "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off";

void es_writer_session_sql(const es_config_t *cfg, char *out, size_t cap)
{
    snprintf(out, cap, "SET statement_timeout = %d; SET idle_in_transaction_session_timeout = %d",
             cfg->statement_timeout_ms, cfg->statement_timeout_ms);
}

/* Marks every call that holds the stored event of row @p r (kind, event_id, aggregate_id, version, position). */
static void match_stored(es_batch_t *b, const PGresult *res, int r, size_t *matched)
{
    const char *id = PQgetvalue(res, r, 1), *stored_aggregate = PQgetvalue(res, r, 2);

    for (size_t i = 0; i < b->n; i++) {
        es_append_t *a = b->items[i];
        for (size_t k = 0; k < a->n; k++) {
            if (strcmp(a->ids[k], id) != 0)
                continue;
            matched[i]++;
            if (strcmp(stored_aggregate, a->events[k]->aggregate_id) != 0)
                es_append_set_result(a, ORDO_INVALID,
                                     "event_id %s is already stored for another aggregate (%.100s)", id,
                                     stored_aggregate);
            else if (k == a->n - 1) {
                a->version = strtoll(PQgetvalue(res, r, 3), NULL, 10);
                a->position = strtoll(PQgetvalue(res, r, 4), NULL, 10);
            }
        }
    }
}

/* Row @p r is a locked head (kind, aggregate_type, aggregate_id, version). */
static void fill_head(es_batch_t *b, const PGresult *res, int r)
{
    es_head_t *h = es_batch_find_head(b, PQgetvalue(res, r, 2));
    if (h == NULL)
        return;
    snprintf(h->stored_type, sizeof h->stored_type, "%s", PQgetvalue(res, r, 1));
    h->aggregate_type = h->stored_type;
    h->version = strtoll(PQgetvalue(res, r, 3), NULL, 10);
    h->exists = true;
}

/* Steps 1 and 2 in one statement: which event ids are stored already, and
 * the stream heads of the batch's aggregates, locked (in a stable order). */
static ordo_status read_and_lock(ordo_pg_tx_t *tx, es_batch_t *b, ordo_error_t *err)
{
    ordo_buf_t *ids = &b->x.lookup_ids, *aggs = &b->x.lookup_aggs;
    const char *params[2];
    PGresult *res;
    ordo_status st;
    size_t *matched = calloc(b->n, sizeof *matched);

    if (matched == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    ordo_buf_pg_array_begin(ids);
    for (size_t i = 0; i < b->n; i++)
        for (size_t k = 0; k < b->items[i]->n; k++)
            ordo_buf_pg_array_text(ids, b->items[i]->ids[k]);
    ordo_buf_pg_array_end(ids);
    es_batch_collect_heads(b, aggs);
    params[0] = ordo_buf_str(ids);
    params[1] = ordo_buf_str(aggs);
    st = ordo_pg_tx_query(tx, NULL,
                          "WITH heads AS (SELECT aggregate_id, aggregate_type, version FROM streams"
                          "  WHERE aggregate_id = ANY($2::text[]) ORDER BY aggregate_id FOR UPDATE) "
                          "SELECT 'e', event_id::text, aggregate_id, version, position FROM events"
                          " WHERE event_id = ANY($1::uuid[]) "
                          "UNION ALL SELECT 'h', aggregate_type, aggregate_id, version, 0 FROM heads",
                          2, params, &res, err);
    if (st != ORDO_OK) {
        free(matched);
        return st;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        if (PQgetvalue(res, r, 0)[0] == 'h')
            fill_head(b, res, r);
        else
            match_stored(b, res, r, matched);
    }
    PQclear(res);
    for (size_t i = 0; i < b->n; i++) {
        es_append_t *a = b->items[i];
        if (a->st != ORDO_OK || matched[i] == 0)
            continue;
        if (matched[i] == a->n)
            a->duplicate = true;
        else
            es_append_set_result(a, ORDO_CONFLICT,
                                 "%zu of the %zu event ids are already stored: a request is replayed whole or not at all",
                                 matched[i], a->n);
    }
    free(matched);
    return ORDO_OK;
}

/* Events ($4..$11: id, aggregate, type, version, event type, data,
 * metadata, stream) in the given order, as far as @p filter (a WHERE clause
 * on u) lets them, with their outbox rows; answers each row's position,
 * event id, created_at (µs) and data as stored, in position order. */
#define INSERT_EVENTS_SQL(filter)                                                                  \
    "ins AS ("                                                                                     \
    "  INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type,"          \
    "                      event_data, metadata, stream)"                                          \
    "  SELECT u.id, u.agg, u.atype, u.ver, u.etype, u.data::jsonb, u.meta::jsonb, u.stream"       \
    "  FROM unnest($4::uuid[], $5::text[], $6::text[], $7::int8[], $8::text[],"                   \
    "              $9::text[], $10::text[], $11::text[])"                                          \
    "       WITH ORDINALITY AS u(id, agg, atype, ver, etype, data, meta, stream, ord)"            \
    filter "  ORDER BY u.ord"                                                                      \
    "  RETURNING position, event_id, (extract(epoch FROM created_at) * 1000000)::int8 AS created_us," \
    "            event_data::text AS stored"                                                       \
    "), ob AS ("                                                                                   \
    "  INSERT INTO outbox (position) SELECT position FROM ins"                                     \
    ") "                                                                                           \
    "SELECT position, event_id::text, created_us, stored FROM ins ORDER BY position"

/* Takes @p a's rows of an insert's answer (position, event id, created_at,
 * data as stored), from *@p row on: they come in the order its events were
 * given. */
static ordo_status take_call_rows(es_append_t *a, PGresult *res, int *row, ordo_error_t *err)
{
    for (size_t k = 0; k < a->n; k++, (*row)++) {
        if (*row >= PQntuples(res) || strcmp(PQgetvalue(res, *row, 1), a->ids[k]) != 0)
            return ordo_error_set(err, ORDO_INTERNAL, "insert returned rows out of order");
        a->positions[k] = strtoll(PQgetvalue(res, *row, 0), NULL, 10);
        a->created[k] = strtoll(PQgetvalue(res, *row, 2), NULL, 10);
        free(a->stored[k]);   /* from an attempt that was rolled back */
        a->stored[k] = strdup(PQgetvalue(res, *row, 3));
    }
    a->position = a->positions[a->n - 1];
    return ORDO_OK;
}

/* The guarded insert: three statements in one round trip, each changing one
 * table's rows (CockroachDB refuses two changes of one table in a
 * statement). Heads given as ($1 aggregate, $2 type, $3 new version, $4
 * expected version, $5 its call's event ids as an array literal): those
 * expected at 0 are created unless they exist, the others move only from
 * their expected version and type, and neither when one of the call's event
 * ids is stored already (a replay, or a reuse: its insert would fail the
 * whole transaction after drawing positions, a gap the readers wait out). */
static const char *const CREATE_HEADS_SQL =
    "INSERT INTO streams (aggregate_id, aggregate_type, version)"
    " SELECT agg, atype, ver"
    " FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[]) AS g(agg, atype, ver, expected, ids)"
    " WHERE expected = 0 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY(g.ids::uuid[]))"
    " ON CONFLICT (aggregate_id) DO NOTHING";

static const char *const MOVE_HEADS_SQL =
    "UPDATE streams s SET version = g.ver"
    " FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[]) AS g(agg, atype, ver, expected, ids)"
    " WHERE g.expected > 0 AND s.aggregate_id = g.agg AND s.version = g.expected AND s.aggregate_type = g.atype"
    " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY(g.ids::uuid[]))";

/* Then INSERT_SQL's events, of the heads the two statements created or
 * moved: now at their new version, and without an event of that version
 * yet (a head that was there already has it, and is left alone). */
static const char *const GUARDED_EVENTS_SQL =
    "WITH " INSERT_EVENTS_SQL(
        "  WHERE u.agg IN (SELECT h.agg FROM unnest($1::text[], $2::text[], $3::int8[]) AS h(agg, atype, ver)"
        "                  JOIN streams s ON s.aggregate_id = h.agg AND s.version = h.ver AND s.aggregate_type = h.atype"
        "                  WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.aggregate_id = h.agg AND e.version = h.ver))");

/* Matches the guarded insert's rows (in item order) to the calls; a call
 * whose events it did not write waits for the next batch, which reads first. */
static ordo_status take_guarded_rows(es_batch_t *b, PGresult *res, ordo_error_t *err)
{
    int row = 0;
    ordo_status st;

    for (size_t i = 0; i < b->n; i++) {
        es_append_t *a = b->items[i];
        if (row >= PQntuples(res) || strcmp(PQgetvalue(res, row, 1), a->ids[0]) != 0)
            a->deferred = a->lookup = b->missed = true;
        else if ((st = take_call_rows(a, res, &row, err)) != ORDO_OK)
            return st;
    }
    return row == PQntuples(res) ? ORDO_OK : ordo_error_set(err, ORDO_INTERNAL, "insert returned rows of no call");
}

/* @p a's event ids as an array literal, in @p out (reset first). */
static void ids_literal(ordo_buf_t *out, const es_append_t *a)
{
    ordo_buf_reset(out);
    ordo_buf_pg_array_begin(out);
    for (size_t k = 0; k < a->n; k++)
        ordo_buf_pg_array_text(out, a->ids[k]);
    ordo_buf_pg_array_end(out);
}

/* $1..$11 of the events statements: the heads' three arrays, then the events' eight. */
enum { EVENTS_PARAMS = 11, HEADS_PARAMS = 5 };
static void events_params(const es_arrays_t *x, const char *p[EVENTS_PARAMS])
{
    const char *v[EVENTS_PARAMS] = {ordo_buf_str(&x->head_agg),  ordo_buf_str(&x->head_type),
                                    ordo_buf_str(&x->head_version), ordo_buf_str(&x->ev_id),
                                    ordo_buf_str(&x->ev_agg),    ordo_buf_str(&x->ev_type),
                                    ordo_buf_str(&x->ev_version), ordo_buf_str(&x->ev_event_type),
                                    ordo_buf_str(&x->ev_data),   ordo_buf_str(&x->ev_meta),
                                    ordo_buf_str(&x->ev_stream)};
    memcpy(p, v, sizeof v);
}

/* $1..$5 of the guarded heads statements. */
static void heads_params(const es_arrays_t *x, const char *p[HEADS_PARAMS])
{
    const char *v[HEADS_PARAMS] = {ordo_buf_str(&x->head_agg), ordo_buf_str(&x->head_type),
                                   ordo_buf_str(&x->head_version), ordo_buf_str(&x->head_expected),
                                   ordo_buf_str(&x->head_ids)};
    memcpy(p, v, sizeof v);
}

/* The guarded insert's three statements, with the batch's BEGIN and
 * COMMIT, in one round trip. */
static ordo_status insert_guarded(ordo_pg_tx_t *tx, es_batch_t *b, ordo_error_t *err)
{
    const char *heads[HEADS_PARAMS], *events[EVENTS_PARAMS];
    ordo_pg_stmt_t stmts[3] = {{"es_heads_create", CREATE_HEADS_SQL, HEADS_PARAMS, heads, NULL},
                               {"es_heads_move", MOVE_HEADS_SQL, HEADS_PARAMS, heads, NULL},
                               {"es_insert_guarded", GUARDED_EVENTS_SQL, EVENTS_PARAMS, events, NULL}};
    ordo_status st;

    heads_params(&b->x, heads);
    events_params(&b->x, events);
    st = ordo_pg_tx_run_and_commit(tx, stmts, 3, err);
    if (st == ORDO_CONFLICT) {   /* a partial replay, or a concurrent writer elsewhere */
        b->lookup = b->missed = true;
        return ORDO_RETRY;
    }
    if (st != ORDO_OK)
        return st;
    st = take_guarded_rows(b, stmts[2].result, err);
    for (int i = 0; i < 3; i++)
        PQclear(stmts[i].result);
    return st;
}

/* Stream heads ($1 aggregate, $2 type, $3 new version) written as given. */
static const char *const INSERT_SQL =
    "WITH heads AS ("
    "  INSERT INTO streams (aggregate_id, aggregate_type, version)"
    "  SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])"
    "  ON CONFLICT (aggregate_id) DO UPDATE SET version = excluded.version"
    "  RETURNING 1"
    "), " INSERT_EVENTS_SQL("");

/* INSERT_SQL with the batch's BEGIN (unless the lookup took it) and COMMIT. */
static ordo_status insert_plain(ordo_pg_tx_t *tx, es_batch_t *b, ordo_error_t *err)
{
    const char *events[EVENTS_PARAMS];
    ordo_pg_stmt_t stmt = {"es_insert", INSERT_SQL, EVENTS_PARAMS, events, NULL};
    ordo_status st;
    int row = 0;

    events_params(&b->x, events);
    st = ordo_pg_tx_run_and_commit(tx, &stmt, 1, err);
    if (st == ORDO_CONFLICT)     /* the same event id or version committed meanwhile elsewhere */
        return ORDO_RETRY;
    if (st != ORDO_OK)
        return st;
    /* Rows come back in position order, which is the order they were given in. */
    for (size_t i = 0; i < b->n && st == ORDO_OK; i++)
        if (es_batch_live(b->items[i]))
            st = take_call_rows(b->items[i], stmt.result, &row, err);
    PQclear(stmt.result);
    return st;
}

/* The arrays of the heads the batch writes (@p guarded: with the version
 * each moves from and its call's event ids) and of the live calls' events. */
static ordo_status fill_arrays(es_batch_t *b, bool guarded, ordo_error_t *err)
{
    es_arrays_t *x = &b->x;
    ordo_buf_t *all[N_INSERT_ARRAYS], ids = ORDO_BUF_INIT;

    insert_arrays(x, all);
    for (int i = 0; i < N_INSERT_ARRAYS; i++)
        ordo_buf_pg_array_begin(all[i]);
    for (size_t i = 0; i < b->n_heads; i++) {
        const es_head_t *h = &b->heads[i];
        if (!h->touched)
            continue;
        ordo_buf_pg_array_text(&x->head_agg, h->aggregate_id);
        ordo_buf_pg_array_text(&x->head_type, h->aggregate_type);
        ordo_buf_pg_array_int(&x->head_version, h->version);
        if (guarded) {
            ordo_buf_pg_array_int(&x->head_expected, h->expected);
            ids_literal(&ids, h->call);
            ordo_buf_pg_array_text(&x->head_ids, ordo_buf_str(&ids));
        }
    }
    for (size_t i = 0; i < b->n; i++) {
        const es_append_t *a = b->items[i];
        for (size_t k = 0; es_batch_live(a) && k < a->n; k++) {
            const Eventstore__Event *ev = a->events[k];
            ordo_buf_pg_array_text(&x->ev_id, a->ids[k]);
            ordo_buf_pg_array_text(&x->ev_agg, ev->aggregate_id);
            ordo_buf_pg_array_text(&x->ev_type, ev->aggregate_type);
            ordo_buf_pg_array_int(&x->ev_version, a->version - (int64_t)a->n + 1 + (int64_t)k);
            ordo_buf_pg_array_text(&x->ev_event_type, ev->event_type);
            ordo_buf_pg_array_text(&x->ev_data, ev->event_data);
            ordo_buf_pg_array_text(&x->ev_meta, a->metadata[k]);
            ordo_buf_pg_array_text(&x->ev_stream, ev->stream);
        }
    }
    ordo_buf_free(&ids);
    for (int i = 0; i < N_INSERT_ARRAYS; i++) {
        ordo_buf_pg_array_end(all[i]);
        if (ordo_buf_failed(all[i]))
            return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory building the insert");
    }
    return ORDO_OK;
}

/* Step 3: one statement writes stream heads, events and outbox rows
 * (@p guarded: the guarded insert, of the heads guess_heads made). It is
 * the transaction's last: its COMMIT goes out with it (once it returns, the
 * rows are committed: what follows only reads its answer). */
static ordo_status insert_events(ordo_pg_tx_t *tx, es_batch_t *b, bool guarded, ordo_error_t *err)
{
    ordo_status st = fill_arrays(b, guarded, err);
    if (st != ORDO_OK)
        return st;
    return guarded ? insert_guarded(tx, b, err) : insert_plain(tx, b, err);
}

static ordo_status batch_body(ordo_pg_tx_t *tx, void *arg, ordo_error_t *err)
{
    es_batch_t *b = arg;
    ordo_status st;

    es_batch_reset(b);
    if (es_batch_guess_heads(b))
        return insert_events(tx, b, true, err);
    if ((st = read_and_lock(tx, b, err)) != ORDO_OK)
        return st;
    es_batch_defer_overlaps(b);
    es_batch_check_versions(b);
    for (size_t i = 0; i < b->n; i++)
        if (es_batch_live(b->items[i]))
            return insert_events(tx, b, false, err);
    return ORDO_OK;
}

/* After a lost COMMIT answer: the first live event id tells whether it committed. */
static ordo_status batch_resolve(ordo_pg_t *pg, void *arg, ordo_error_t *err)
{
    es_batch_t *b = arg;
    const char *params[1];
    PGresult *res;
    ordo_status st;

    for (size_t i = 0; i < b->n; i++) {
        if (!es_batch_live(b->items[i]))
            continue;
        params[0] = b->items[i]->ids[0];
        st = ordo_pg_query(pg, "SELECT 1 FROM events WHERE event_id = $1::uuid", 1, params, &res, err);
        if (st != ORDO_OK)
            return st;
        st = PQntuples(res) == 1 ? ORDO_OK : ORDO_RETRY;
        PQclear(res);
        ORDO_WARN("commit outcome resolved by event id", "event_id=%s committed=%s",
                  b->items[i]->ids[0], st == ORDO_OK ? "yes" : "no");
        return st;
    }
    return ORDO_OK;
}

static void answer(es_writer_t *w, es_append_t *a)
{
    Eventstore__CreateEventResponse resp = EVENTSTORE__CREATE_EVENT_RESPONSE__INIT;
    es_stats_t *stats = &w->ctx->stats;

    ordo_metric_observe_us(stats->append_latency, ordo_mono_us() - a->queued_us);
    if (a->st == ORDO_OK) {
        resp.is_success = 1;
        resp.version = a->version;
        resp.position = a->position;
        resp.duplicate = a->duplicate;
        atomic_fetch_add(a->duplicate ? &stats->duplicates : &stats->appends, 1);
        ordo_grpc_call_finish(a->call, ORDO_OK, NULL, &resp.base);
    } else {
        if (a->st == ORDO_CONFLICT)
            atomic_fetch_add(&stats->conflicts, 1);
        ORDO_DEBUG("append refused", "status=%s err=\"%s\"", ordo_status_text(a->st), a->msg);
        ordo_grpc_call_finish(a->call, a->st, a->msg, NULL);
    }
    atomic_fetch_sub(&w->admitted_calls, 1);
    atomic_fetch_sub(&w->admitted_bytes, (long long)a->bytes);
    es_append_free(a);
}

static void requeue_front(lane_t *l, es_append_t *a)
{
    pthread_mutex_lock(&l->mu);
    a->next = l->head;
    l->head = a;
    if (l->tail == NULL)
        l->tail = a;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* The bus carries event_data as stored (JSONB text), the same bytes
 * GetEvents returns and the relay reads back from the outbox. Without that
 * text (out of memory) nothing is offered: the relay reads the outbox. */
static void offer_to_relay(es_relay_t *relay, const es_append_t *a)
{
    for (size_t k = 0; relay != NULL && k < a->n && a->stored[k] != NULL; k++) {
        Eventstore__Event ev = *a->events[k];
        ev.event_id = (char *)a->ids[k];
        ev.event_data = a->stored[k];
        ev.version = a->version - (int64_t)a->n + 1 + (int64_t)k;
        ev.position = a->positions[k];
        ev.created_at = a->created[k];
        es_relay_offer(relay, &ev);
    }
}

/* Hands the watermark the batch's committed positions (ascending: the rows
 * were inserted, and numbered, in item order). */
static void tell_watermark(es_writer_t *w, es_append_t **items, size_t n)
{
    size_t count = 0, k = 0;
    int64_t *positions;

    for (size_t i = 0; i < n; i++)
        count += es_batch_live(items[i]) ? items[i]->n : 0;
    if (count == 0)
        return;
    if ((positions = malloc(count * sizeof *positions)) == NULL) {
        for (size_t i = 0; i < n; i++)   /* no memory for one list: one call per append */
            if (es_batch_live(items[i]))
                es_watermark_committed(w->ctx->watermark, items[i]->positions, items[i]->n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t e = 0; es_batch_live(items[i]) && e < items[i]->n; e++)
            positions[k++] = items[i]->positions[e];
    es_watermark_committed(w->ctx->watermark, positions, count);
    free(positions);
}

/* Before any caller of the batch is answered (a caller's next call is not
 * a sign of others): did calls arrive while the transaction ran? */
static void note_arrivals(lane_t *l)
{
    pthread_mutex_lock(&l->mu);
    l->busy = l->head != NULL ? BUSY_MEMORY : l->busy > 0 ? l->busy - 1 : 0;
    pthread_mutex_unlock(&l->mu);
}

/* Answers the calls nobody waits for any more (deadline passed, or
 * cancelled) before their transaction begins, so that they are never
 * written: a caller told DEADLINE_EXCEEDED may safely try again. Returns
 * how many of @p items are left, in order. */
static size_t drop_expired(es_writer_t *w, es_append_t **items, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        es_append_t *a = items[i];
        if (!ordo_grpc_call_expired(a->call)) {
            items[kept++] = a;
            continue;
        }
        atomic_fetch_add(&w->ctx->stats.expired, 1);
        es_append_set_result(a, ORDO_TIMEOUT, "the deadline passed before the write began: nothing was written");
        answer(w, a);
    }
    if (kept < n)
        ORDO_WARN("calls expired waiting for the database: answered, not written", "calls=%zu", n - kept);
    return kept;
}

static void run_batch(lane_t *l, es_append_t **items, size_t n)
{
    es_writer_t *w = l->w;
    es_batch_t b = {.items = items, .n = n, .lookup = l->guard_rest > 0};
    ordo_pg_transaction_t tx = {.begin_sql = "BEGIN ISOLATION LEVEL REPEATABLE READ", .body = batch_body,
                                .resolve = batch_resolve, .arg = &b, .policy = es_retry_policy};
    ordo_error_t err;
    ordo_status st;
    int retries = 0;
    int64_t began = ordo_mono_us();

    b.heads = calloc(n, sizeof *b.heads);
    st = b.heads == NULL ? ordo_error_set(&err, ORDO_NO_MEMORY, "out of memory")
                         : ordo_pg_transact(l->pg, &tx, &retries, &err);
    ordo_metric_observe_us(w->ctx->stats.tx_latency, ordo_mono_us() - began);
    note_arrivals(l);
    /* Where expected versions are often stale (writers contending for a few
     * streams), a call the guarded insert leaves costs a second transaction:
     * the lane reads first for a while after one. */
    l->guard_rest = b.missed ? GUARD_REST : l->guard_rest > 0 ? l->guard_rest - 1 : 0;
    atomic_fetch_add(&w->ctx->stats.tx_retries, retries);
    arrays_free(&b.x);
    free(b.heads);

    if (st != ORDO_OK && n > 1 && st != ORDO_UNAVAILABLE && st != ORDO_TIMEOUT) {
        /* Maybe one call's data broke the statement: give each its own transaction. */
        ORDO_WARN("batch failed; retrying its calls one by one", "calls=%zu err=\"%s\"", n, err.msg);
        for (size_t i = 0; i < n; i++)
            run_batch(l, &items[i], 1);
        return;
    }
    if (st == ORDO_OK) {
        atomic_fetch_add(&w->ctx->stats.batches, 1);
        /* The relay gets the committed events before the watermark shows them. */
        for (size_t i = 0; i < n; i++)
            if (es_batch_live(items[i]))
                offer_to_relay(w->ctx->relay, items[i]);
        /* Readers (and the relay) learn of the commit before its callers do:
         * read-your-writes. */
        tell_watermark(w, items, n);
    } else {
        ORDO_WARN("append failed", "calls=%zu status=%s err=\"%s\"", n, ordo_status_text(st), err.msg);
    }
    for (size_t i = 0; i < n; i++) {
        es_append_t *a = items[i];
        if (st != ORDO_OK)
            es_append_set_result(a, st, "%s", err.msg);
        else if (a->deferred) {
            requeue_front(l, a);
            continue;
        }
        answer(w, a);
    }
}

/* Moves up to max - n queued calls into items; called with l->mu held. */
static size_t drain(lane_t *l, es_append_t **items, size_t n, size_t max)
{
    while (l->head != NULL && n < max) {
        items[n++] = l->head;
        l->head = l->head->next;
    }
    if (l->head == NULL)
        l->tail = NULL;
    return n;
}

/* Waits for work, then gathers a batch: what is queued, plus what arrives
 * within the group-commit window (bounded) while the batch is not full.
 * The window opens only for a small batch (under SMALL_BATCH calls: a
 * larger one already shares its transaction well, and at full load an idle
 * writer is lost throughput) and only when calls arrived while one of the
 * lane's last BUSY_MEMORY transactions ran: then more are likely on their
 * way and a transaction saved is worth a fraction of a millisecond, while a
 * lone client, whose next call cannot come before this one is answered, is
 * not kept waiting for nothing (PostgreSQL's commit_delay asks for
 * commit_siblings for the same reason). */
static size_t take(lane_t *l, es_append_t **items, size_t max, int wait_us)
{
    size_t n;
    pthread_mutex_lock(&l->mu);
    while (l->head == NULL && !l->stopping)
        pthread_cond_wait(&l->cv, &l->mu);
    n = drain(l, items, 0, max);
    if (n > 0 && n < max && n < SMALL_BATCH && wait_us > 0 && l->busy > 0 && !l->stopping) {
        struct timespec until = ordo_deadline_us(wait_us);
        while (n < max && !l->stopping && pthread_cond_timedwait(&l->cv, &l->mu, &until) == 0)
            n = drain(l, items, n, max);
        n = drain(l, items, n, max);
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

static void *writer_thread(void *arg)
{
    lane_t *l = arg;
    const es_config_t *cfg = l->w->ctx->cfg;
    size_t max = (size_t)cfg->group_commit_max, n;
    es_append_t **items = calloc(max, sizeof *items);
    ordo_error_t err;

    if (ordo_pg_ensure(l->pg, &err) != ORDO_OK)
        ORDO_WARN("writer cannot reach the database yet", "err=\"%s\"", err.msg);
    while (items != NULL && (n = take(l, items, max, cfg->group_commit_wait_us)) > 0)
        if ((n = drop_expired(l->w, items, n)) > 0)
            run_batch(l, items, n);
    free(items);
    return NULL;
}

ordo_status es_writer_create(es_ctx_t *ctx, es_writer_t **out, ordo_error_t *err)
{
    es_writer_t *w = calloc(1, sizeof *w);

    *out = NULL;
    if (w == NULL || (w->lanes = calloc((size_t)ctx->cfg->writers, sizeof *w->lanes)) == NULL) {
        free(w);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    w->ctx = ctx;
    w->n_lanes = ctx->cfg->writers;
    es_writer_session_sql(ctx->cfg, w->session, sizeof w->session);
    for (int i = 0; i < w->n_lanes; i++) {
        lane_t *l = &w->lanes[i];
        l->w = w;
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cv, NULL);
    }
    for (int i = 0; i < w->n_lanes; i++) {
        if (ordo_pg_create(ctx->cfg->database_url, "eventstore writer", w->session, &w->lanes[i].pg, err) != ORDO_OK) {
            es_writer_destroy(w);
            return ORDO_NO_MEMORY;
        }
        ordo_pg_set_optional(w->lanes[i].pg, WRITER_PLANS_SQL);
    }
    for (int i = 0; i < w->n_lanes; i++) {
        if (pthread_create(&w->lanes[i].thread, NULL, writer_thread, &w->lanes[i]) != 0) {
            es_writer_destroy(w);
            return ordo_error_set(err, ORDO_INTERNAL, "cannot start writer threads");
        }
        w->lanes[i].started = true;
        ordo_thread_name(w->lanes[i].thread, "es-writer", i);
    }
    *out = w;
    return ORDO_OK;
}

/* Admits @p a unless the calls admitted and not yet answered are at the
 * bound in calls or bytes; an empty queue admits any call (one larger than
 * the byte bound would otherwise never be taken). */
static bool admit(es_writer_t *w, const es_append_t *a)
{
    const es_config_t *cfg = w->ctx->cfg;
    long long calls = atomic_fetch_add(&w->admitted_calls, 1);
    long long bytes = atomic_fetch_add(&w->admitted_bytes, (long long)a->bytes);

    if (calls == 0 || (calls < cfg->write_queue_calls && bytes + (long long)a->bytes <= cfg->write_queue_bytes))
        return true;
    atomic_fetch_sub(&w->admitted_calls, 1);
    atomic_fetch_sub(&w->admitted_bytes, (long long)a->bytes);
    return false;
}

ordo_status es_writer_submit(es_writer_t *w, es_append_t *a, ordo_error_t *err)
{
    lane_t *l = &w->lanes[ordo_lane_of(a->events[0]->aggregate_id, w->n_lanes)];

    if (!admit(w, a)) {
        atomic_fetch_add(&w->ctx->stats.queue_full, 1);
        return ordo_error_set(err, ORDO_UNAVAILABLE,
                              "the write queue is full (%lld calls, %lld bytes waiting for the database): try again",
                              atomic_load(&w->admitted_calls), atomic_load(&w->admitted_bytes));
    }
    a->next = NULL;
    a->queued_us = ordo_mono_us();
    pthread_mutex_lock(&l->mu);
    if (l->tail != NULL)
        l->tail->next = a;
    else
        l->head = a;
    l->tail = a;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return ORDO_OK;
}

void es_writer_queued(es_writer_t *w, long long *calls, long long *bytes)
{
    *calls = atomic_load(&w->admitted_calls);
    *bytes = atomic_load(&w->admitted_bytes);
}

void es_writer_destroy(es_writer_t *w)
{
    if (w == NULL)
        return;
    for (int i = 0; i < w->n_lanes; i++) {
        lane_t *l = &w->lanes[i];
        pthread_mutex_lock(&l->mu);
        l->stopping = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
    for (int i = 0; i < w->n_lanes; i++) {
        if (w->lanes[i].started)
            pthread_join(w->lanes[i].thread, NULL);
        pthread_mutex_destroy(&w->lanes[i].mu);
        pthread_cond_destroy(&w->lanes[i].cv);
        ordo_pg_destroy(w->lanes[i].pg);
    }
    free(w->lanes);
    free(w);
}
