/*
 * The outbox relay: publishes committed events to JetStream in position
 * order and deletes their outbox rows only after JetStream acknowledged
 * them. It follows the readers' watermark: it publishes the outbox between
 * a cursor and the safe mark, so nothing can still appear below the cursor
 * (except a Republish, which rewinds it) and the scan never wades through
 * the dead index entries of rows already deleted.
 *
 * Writers hand each committed event over (es_relay_offer), so in the usual
 * case the relay publishes from memory; it reads the outbox whenever the
 * hand-over does not cover the range exactly (after a start, a Republish, a
 * failed publish, a full queue, a rolled-back position, another writer).
 * NATS being down, and JetStream refusing for a passing reason (its storage
 * full, its cluster without a leader), is waited out: the events stay in the
 * outbox, in order, and the relay warns once and tries again with backoff.
 * Only an event JetStream can never take (larger than the stream allows) is
 * set aside in outbox_rejected (logged and counted) and the relay goes on.
 * A crash between publish and delete re-publishes on restart; the
 * Nats-Msg-Id header (the event id) lets JetStream drop the duplicate.
 *
 * This file is the relay thread: the lease, publishing and the PubAcks'
 * bookkeeping, shutdown. The hand-over queue is handover.c; reading the
 * outbox, setting events aside and the gathered deletes are outbox.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ordo/bus.h"
#include "ordo/envelope.h"
#include "ordo/log.h"
#include "ordo/retry.h"
#include "ordo/uuid.h"
#include "relay_parts.h"

enum { ACK_WAIT_MS = 5000, TICK_MS = 100, RECONNECT_MS = 500, OFFER_CAP = 4096, STREAM_RECREATE_MS = 3000,
       ACK_RING = 16384 };

struct es_relay {
    es_ctx_t *ctx;
    pthread_t thread;
    pthread_mutex_t mu;         /* guards the fields below, up to cursor */
    bool rescan, stopping;
    atomic_bool connected;
    atomic_bool leading;        /* holds the lease: publishes */
    es_lease_t lease;           /* relay thread only */
    ordo_pg_t *pg;              /* relay thread only */
    ordo_stream_limits_t limits; /* the EVENTS stream's (--stream-max-age-s, --stream-max-mb) */
    es_reconciler_t *reconciler; /* relay thread only, while leading */
    /* What JetStream acknowledged lately, to notice that it lost some (mu):
     * the stream sequences it gave, and the positions they hold, in a ring */
    uint64_t seq_high;          /* the highest sequence acknowledged */
    uint64_t *ring_seq;
    int64_t *ring_pos;
    size_t ring_next, ring_n;
    int64_t lost_from, lost_to; /* positions to publish again (0: none) */
    pthread_mutex_t bus_mu;     /* guards bus: the relay thread sets it, admin calls borrow it */
    ordo_bus_t *bus;
    int64_t cursor;             /* relay thread only: outbox rows at or below are done */
    atomic_llong published_to;  /* the cursor as it last moved forward (for /metrics) */
    es_handover_t *handover;    /* committed events handed over by writers (its own lock) */
    es_offered_t *taken;        /* relay thread only: this round's share of the hand-over */
    es_outbox_t *outbox;        /* relay thread only */
    /* results of the batch in flight, filled by cnats' ack callback (mu) */
    int64_t *acked;
    size_t n_acked;
    es_rejected_t *rejected;
    size_t n_rejected;
    size_t n_failed;
    char failure[160];          /* why the first publish of the round failed, for the warning */
    int64_t failing_since_ms;   /* relay thread only: when publishing started to fail (monotonic; 0 while the
                                   last round published everything); warned once */
};

/* A passing failure of the round (r->mu held): counted, and the first one's
 * reason kept for the warning. */
static void add_failed(es_relay_t *r, const char *why)
{
    if (r->n_failed++ == 0)
        snprintf(r->failure, sizeof r->failure, "%s", why);
}

static void add_rejected(es_relay_t *r, int64_t position, const char *why)
{
    es_rejected_t *x;
    if (r->n_rejected >= (size_t)r->ctx->cfg->relay_batch) {
        add_failed(r, why);
        return;
    }
    x = &r->rejected[r->n_rejected++];
    x->position = position;
    snprintf(x->error, sizeof x->error, "%s", why);
}

/* Whether JetStream's refusal is about the message itself, so that sending
 * it again can never succeed. Everything else (storage or account limits
 * reached, no cluster leader, the stream missing or sealed, ...) passes or
 * needs an operator, and the event waits in the outbox meanwhile: setting it
 * aside would deliver the events after it before it. */
