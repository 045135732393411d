/* Building and running the event queries shared by GetEvents and GetEventsStream. */
#include <stdint.h>
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

/* What every page query shares: of the rows `page` chose (position, the
 * event_data and metadata bytes before it, whether more follow), those
 * within the byte budget, in the page's order. */
static void query_tail(ordo_buf_t *sql, int bytes_param, const char *order)
{
    ordo_buf_printf(sql, " SELECT " ES_EVENT_COLUMNS ", p.more"
                         " FROM page p JOIN events e ON e.position = p.position WHERE p.before < $%d::int8 ORDER BY %s",
                    bytes_param, order);
}

/* The page's window: each row's running size before it and whether a row follows. */
#define PAGE_WINDOW                                                                                              \
    "SELECT e.position, sum(octet_length(e.event_data::text) + octet_length(e.metadata::text))"                  \
    " OVER w - (octet_length(e.event_data::text) + octet_length(e.metadata::text)) AS before,"                   \
    " lead(e.position) OVER w IS NOT NULL AS more"

/*
 * A read by aggregate type and/or event type (no aggregate, no event id).
 * Its rows are in events_type_position (aggregate_type, event_type,
 * position), but in position order only within one (type, event type)
 * kind: a plan that takes every match from that index and sorts it costs a
 * sort of the rest of the store per page (quadratic over a catch-up or a
 * rebuild), and PostgreSQL chooses it whenever its statistics predate the
 * type's events (20-160 ms a page of 1,000 at a million events, against
 * 3-5 ms; docs/eventstore.md, "Reads by type"). So the plan is not
 * left to the statistics: the kinds are listed by skipping along the index
 * (one probe each), each kind gives its first limit+1 rows past `from` in
 * position order, the bounds written as row comparisons that only that
 * index can serve, and the page is the first limit+1 of those. Cost per
 * page: kinds x (limit+1) index entries, whatever the statistics say.
 */
static void typed_page(ordo_buf_t *sql, const Eventstore__GetEventsRequest *req, int *n, const char **params,
                       const char *limit_s, const char *limit1_s)
{
    int a = 0, t = 0;

    if (req->aggregate_type[0] != '\0') {
        params[*n] = req->aggregate_type;
        a = ++*n;
    }
    if (req->event_type[0] != '\0') {
        params[*n] = req->event_type;
        t = ++*n;
    }
    ordo_buf_puts(sql, "WITH RECURSIVE kinds(atype, etype) AS (");
    if (a != 0 && t != 0)   /* one kind */
        ordo_buf_printf(sql, "SELECT $%d::text, $%d::text", a, t);
    else if (a != 0)        /* the aggregate type's event types */
        ordo_buf_printf(sql, "(SELECT aggregate_type, event_type FROM events WHERE aggregate_type = $%d"
                             " ORDER BY event_type LIMIT 1)"
                             " UNION ALL SELECT k.atype, (SELECT e.event_type FROM events e"
                             " WHERE e.aggregate_type = k.atype AND e.event_type > k.etype ORDER BY e.event_type LIMIT 1)"
                             " FROM kinds k WHERE k.etype IS NOT NULL", a);
    else                    /* every aggregate type, with the event type */
        ordo_buf_printf(sql, "(SELECT aggregate_type, $%d::text FROM events ORDER BY aggregate_type LIMIT 1)"
                             " UNION ALL SELECT (SELECT e.aggregate_type FROM events e WHERE e.aggregate_type > k.atype"
                             " ORDER BY e.aggregate_type LIMIT 1), k.etype FROM kinds k WHERE k.atype IS NOT NULL", t);
    ordo_buf_printf(sql, "), picked AS (SELECT c.position FROM kinds k CROSS JOIN LATERAL (SELECT e.position FROM events e"
                         " WHERE (e.aggregate_type, e.event_type, e.position) > (k.atype, k.etype, $1::int8)"
                         " AND (e.aggregate_type, e.event_type, e.position) <= (k.atype, k.etype, $2::int8)"
                         " ORDER BY e.aggregate_type, e.event_type, e.position LIMIT %s) c"
                         " WHERE k.atype IS NOT NULL AND k.etype IS NOT NULL ORDER BY c.position LIMIT %s),"
                         " page AS (" PAGE_WINDOW " FROM picked p JOIN events e ON e.position = p.position"
                         " WINDOW w AS (ORDER BY e.position) ORDER BY e.position LIMIT %s)",
                    limit1_s, limit1_s, limit_s);
}

