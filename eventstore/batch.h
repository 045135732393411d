/*
 * The writer's decisions about one batch of appends, apart from the
 * database: which calls are still live, where each stream head stands,
 * which expected versions hold (in queue order), which calls wait for the
 * next batch, and whether the guarded insert can take the batch whole.
 * Private to the event store (writer.c; tests/unit_writer.c).
 */
#ifndef ES_BATCH_H
#define ES_BATCH_H

#include "es.h"
#include "ordo/buf.h"

typedef struct head {
    const char *aggregate_id;
    const char *aggregate_type;   /* as stored, or of the first call creating it */
    char stored_type[129];
    int64_t version;
    int64_t expected;             /* guarded insert: the version it moves the head from */
    const es_append_t *call;      /* guarded insert: its call (one per head) */
    bool exists, touched;
} es_head_t;

/* The statements' array parameters, by name (PostgreSQL array literals),
 * kept over a lane's transactions so that their memory is reused. */
typedef struct arrays {
    /* the lookup: every event id, every aggregate */
    ordo_buf_t lookup_ids, lookup_aggs;
    /* stream heads written: aggregate, type, new version; the guarded
     * insert's also: the version it moves from, its call's event ids */
    ordo_buf_t head_agg, head_type, head_version, head_expected, head_ids;
    /* events: id, aggregate, aggregate type, version, event type, data, metadata, stream */
    ordo_buf_t ev_id, ev_agg, ev_type, ev_version, ev_event_type, ev_data, ev_meta, ev_stream;
} es_arrays_t;

/* One transaction's worth of calls and the scratch it needs. */
typedef struct batch {
    es_append_t **items;
    size_t n;
    es_head_t *heads;
    size_t n_heads;
    bool lookup;                  /* read first (the guarded insert failed, or left calls lately) */
    bool missed;                  /* the guarded insert failed or left a call */
    es_arrays_t x;
} es_batch_t;

/* Not refused, not a duplicate, not waiting for the next batch. */
bool es_batch_live(const es_append_t *a);

/* Sets @p a's result (status and message). */
void es_append_set_result(es_append_t *a, ordo_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Clears every call's result for a new attempt (a retried transaction). */
void es_batch_reset(es_batch_t *b);

/* The head of @p aggregate_id among b->heads, or NULL. */
es_head_t *es_batch_find_head(es_batch_t *b, const char *aggregate_id);

/* One head per aggregate of the batch (not yet read: version 0, absent),
 * their ids also as an array literal in @p aggs. */
void es_batch_collect_heads(es_batch_t *b, ordo_buf_t *aggs);

/* Checks each live call, in queue order, against its head as read and
 * locked (with the calls before it applied): a head of another aggregate
 * type refuses it (INVALID), a wrong expected version too (CONFLICT);
 * otherwise the head moves on by the call's events. */
void es_batch_check_versions(es_batch_t *b);

/* A call that shares an event id with an earlier live call waits for the
 * next batch (deferred), which answers it as a duplicate or a conflict. */
void es_batch_defer_overlaps(es_batch_t *b);

/* The guarded insert's heads, if it can take the batch: every call names
 * its expected version, no two share an aggregate, no call was left by the
 * guarded insert before and the batch need not read first. Each head is
 * then where its call expects it, and each call's version is set. */
bool es_batch_guess_heads(es_batch_t *b);

#endif