static bool refused_for_good(jsErrCode code)
{
    return code == JSStreamMessageExceedsMaximumErr;
}

/* JetStream numbers a stream's messages without ever going back: a new
 * message acknowledged with a sequence at or below one acknowledged before
 * (not a duplicate) means the server lost the messages from there on (an
 * OS crash before nats-server 2.9 synced its files, a stream deleted). The
 * positions those sequences held are noted (from the ring of recent acks)
 * for the relay thread to publish again (r->mu held). */
static void note_sequence(es_relay_t *r, const jsPubAck *pa, int64_t position)
{
    if (pa->Duplicate)
        return;   /* the sequence of the copy JetStream already has */
    if (pa->Sequence <= r->seq_high) {
        int64_t from = 0, to = 0;
        for (size_t i = 0; i < r->ring_n; i++)
            if (r->ring_seq[i] >= pa->Sequence && r->ring_pos[i] != position) {
                from = from == 0 || r->ring_pos[i] < from ? r->ring_pos[i] : from;
                to = r->ring_pos[i] > to ? r->ring_pos[i] : to;
            }
        if (to > 0) {
            r->lost_from = r->lost_from == 0 || from < r->lost_from ? from : r->lost_from;
            r->lost_to = to > r->lost_to ? to : r->lost_to;
        }
        r->ring_n = r->ring_next = 0;   /* the old numbering is over */
    }
    r->seq_high = pa->Sequence;
    r->ring_seq[r->ring_next] = pa->Sequence;
    r->ring_pos[r->ring_next] = position;
    r->ring_next = (r->ring_next + 1) % ACK_RING;
    if (r->ring_n < ACK_RING)
        r->ring_n++;
}

/* Queues again the positions JetStream lost (note_sequence), logged and
 * counted; they go out with the next rounds. */
static void republish_lost(es_relay_t *r, ordo_pg_t *pg)
{
    char from[24], to[24];
    const char *params[2] = {from, to};
    PGresult *res = NULL;
    ordo_error_t err;
    long long queued;

    pthread_mutex_lock(&r->mu);
    snprintf(from, sizeof from, "%lld", (long long)r->lost_from);
    snprintf(to, sizeof to, "%lld", (long long)r->lost_to);
    bool lost = r->lost_to > 0;
    pthread_mutex_unlock(&r->mu);
    if (!lost)
        return;
    if (ordo_pg_query_idempotent(pg, "INSERT INTO outbox (position) SELECT position FROM events"
                                     " WHERE position >= $1::int8 AND position <= $2::int8 ON CONFLICT (position) DO NOTHING",
                                 2, params, &res, &err) != ORDO_OK) {
        ORDO_WARN("JetStream lost events it had acknowledged, and they cannot be queued again yet", "from=%s to=%s"
                  " err=\"%s\"", from, to, err.msg);
        return;   /* tried again after the next round */
    }
    queued = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    pthread_mutex_lock(&r->mu);
    r->lost_from = r->lost_to = 0;
    pthread_mutex_unlock(&r->mu);
    ORDO_WARN("JetStream lost events it had acknowledged: publishing them again", "from=%s to=%s queued=%lld", from, to,
              queued);
    atomic_fetch_add(&r->ctx->stats.lost_republished, queued);
    es_relay_rescan(r);
}

/* cnats calls this from its own thread, once per published message. */
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    es_relay_t *r = closure;
    int64_t position = ordo_envelope_position(msg);
    const char *why = pae != NULL && pae->ErrText != NULL ? pae->ErrText
                      : pae != NULL                      ? natsStatus_GetText(pae->Err)
                                                          : "PubAck beyond the batch";
    (void)js;

    pthread_mutex_lock(&r->mu);
    if (pa != NULL)
        note_sequence(r, pa, position);
    if (pa != NULL && r->n_acked < (size_t)r->ctx->cfg->relay_batch)
        r->acked[r->n_acked++] = position;
    else if (pae != NULL && refused_for_good(pae->ErrCode))
        add_rejected(r, position, why);
    else
        add_failed(r, why);
    pthread_mutex_unlock(&r->mu);
    natsMsg_Destroy(msg);
}

void es_relay_offer(es_relay_t *r, const Eventstore__Event *ev)
{
    if (r != NULL)
        es_handover_offer(r->handover, ev);
}

