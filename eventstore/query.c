/* Building and running the event queries shared by GetEvents and GetEventsStream. */
#include <stdio.h>
#include <string.h>

#include "query.h"
#include "ordo/buf.h"
#include "ordo/uuid.h"

enum { DEFAULT_LIMIT = 1000, MAX_LIMIT = 10000 };

ordo_status es_query_check(const Eventstore__GetEventsRequest *req, ordo_error_t *err)
{
    if (req->event_id[0] != '\0' && !ordo_uuid_valid(req->event_id))
        return ordo_error_set(err, ORDO_INVALID, "event_id \"%.64s\" is not a UUID", req->event_id);
    if (req->from_position < 0)
        return ordo_error_set(err, ORDO_INVALID, "from_position must be 0 or more");
    if (req->limit < 0)
        return ordo_error_set(err, ORDO_INVALID, "limit must be 0 (server default) or more");
    return ORDO_OK;
}

int es_query_limit(int32_t requested)
{
    return requested <= 0 ? DEFAULT_LIMIT : requested > MAX_LIMIT ? MAX_LIMIT : requested;
}

ordo_status es_query_events(ordo_pg_t *pg, const Eventstore__GetEventsRequest *req, int64_t from,
                            int64_t upto, int limit, int64_t max_bytes, PGresult **out, ordo_error_t *err)
{
    ordo_buf_t sql = ORDO_BUF_INIT;
    const char *params[7];
    char from_s[24], upto_s[24], limit_s[16], bytes_s[24];
    const char *order = req->aggregate_id[0] != '\0' ? "e.version" : "e.position";
    int n = 0;
    ordo_status st;

    snprintf(from_s, sizeof from_s, "%lld", (long long)from);
    snprintf(upto_s, sizeof upto_s, "%lld", (long long)upto);
    snprintf(limit_s, sizeof limit_s, "%d", limit);
    /* Only bounds that narrow: "position > 0" matches every row, and without
     * fresh statistics PostgreSQL would intersect the whole position index
     * with the aggregate's few rows (22 ms at 250k events, on every read). */
    /* The page is chosen on positions and sizes first (the sizes of the
     * data as text, what the answer carries: pg_column_size would count
     * the compressed value), then only its rows within the byte budget are
     * read and sent: 10,000 events of 100 KB answer 4 MB, not 1 GB. */
    snprintf(bytes_s, sizeof bytes_s, "%lld", (long long)max_bytes);
    ordo_buf_puts(&sql, "WITH page AS (SELECT e.position, sum(octet_length(e.event_data::text) + octet_length(e.metadata::text))"
                        " OVER w - (octet_length(e.event_data::text) + octet_length(e.metadata::text)) AS before,"
                        " lead(e.position) OVER w IS NOT NULL AS more FROM events e WHERE true");
    if (from > 0) {
        params[n++] = from_s;
        ordo_buf_printf(&sql, " AND e.position > $%d", n);
    }
    if (upto >= 0) {
        params[n++] = upto_s;
        ordo_buf_printf(&sql, " AND e.position <= $%d", n);
    }
    if (req->event_id[0] != '\0') {
        params[n++] = req->event_id;
        ordo_buf_printf(&sql, " AND e.event_id = $%d::uuid", n);
    }
    if (req->aggregate_id[0] != '\0') {
        params[n++] = req->aggregate_id;
        ordo_buf_printf(&sql, " AND e.aggregate_id = $%d", n);
    }
    if (req->aggregate_type[0] != '\0') {
        params[n++] = req->aggregate_type;
        ordo_buf_printf(&sql, " AND e.aggregate_type = $%d", n);
    }
    if (req->event_type[0] != '\0') {
        params[n++] = req->event_type;
        ordo_buf_printf(&sql, " AND e.event_type = $%d", n);
    }
    /* One aggregate's versions follow its positions (each append holds the
     * stream's lock while it takes its positions), and (aggregate_id,
     * version) is an index: its rows come out in order and LIMIT stops the
     * scan, instead of a walk along the position index that filters out
     * every other aggregate's events. */
    params[n++] = bytes_s;
    ordo_buf_printf(&sql, " WINDOW w AS (ORDER BY %s) ORDER BY %s LIMIT %s)"
                          " SELECT " ES_EVENT_COLUMNS ", p.more"
                          " FROM page p JOIN events e ON e.position = p.position WHERE p.before < $%d::int8 ORDER BY %s",
                    order, order, limit_s, n, order);
    st = ordo_buf_failed(&sql) ? ordo_error_set(err, ORDO_NO_MEMORY, "out of memory")
                               : ordo_pg_query_idempotent(pg, ordo_buf_str(&sql), n, params, out, err);
    ordo_buf_free(&sql);
    return st;
}

bool es_query_more(const PGresult *res)
{
    int rows = PQntuples(res);
    return rows > 0 && PQgetvalue(res, rows - 1, ES_MORE_COLUMN)[0] == 't';
}

bool es_query_needs_watermark(const Eventstore__GetEventsRequest *req)
{
    /* One aggregate's events are ordered by its version lock: nothing later can
     * commit below them. One event id is just there or not. Other reads page
     * over the global order and must stop at the safe mark. */
    return req->aggregate_id[0] == '\0' && req->event_id[0] == '\0';
}
