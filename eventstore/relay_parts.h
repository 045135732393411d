/*
 * The outbox relay's parts, private to the relay (relay.c runs them):
 *
 *   handover.c  committed events handed over by the writers, so that the
 *               relay publishes from memory in the usual case (its own lock:
 *               writers offer, the relay thread takes)
 *   outbox.c    the outbox table: reading a range, setting refused events
 *               aside, and the gathered deletes of published rows (relay
 *               thread only)
 *   relay.c     the relay thread: the lease, publishing, the PubAcks'
 *               bookkeeping, shutdown
 */
#ifndef ES_RELAY_PARTS_H
#define ES_RELAY_PARTS_H

#include "es.h"
#include "ordo/pg.h"

/* ---- handover.c ---- */

/* A committed event ready to publish. */
typedef struct es_offered {
    int64_t position;
    natsMsg *msg;   /* owned */
} es_offered_t;

typedef struct es_handover es_handover_t;

/* A queue of at most @p cap events. NULL when out of memory. */
es_handover_t *es_handover_create(size_t cap);
/* Frees the queue and what it holds (those events are in the outbox). Accepts NULL. */
void es_handover_destroy(es_handover_t *h);
/* Queues @p ev's message (writer threads). When it cannot (the queue full,
 * no memory), the queue is no longer trusted to be whole until it drains. */
void es_handover_offer(es_handover_t *h, const Eventstore__Event *ev);
/* Moves the queued events with @p cursor < position <= @p mark into
 * @p out (at most @p cap, sorted), destroying those at or below the cursor.
 * *@p exact: they are exactly cursor+1, cursor+2, ... and the queue was
 * trusted, so the outbox need not be read. */
size_t es_handover_take(es_handover_t *h, int64_t cursor, int64_t mark, es_offered_t *out, size_t cap,
                        bool *exact);
/* Stops trusting the queue until it has drained (a round failed: copies
 * handed over meanwhile may describe rows already settled). */
void es_handover_distrust(es_handover_t *h);
/* Destroys everything queued and distrusts the queue (an instance without
 * the lease does not publish: whoever publishes next reads the outbox). */
void es_handover_discard(es_handover_t *h);
/* Destroys the messages of @p n taken events (they go again from the outbox). */
void es_offered_drop(es_offered_t *taken, size_t n);

/* ---- outbox.c ---- */

/* An event JetStream refused for good. */
typedef struct es_rejected {
    int64_t position;
    char error[160];
} es_rejected_t;

typedef struct es_outbox es_outbox_t;

/* The relay's view of the outbox: @p batch rows a page, deletes counted in
 * @p stats. NULL when out of memory. */
es_outbox_t *es_outbox_create(int batch, es_stats_t *stats);
void es_outbox_destroy(es_outbox_t *o);
/* Up to a page of events (ES_EVENT_COLUMNS) with @p cursor < position <=
 * @p mark, in position order; *@p out to PQclear. */
ordo_status es_outbox_read(es_outbox_t *o, ordo_pg_t *pg, int64_t cursor, int64_t mark, PGresult **out,
                           ordo_error_t *err);
/* Records @p n refused events in outbox_rejected and removes their outbox
 * rows at once (they are rare, and must not go out again); *@p removed
 * counts the rows this call removed (an event refused twice counts once). */
ordo_status es_outbox_set_aside(ordo_pg_t *pg, const es_rejected_t *rejected, size_t n, long long *removed,
                                ordo_error_t *err);
/* Gathers @p n published positions for a later delete (flushing the
 * earlier ones first when they would not fit). */
ordo_status es_outbox_gather(es_outbox_t *o, ordo_pg_t *pg, const int64_t *positions, size_t n,
                             ordo_error_t *err);
/* Deletes the gathered rows now when @p force, else when due (the oldest
 * has waited long enough, or a page of them is waiting). A failure only
 * delays the delete (warned once; the rows stay in the outbox meanwhile and
 * a crash would publish them again): it is tried again a while later. */
void es_outbox_flush(es_outbox_t *o, ordo_pg_t *pg, bool force);
/* The last delete failed: the next is paced, not forced. */
bool es_outbox_delete_failing(const es_outbox_t *o);
/* How long an idle relay may wait (ms, at most @p tick) before the gathered deletes are due. */
int es_outbox_idle_ms(const es_outbox_t *o, int tick);

#endif