/* Publishes @p msg (consumed) of @p position unless building it already failed
 * with @p built. A refusal for good is recorded; false means a passing
 * failure: stop the round, so that no later event overtakes this one. */
static bool publish_one(es_relay_t *r, ordo_bus_t *bus, int64_t position, natsMsg *msg, natsStatus built)
{
    natsStatus s = built == NATS_OK ? js_PublishMsgAsync(ordo_bus_js(bus), &msg, NULL) : built;
    bool refused = s == NATS_MAX_PAYLOAD || s == NATS_INVALID_SUBJECT;

    natsMsg_Destroy(msg);
    if (s == NATS_OK)
        return true;
    pthread_mutex_lock(&r->mu);
    if (refused)
        add_rejected(r, position, natsStatus_GetText(s));
    else
        add_failed(r, natsStatus_GetText(s));
    pthread_mutex_unlock(&r->mu);
    return refused;
}

/* Publishes r->taken[0..n) in order until one fails for a passing reason. */
static void publish_taken(es_relay_t *r, ordo_bus_t *bus, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        natsMsg *msg = r->taken[i].msg;
        r->taken[i].msg = NULL;
        if (!publish_one(r, bus, r->taken[i].position, msg, NATS_OK)) {
            es_offered_drop(r->taken, n);   /* the rest goes again from the outbox */
            return;
        }
    }
}

/* Publishes rows of @p res until one fails for a passing reason. */
static void publish_rows(es_relay_t *r, ordo_bus_t *bus, const PGresult *res)
{
    for (int i = 0; i < PQntuples(res); i++) {
        Eventstore__Event ev = EVENTSTORE__EVENT__INIT;
        natsMsg *msg = NULL;
        natsStatus built;
        bool go_on;

        es_event_from_row(&ev, res, i);
        built = ordo_envelope_encode(&ev, &msg);
        go_on = publish_one(r, bus, ev.position, msg, built);
        es_event_free_metadata(&ev);
        if (!go_on)
            break;
    }
}

static void wait_for_acks(es_relay_t *r, ordo_bus_t *bus)
{
    jsPubOptions po;
    natsMsgList pending;

    jsPubOptions_Init(&po);
    po.MaxWait = ACK_WAIT_MS;
    if (js_PublishAsyncComplete(ordo_bus_js(bus), &po) == NATS_OK)
        return;
    /* unanswered: count as failed; they stay in the outbox and go again */
    if (js_PublishAsyncGetPendingList(&pending, ordo_bus_js(bus)) == NATS_OK) {
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < pending.Count; i++)
            add_failed(r, "no PubAck in time");
        pthread_mutex_unlock(&r->mu);
        natsMsgList_Destroy(&pending);
    }
}

/* Records the round's outcome in the outbox: the set-aside rows removed at
 * once, the acknowledged ones gathered for a batched delete (r->mu held).
 * *@p set_aside counts the refused events whose outbox row this call removed. */
static ordo_status settle(es_relay_t *r, ordo_pg_t *pg, long long *set_aside, ordo_error_t *err)
{
    ordo_status st = es_outbox_set_aside(pg, r->rejected, r->n_rejected, set_aside, err);
    return st == ORDO_OK ? es_outbox_gather(r->outbox, pg, r->acked, r->n_acked, err) : st;
}

/* One round: read a page of the outbox, publish it, settle it.
 * Returns the number of rows read, or -1 when something failed. */
static int settle_round(es_relay_t *r, ordo_pg_t *pg, int64_t next, int rows);

static int relay_round(es_relay_t *r, ordo_pg_t *pg, ordo_bus_t *bus)
{
    int64_t mark = es_watermark_get(r->ctx->watermark);
    PGresult *res;
    ordo_error_t err;
    int rows;
    size_t taken;
    bool exact, rescan;
    int64_t next;

    pthread_mutex_lock(&r->mu);
    rescan = r->rescan;
    r->rescan = false;
    pthread_mutex_unlock(&r->mu);
    if (rescan) {
        r->cursor = 0;
        es_outbox_flush(r->outbox, pg, true);   /* rows published and not yet deleted would go out again */
    }
    if (mark <= r->cursor)
        return 0;
    r->n_acked = r->n_rejected = r->n_failed = 0;
    taken = es_handover_take(r->handover, r->cursor, mark, r->taken, (size_t)r->ctx->cfg->relay_batch, &exact);
    if (exact) {
        publish_taken(r, bus, taken);
        wait_for_acks(r, bus);
        return settle_round(r, pg, r->taken[taken - 1].position, (int)taken);
    }
    es_offered_drop(r->taken, taken);
    if (es_outbox_read(r->outbox, pg, r->cursor, mark, &res, &err) != ORDO_OK) {
        ORDO_WARN("relay cannot read the outbox", "err=\"%s\"", err.msg);
        return -1;
    }
    rows = PQntuples(res);
    if (rows > 0) {
        publish_rows(r, bus, res);
        wait_for_acks(r, bus);
    }
    /* a full page: go on after its last row; less: everything up to the mark is read */
    next = rows == r->ctx->cfg->relay_batch ? strtoll(PQgetvalue(res, rows - 1, 0), NULL, 10) : mark;
    PQclear(res);
    if (rows == 0) {
        r->cursor = mark;
        atomic_store(&r->published_to, mark);
        return 0;
    }
    return settle_round(r, pg, next, rows);
}

