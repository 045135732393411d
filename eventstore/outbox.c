/*
 * The relay's side of the outbox table. Reads follow the readers'
 * watermark (relay.c), so a page never wades through the dead index entries
 * of rows already deleted. The deletes of published rows are gathered over
 * rounds (up to DELETE_DELAY_MS, or a page of rows) and go out as one
 * statement: under a steady load a round publishes a few events, and a
 * DELETE per round cost more of the database than the rows did. Rows
 * published but not yet deleted are behind the relay's cursor, so nothing
 * reads them again unless a crash or a takeover rescans the outbox.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/buf.h"
#include "ordo/log.h"
#include "ordo/retry.h"
#include "relay_parts.h"

enum { DELETE_DELAY_MS = 100, DELETE_RETRY_MS = 1000 };

static const char DELETE_OUTBOX_SQL[] = "DELETE FROM outbox WHERE position = ANY($1::int8[])";

struct es_outbox {
    int batch;
    es_stats_t *stats;
    int64_t *done;          /* published rows whose delete is due, */
    size_t n_done;          /*   at most 2 pages (flushed when a round would overflow it) */
    int64_t delete_at_ms;   /* when to delete them unless forced (monotonic) */
    bool delete_failing;    /* the last delete failed (warned once) */
};

es_outbox_t *es_outbox_create(int batch, es_stats_t *stats)
{
    es_outbox_t *o = calloc(1, sizeof *o);

    if (o == NULL || (o->done = calloc(2 * (size_t)batch, sizeof *o->done)) == NULL) {
        free(o);
        return NULL;
    }
    o->batch = batch;
    o->stats = stats;
    return o;
}

void es_outbox_destroy(es_outbox_t *o)
{
    if (o == NULL)
        return;
    free(o->done);
    free(o);
}

ordo_status es_outbox_read(es_outbox_t *o, ordo_pg_t *pg, int64_t cursor, int64_t mark, PGresult **out,
                           ordo_error_t *err)
{
    char limit[16], from[24], upto[24];
    const char *params[3] = {from, upto, limit};

    snprintf(from, sizeof from, "%lld", (long long)cursor);
    snprintf(upto, sizeof upto, "%lld", (long long)mark);
    snprintf(limit, sizeof limit, "%d", o->batch);
    /* The LIMIT sits on the outbox side: at most a page of primary-key
     * lookups into events, whatever the statistics of the churning outbox say. */
    return ordo_pg_query_idempotent(pg,
                                    "SELECT " ES_EVENT_COLUMNS " FROM (SELECT position FROM outbox"
                                    " WHERE position > $1::int8 AND position <= $2::int8 ORDER BY position"
                                    " LIMIT $3::int4) o JOIN events e ON e.position = o.position ORDER BY o.position",
                                    3, params, out, err);
}

ordo_status es_outbox_set_aside(ordo_pg_t *pg, const es_rejected_t *rejected, size_t n, long long *removed,
                                ordo_error_t *err)
{
    ordo_buf_t pos = ORDO_BUF_INIT, why = ORDO_BUF_INIT;
    const char *params[2];
    PGresult *res = NULL;
    ordo_status st;

    *removed = 0;
    if (n == 0)
        return ORDO_OK;
    ordo_buf_pg_array_begin(&pos);
    ordo_buf_pg_array_begin(&why);
    for (size_t i = 0; i < n; i++) {
        ordo_buf_pg_array_int(&pos, rejected[i].position);
        ordo_buf_pg_array_text(&why, rejected[i].error);
        ORDO_ERROR("event set aside: JetStream refused it", "position=%lld err=\"%s\"",
                   (long long)rejected[i].position, rejected[i].error);
    }
    ordo_buf_pg_array_end(&pos);
    ordo_buf_pg_array_end(&why);
    params[0] = ordo_buf_str(&pos);
    params[1] = ordo_buf_str(&why);
    st = ordo_pg_ensure(pg, err);
    if (st == ORDO_OK)
        st = ordo_pg_query(pg, "INSERT INTO outbox_rejected (position, error)"
                               " SELECT * FROM unnest($1::int8[], $2::text[])"
                               " ON CONFLICT (position) DO UPDATE SET error = excluded.error, rejected_at = now()",
                           2, params, NULL, err);
    if (st == ORDO_OK)
        st = ordo_pg_query(pg, DELETE_OUTBOX_SQL, 1, params, &res, err);
    if (st == ORDO_OK)
        *removed = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    ordo_buf_free(&pos);
    ordo_buf_free(&why);
    return st;
}

/* Deletes the gathered rows when @p force or when due; on failure they stay gathered. */
static ordo_status delete_done(es_outbox_t *o, ordo_pg_t *pg, bool force, ordo_error_t *err)
{
    ordo_buf_t done = ORDO_BUF_INIT;
    const char *params[1];
    ordo_status st;

    if (o->n_done == 0 || (!force && o->n_done < (size_t)o->batch && ordo_mono_ms() < o->delete_at_ms))
        return ORDO_OK;
    ordo_buf_pg_array_begin(&done);
    for (size_t i = 0; i < o->n_done; i++)
        ordo_buf_pg_array_int(&done, o->done[i]);
    ordo_buf_pg_array_end(&done);
    params[0] = ordo_buf_str(&done);
    st = ordo_pg_query_idempotent(pg, DELETE_OUTBOX_SQL, 1, params, NULL, err);   /* deleting twice is harmless */
    ordo_buf_free(&done);
    if (st == ORDO_OK) {
        o->n_done = 0;
        atomic_fetch_add(&o->stats->outbox_deletes, 1);
    }
    return st;
}

ordo_status es_outbox_gather(es_outbox_t *o, ordo_pg_t *pg, const int64_t *positions, size_t n,
                             ordo_error_t *err)
{
    ordo_status st;

    if (o->n_done + n > 2 * (size_t)o->batch && (st = delete_done(o, pg, true, err)) != ORDO_OK)
        return st;
    if (o->n_done == 0 && n > 0)
        o->delete_at_ms = ordo_mono_ms() + DELETE_DELAY_MS;
    memcpy(o->done + o->n_done, positions, n * sizeof *positions);
    o->n_done += n;
    return ORDO_OK;
}

void es_outbox_flush(es_outbox_t *o, ordo_pg_t *pg, bool force)
{
    ordo_error_t err;

    if (delete_done(o, pg, force, &err) == ORDO_OK) {
        if (o->n_done == 0)
            o->delete_failing = false;
        return;
    }
    if (!o->delete_failing)
        ORDO_WARN("relay cannot delete published outbox rows yet", "rows=%zu err=\"%s\"", o->n_done, err.msg);
    o->delete_failing = true;
    o->delete_at_ms = ordo_mono_ms() + DELETE_RETRY_MS;
}

bool es_outbox_delete_failing(const es_outbox_t *o)
{
    return o->delete_failing;
}

int es_outbox_idle_ms(const es_outbox_t *o, int tick)
{
    int64_t left = o->n_done > 0 ? o->delete_at_ms - ordo_mono_ms() : tick;
    return left < 1 ? 1 : left > tick ? tick : (int)left;
}