/* Any other read: by aggregate (its (aggregate_id, version) index), by
 * event id, or the whole store (the position index). */
static void plain_page(ordo_buf_t *sql, const Eventstore__GetEventsRequest *req, int *n, const char **params,
                       int64_t from, int64_t upto, const char *from_s, const char *upto_s, const char *limit_s,
                       const char *order)
{
    /* Only bounds that narrow: "position > 0" matches every row, and without
     * fresh statistics PostgreSQL would intersect the whole position index
     * with the aggregate's few rows (22 ms at 250k events, on every read). */
    ordo_buf_puts(sql, "WITH page AS (" PAGE_WINDOW " FROM events e WHERE true");
    if (from > 0) {
        params[*n] = from_s;
        ordo_buf_printf(sql, " AND e.position > $%d", ++*n);
    }
    if (upto >= 0) {
        params[*n] = upto_s;
        ordo_buf_printf(sql, " AND e.position <= $%d", ++*n);
    }
    if (req->event_id[0] != '\0') {
        params[*n] = req->event_id;
        ordo_buf_printf(sql, " AND e.event_id = $%d::uuid", ++*n);
    }
    if (req->aggregate_id[0] != '\0') {
        params[*n] = req->aggregate_id;
        ordo_buf_printf(sql, " AND e.aggregate_id = $%d", ++*n);
    }
    if (req->aggregate_type[0] != '\0') {
        params[*n] = req->aggregate_type;
        ordo_buf_printf(sql, " AND e.aggregate_type = $%d", ++*n);
    }
    if (req->event_type[0] != '\0') {
        params[*n] = req->event_type;
        ordo_buf_printf(sql, " AND e.event_type = $%d", ++*n);
    }
    /* One aggregate's versions follow its positions (each append holds the
     * stream's lock while it takes its positions), and (aggregate_id,
     * version) is an index: its rows come out in order and LIMIT stops the
     * scan, instead of a walk along the position index that filters out
     * every other aggregate's events. */
    ordo_buf_printf(sql, " WINDOW w AS (ORDER BY %s) ORDER BY %s LIMIT %s)", order, order, limit_s);
}

ordo_status es_query_events(ordo_pg_t *pg, const Eventstore__GetEventsRequest *req, int64_t from,
                            int64_t upto, int limit, int64_t max_bytes, PGresult **out, ordo_error_t *err)
{
    ordo_buf_t sql = ORDO_BUF_INIT;
    const char *params[7];
    char from_s[24], upto_s[24], limit_s[16], limit1_s[16], bytes_s[24];
    bool typed = req->aggregate_id[0] == '\0' && req->event_id[0] == '\0' &&
                 (req->aggregate_type[0] != '\0' || req->event_type[0] != '\0');
    const char *order = req->aggregate_id[0] != '\0' ? "e.version" : "e.position";
    int n = 0;
    ordo_status st;

    snprintf(from_s, sizeof from_s, "%lld", (long long)from);
    snprintf(upto_s, sizeof upto_s, "%lld", (long long)(upto >= 0 ? upto : INT64_MAX));
    snprintf(limit_s, sizeof limit_s, "%d", limit);
    snprintf(limit1_s, sizeof limit1_s, "%d", limit + 1);
    /* The page is chosen on positions and sizes first (the sizes of the
     * data as text, what the answer carries: pg_column_size would count
     * the compressed value), then only its rows within the byte budget are
     * read and sent: 10,000 events of 100 KB answer 4 MB, not 1 GB. */
    snprintf(bytes_s, sizeof bytes_s, "%lld", (long long)max_bytes);
    if (typed) {
        params[n++] = from_s;   /* ($1 and $2: both bounds, always) */
        params[n++] = upto_s;
        typed_page(&sql, req, &n, params, limit_s, limit1_s);
    } else {
        plain_page(&sql, req, &n, params, from, upto, from_s, upto_s, limit_s, order);
    }
    params[n++] = bytes_s;
    query_tail(&sql, n, order);
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