/* Warns when publishing starts to fail for a passing reason (once, until a
 * round publishes everything again, which is logged too). */
static void report_publishing(es_relay_t *r, size_t failed)
{
    if (failed > 0 && r->failing_since_ms == 0) {
        ORDO_WARN("relay cannot publish; events wait in the outbox and go again", "failed=%zu err=\"%s\"", failed,
                  r->failure);
        r->failing_since_ms = ordo_mono_ms();
    } else if (failed == 0 && r->failing_since_ms != 0) {
        ORDO_INFO("relay publishing again", "cursor=%lld", (long long)r->cursor);
        r->failing_since_ms = 0;
    }
}

/* After a round's publishes: records the outcome in the outbox and moves
 * the cursor to @p next, or leaves it for the range to go again. */
static int settle_round(es_relay_t *r, ordo_pg_t *pg, int64_t next, int rows)
{
    ordo_error_t err;
    long long set_aside = 0;
    size_t failed;

    pthread_mutex_lock(&r->mu);   /* late callbacks may still arrive: freeze the results */
    failed = r->n_failed;
    report_publishing(r, failed);
    if (settle(r, pg, &set_aside, &err) != ORDO_OK) {
        ORDO_WARN("relay cannot settle the outbox (will publish again)", "err=\"%s\"", err.msg);
        failed++;
    }
    atomic_fetch_add(&r->ctx->stats.published, (long long)r->n_acked);
    atomic_fetch_add(&r->ctx->stats.set_aside, set_aside);
    atomic_fetch_add(&r->ctx->stats.publish_errors, (long long)failed);
    r->n_acked = r->n_rejected = r->n_failed = 0;
    pthread_mutex_unlock(&r->mu);
    if (failed > 0)
        return -1;      /* the cursor stays: the same range is read again */
    r->cursor = next;
    atomic_store(&r->published_to, next);
    return rows;
}

