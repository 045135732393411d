/* Event queries shared by GetEvents and GetEventsStream. */
#ifndef ES_QUERY_H
#define ES_QUERY_H

#include "es.h"

/* INVALID for a malformed event_id, a negative from_position or limit. */
ordo_status es_query_check(const Eventstore__GetEventsRequest *req, ordo_error_t *err);

/* The requested limit with the server default and cap applied. */
int es_query_limit(int32_t requested);

/* True when the read must stop at the watermark (global or type-filtered reads). */
bool es_query_needs_watermark(const Eventstore__GetEventsRequest *req);

/* Events matching @p req's filters with from < position <= upto (upto < 0: no bound),
 * ordered by position (one aggregate's: by version, the same order), at most
 * @p limit, and no more once the events before reach @p max_bytes (of
 * event_data and metadata as text; the first is always there). Columns:
 * ES_EVENT_COLUMNS, then whether more match after that row (ES_MORE_COLUMN, "t"/"f"). */
ordo_status es_query_events(ordo_pg_t *pg, const Eventstore__GetEventsRequest *req, int64_t from,
                            int64_t upto, int limit, int64_t max_bytes, PGresult **out, ordo_error_t *err);
#define ES_MORE_COLUMN 10

/* Whether more events match after those of @p res (its last row's ES_MORE_COLUMN). */
bool es_query_more(const PGresult *res);

#endif