static bool stopping(es_relay_t *r)
{
    bool s;
    pthread_mutex_lock(&r->mu);
    s = r->stopping;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static ordo_bus_t *relay_connect(es_relay_t *r, bool *warned)
{
    jsOptions jo;
    ordo_bus_config_t cfg = {.url = r->ctx->cfg->nats_url, .name = "eventstore-relay", .connect_timeout_ms = 2000,
                             .js_options = &jo, .auth = &r->ctx->cfg->nats};
    ordo_bus_t *bus = NULL;
    ordo_error_t err;

    jsOptions_Init(&jo);
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = r;
    jo.PublishAsync.MaxPending = r->ctx->cfg->relay_batch;
    if (ordo_bus_connect(&cfg, &bus, &err) != ORDO_OK || ordo_bus_ensure_streams(bus, &r->limits, &err) != ORDO_OK) {
        if (!*warned)
            ORDO_WARN("relay cannot reach JetStream; events wait in the outbox", "err=\"%s\"", err.msg);
        *warned = true;
        ordo_bus_destroy(bus);
        return NULL;
    }
    {
        char shown[512];
        ORDO_INFO("relay connected to JetStream", "url=%s", ordo_log_url(r->ctx->cfg->nats_url, shown, sizeof shown));
    }
    *warned = false;
    return bus;
}

/* Creates the EVENTS stream again if it is gone: checked after NATS
 * reconnected (a server that lost its state comes back without it) and
 * once publishing has failed for STREAM_RECREATE_MS (an operator may have
 * deleted it: nats-server 2.9 goes on removing a deleted stream's files for
 * up to a second after answering, and a stream created in between can lose
 * them); without it every publish finds no responders and the events would
 * wait for good. */
static void ensure_stream(es_relay_t *r, ordo_bus_t *bus, unsigned *reconnects)
{
    ordo_error_t err;
    unsigned now = ordo_bus_reconnects(bus);

    if (now == *reconnects && !(r->failing_since_ms != 0 && ordo_mono_ms() - r->failing_since_ms >= STREAM_RECREATE_MS))
        return;
    if (ordo_bus_connected(bus) && ordo_bus_ensure_streams(bus, &r->limits, &err) == ORDO_OK)
        *reconnects = now;
}

/* Holds the lease (renewed when due); on taking it over, the previous
 * holder's progress is unknown: read the outbox from its start. */
static bool lead(es_relay_t *r, ordo_pg_t *pg)
{
    bool gained, held = es_lease_hold(&r->lease, pg, &gained);
    if (gained) {
        es_relay_rescan(r);
        es_handover_discard(r->handover);
    }
    atomic_store(&r->leading, held);
    return held;
}

static void *relay_thread(void *arg)
{
    es_relay_t *r = arg;
    ordo_pg_t *pg = r->pg;
    ordo_bus_t *bus = NULL;
    bool warned = false, draining = false;
    int failures = 0;
    unsigned reconnects = 0;

    for (;;) {
        int n;
        if (bus == NULL && (bus = relay_connect(r, &warned)) == NULL) {
            if (stopping(r))
                break;
            ordo_backoff_sleep(&(ordo_retry_policy_t){1, RECONNECT_MS, RECONNECT_MS}, 1);
            continue;
        }
        if (r->bus == NULL) {
            pthread_mutex_lock(&r->bus_mu);
            r->bus = bus;
            pthread_mutex_unlock(&r->bus_mu);
        }
        atomic_store(&r->connected, ordo_bus_connected(bus));
        ensure_stream(r, bus, &reconnects);
        if (!lead(r, pg)) {
            es_handover_discard(r->handover);
            /* published while leading: delete them (paced when failing) */
            es_outbox_flush(r->outbox, pg, !es_outbox_delete_failing(r->outbox));
            if (stopping(r))
                break;
            es_watermark_wait(r->ctx->watermark, INT64_MAX, TICK_MS);
            continue;
        }
        es_reconciler_round(r->reconciler, &r->ctx->stats, pg, bus, es_watermark_get(r->ctx->watermark));
        n = relay_round(r, pg, bus);
        if (n >= 0)
            es_outbox_flush(r->outbox, pg, false);
        republish_lost(r, pg);
        if (n < 0) {
            ordo_retry_policy_t p = {1, 50, 2000};
            /* The range goes again from the outbox; copies handed over meanwhile
             * may describe rows already settled: stop trusting the queue until
             * it has drained. */
            es_handover_distrust(r->handover);
            ordo_backoff_sleep(&p, ++failures > 6 ? 6 : failures);
            if (draining || stopping(r))
                break;
            continue;
        }
        failures = 0;
        if (n >= r->ctx->cfg->relay_batch)
            continue;               /* more is waiting */
        if (draining)
            break;
        if (stopping(r)) {
            /* One more round publishes the last commits, once readable. */
            es_watermark_wait(r->ctx->watermark, es_watermark_local_commit(r->ctx->watermark) - 1, 2000);
            draining = true;
        } else
            es_watermark_wait(r->ctx->watermark, r->cursor, es_outbox_idle_ms(r->outbox, TICK_MS));
    }
    es_outbox_flush(r->outbox, pg, true);
    es_lease_release(&r->lease, pg);
    atomic_store(&r->leading, false);
    atomic_store(&r->connected, false);
    pthread_mutex_lock(&r->bus_mu);
    r->bus = NULL;
    pthread_mutex_unlock(&r->bus_mu);
    ordo_bus_destroy(bus);
    return NULL;
}

/* host:pid:random — unique among the instances sharing a database. */
static const char *holder_name(char *out, size_t cap)
{
    char host[64] = "?", id[ORDO_UUID_LEN];
    gethostname(host, sizeof host - 1);
    ordo_uuid_v4(id);
    snprintf(out, cap, "%s:%d:%.8s", host, (int)getpid(), id);
    return out;
}

/* The one cleanup: what es_relay_create made, once the thread is gone (or never ran). */
static void relay_free(es_relay_t *r)
{
    es_handover_destroy(r->handover);   /* what it holds is in the outbox: the next start publishes it */
    es_reconciler_destroy(r->reconciler);
    free(r->ring_seq);
    free(r->ring_pos);
    es_outbox_destroy(r->outbox);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->bus_mu);
    ordo_pg_destroy(r->pg);
    free(r->acked);
    free(r->rejected);
    free(r->taken);
    free(r);
}

ordo_status es_relay_create(es_ctx_t *ctx, es_relay_t **out, ordo_error_t *err)
{
    char holder[128];
    es_relay_t *r = calloc(1, sizeof *r);
    size_t batch = (size_t)ctx->cfg->relay_batch;

    *out = NULL;
    if (r == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->bus_mu, NULL);
    atomic_init(&r->connected, false);
    atomic_init(&r->leading, false);
    r->ctx = ctx;
    r->limits = (ordo_stream_limits_t){.max_age_s = ctx->cfg->stream_max_age_s,
                                       .max_bytes = (int64_t)ctx->cfg->stream_max_mb << 20};
    es_lease_init(&r->lease, holder_name(holder, sizeof holder), ctx->cfg->relay_lease_ms);
    /* What the relay writes is bookkeeping that may be lost in a database
     * crash without harm: outbox rows deleted after their PubAck come back
     * and go out again (JetStream drops them by id), a set-aside is redone,
     * a lease renewal is retried. So its commits do not wait for the WAL
     * flush, and do not queue the writers' flushes behind theirs. */
    if (ordo_pg_create(ctx->cfg->database_url, "eventstore relay", "SET synchronous_commit = off", &r->pg, err) !=
            ORDO_OK ||
        (r->acked = calloc(batch, sizeof *r->acked)) == NULL ||
        (r->rejected = calloc(batch, sizeof *r->rejected)) == NULL ||
        (r->taken = calloc(batch, sizeof *r->taken)) == NULL ||
        (r->handover = es_handover_create(OFFER_CAP)) == NULL ||
        (r->reconciler = es_reconciler_create(ctx->cfg)) == NULL ||
        (r->ring_seq = calloc(ACK_RING, sizeof *r->ring_seq)) == NULL ||
        (r->ring_pos = calloc(ACK_RING, sizeof *r->ring_pos)) == NULL ||
        (r->outbox = es_outbox_create(ctx->cfg->relay_batch, &ctx->stats)) == NULL) {
        relay_free(r);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    if (pthread_create(&r->thread, NULL, relay_thread, r) != 0) {
        relay_free(r);
        return ordo_error_set(err, ORDO_INTERNAL, "cannot start the relay thread");
    }
    ordo_thread_name(r->thread, "es-relay", -1);
    *out = r;
    return ORDO_OK;
}

void es_relay_rescan(es_relay_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->rescan = true;
    pthread_mutex_unlock(&r->mu);
}

bool es_relay_leading(es_relay_t *r)
{
    return r != NULL && atomic_load(&r->leading);
}

int64_t es_relay_backlog(es_relay_t *r)
{
    int64_t to, mark;

    if (!es_relay_leading(r) || (to = atomic_load(&r->published_to)) <= 0)
        return 0;
    mark = es_watermark_get(r->ctx->watermark);
    return mark > to ? mark - to : 0;
}

bool es_relay_connected(es_relay_t *r)
{
    return r != NULL && atomic_load(&r->connected);
}

typedef struct lags {
    ordo_bus_lag_t **out;
    size_t *n;
} lags_t;

static ordo_status read_lags(ordo_bus_t *bus, void *arg, ordo_error_t *err)
{
    lags_t *l = arg;
    return ordo_bus_lags(bus, l->out, l->n, err);
}

ordo_status es_relay_lags(es_relay_t *r, ordo_bus_lag_t **out, size_t *n, ordo_error_t *err)
{
    *out = NULL;
    *n = 0;
    return es_relay_with_bus(r, read_lags, &(lags_t){out, n}, err);
}

ordo_status es_relay_with_bus(es_relay_t *r, es_bus_fn fn, void *arg, ordo_error_t *err)
{
    ordo_status st;

    if (r == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "the relay is off");
    pthread_mutex_lock(&r->bus_mu);
    st = r->bus != NULL ? fn(r->bus, arg, err) : ordo_error_set(err, ORDO_UNAVAILABLE, "no connection to NATS");
    pthread_mutex_unlock(&r->bus_mu);
    return st;
}

void es_relay_destroy(es_relay_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    relay_free(r);
}
