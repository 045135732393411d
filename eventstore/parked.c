/*
 * The admin calls over the PARKED stream (docs/reliability.md, "Parking"):
 * ListParked shows what the consumers gave up on, with why; ReplayParked
 * publishes each selected message again on EVENTS for the durable that
 * parked it alone (Ordo-Replay-For: the others acknowledge it unread; its
 * handlers are idempotent) and then removes it from PARKED. Both run on a
 * reader thread with the relay's NATS connection (es_relay_with_bus) and
 * look at a bounded number of sequences per call.
 */
#include <stdlib.h>
#include <string.h>

#include "es.h"
#include "ordo/envelope.h"
#include "ordo/log.h"

enum {
    LIST_DEFAULT = 100,       /* messages per ListParked page when the request says 0 */
    LIST_MAX = 1000,          /* and at most */
    SCAN_MAX = 10000,         /* sequences one call looks at (deleted ones included) */
    REPLAY_WAIT_MS = 5000,    /* JetStream's acknowledgement of a replayed copy */
};


/* The range of sequences PARKED holds: [*first, *last]; both 0 when empty. */
static ordo_status parked_range(ordo_bus_t *bus, uint64_t *first, uint64_t *last, ordo_error_t *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, ordo_bus_js(bus), ORDO_PARKED_STREAM, NULL, &jerr);

    *first = *last = 0;
    if (s != NATS_OK)
        return ordo_status_of_nats(s, jerr, "cannot read the " ORDO_PARKED_STREAM " stream", err);
    if (si->State.Msgs > 0) {
        *first = si->State.FirstSeq;
        *last = si->State.LastSeq;
    }
    jsStreamInfo_Destroy(si);
    return ORDO_OK;
}

/* The parked message at @p seq in *@p out when there is one for @p durable
 * ("" = any); ORDO_NOT_FOUND when the sequence is gone or another's. */
static ordo_status parked_at(ordo_bus_t *bus, uint64_t seq, const char *durable, natsMsg **out, ordo_error_t *err)
{
    jsErrCode jerr = 0;
    natsStatus s = js_GetMsg(out, ordo_bus_js(bus), ORDO_PARKED_STREAM, seq, NULL, &jerr);

    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
        return ordo_error_set(err, ORDO_NOT_FOUND, "no parked message %llu", (unsigned long long)seq);
    if (s != NATS_OK)
        return ordo_status_of_nats(s, jerr, "cannot read a parked message", err);
    if (durable[0] != '\0' && strcmp(ordo_envelope_header(*out, ORDO_HDR_PARKED_DURABLE), durable) != 0) {
        natsMsg_Destroy(*out);
        *out = NULL;
        return ordo_error_set(err, ORDO_NOT_FOUND, "parked message %llu is not %s's", (unsigned long long)seq,
                              durable);
    }
    return ORDO_OK;
}

/* ---- ListParked ---- */

typedef struct list_job {
    const Eventstore__ListParkedRequest *req;
    natsMsg **msgs;                    /* the page's messages; the response points into them */
    Eventstore__ParkedMessage *items, **ptrs;
    size_t n;
    uint64_t next_seq;
} list_job_t;

static void describe(natsMsg *m, Eventstore__ParkedMessage *p)
{
    eventstore__parked_message__init(p);
    p->seq = natsMsg_GetSequence(m);
    p->durable = (char *)ordo_envelope_header(m, ORDO_HDR_PARKED_DURABLE);
    p->reason = (char *)ordo_envelope_header(m, ORDO_HDR_PARKED_REASON);
    p->subject = (char *)ordo_envelope_header(m, ORDO_HDR_PARKED_SUBJECT);
    p->stream_seq = strtoull(ordo_envelope_header(m, ORDO_HDR_PARKED_STREAM_SEQ), NULL, 10);
    p->parked_at = strtoll(ordo_envelope_header(m, ORDO_HDR_PARKED_AT), NULL, 10);
    p->event_id = (char *)ordo_envelope_header(m, ORDO_HDR_EVENT_ID_COPY);
    p->event_type = (char *)ordo_envelope_header(m, ORDO_HDR_EVENT_TYPE);
    p->aggregate_id = (char *)ordo_envelope_header(m, ORDO_HDR_AGGREGATE_ID);
    p->position = strtoll(ordo_envelope_header(m, ORDO_HDR_POSITION), NULL, 10);
    p->data.data = (uint8_t *)natsMsg_GetData(m);
    p->data.len = (size_t)natsMsg_GetDataLength(m);
}

static ordo_status list_on_bus(ordo_bus_t *bus, void *arg, ordo_error_t *err)
{
    list_job_t *job = arg;
    size_t limit = job->req->limit <= 0 ? LIST_DEFAULT : job->req->limit > LIST_MAX ? LIST_MAX : (size_t)job->req->limit;
    uint64_t first, last, seq, scanned = 0;
    ordo_status st = parked_range(bus, &first, &last, err);

    if (st != ORDO_OK || last == 0)
        return st;
    if ((job->msgs = calloc(limit, sizeof *job->msgs)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    for (seq = job->req->from_seq > first ? job->req->from_seq : first; seq <= last; seq++) {
        if (job->n == limit || scanned++ == SCAN_MAX) {
            job->next_seq = seq;
            break;
        }
        if ((st = parked_at(bus, seq, job->req->durable, &job->msgs[job->n], err)) == ORDO_OK)
            job->n++;
        else if (st != ORDO_NOT_FOUND)
            return st;
    }
    return ORDO_OK;
}

void es_parked_list(void *vctx, ordo_pg_t *pg, void *call)
{
    es_ctx_t *ctx = vctx;
    (void)pg;   /* (JetStream, not the database) */
    Eventstore__ListParkedResponse resp = EVENTSTORE__LIST_PARKED_RESPONSE__INIT;
    list_job_t job = {.req = (const Eventstore__ListParkedRequest *)ordo_grpc_call_request(call)};
    ordo_error_t err;
    ordo_status st = es_relay_with_bus(ctx->relay, list_on_bus, &job, &err);

    if (st == ORDO_OK && job.n > 0 &&
        ((job.items = calloc(job.n, sizeof *job.items)) == NULL || (job.ptrs = calloc(job.n, sizeof *job.ptrs)) == NULL))
        st = ordo_error_set(&err, ORDO_NO_MEMORY, "out of memory");
    for (size_t i = 0; st == ORDO_OK && i < job.n; i++) {
        describe(job.msgs[i], &job.items[i]);
        job.ptrs[i] = &job.items[i];
    }
    resp.messages = job.ptrs;
    resp.n_messages = st == ORDO_OK ? job.n : 0;
    resp.next_seq = job.next_seq;
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
    for (size_t i = 0; i < job.n; i++)
        natsMsg_Destroy(job.msgs[i]);
    free(job.msgs);
    free(job.items);
    free(job.ptrs);
}

/* ---- ReplayParked ---- */

typedef struct replay_job {
    const Eventstore__ReplayParkedRequest *req;
    int64_t replayed;
} replay_job_t;

/* Publishes the parked message @p m (at @p seq) again and removes it from PARKED. */
static ordo_status replay_one(ordo_bus_t *bus, natsMsg *m, uint64_t seq, ordo_error_t *err)
{
    natsMsg *copy = NULL;
    jsPubOptions po;
    jsErrCode jerr = 0;
    natsStatus s = ordo_envelope_replay_copy(m, &copy);
    bool deleted = false;

    if (s != NATS_OK)
        return ordo_error_set(err, ORDO_INVALID, "parked message %llu has no subject or durable to replay to",
                              (unsigned long long)seq);
    jsPubOptions_Init(&po);
    po.MaxWait = REPLAY_WAIT_MS;
    s = js_PublishMsg(NULL, ordo_bus_js(bus), copy, &po, &jerr);
    natsMsg_Destroy(copy);
    if (s != NATS_OK)
        return ordo_status_of_nats(s, jerr, "cannot publish the replay", err);
    /* published: a failed delete only leaves it parked too (a second replay is harmless) */
    s = js_DeleteMsg(ordo_bus_js(bus), ORDO_PARKED_STREAM, seq, NULL, &jerr);
    deleted = s == NATS_OK;
    ORDO_INFO("parked message replayed", "seq=%llu durable=%s event_id=%s removed=%s", (unsigned long long)seq,
              ordo_envelope_header(m, ORDO_HDR_PARKED_DURABLE), ordo_envelope_header(m, ORDO_HDR_EVENT_ID_COPY), deleted ? "yes" : "no");
    return ORDO_OK;
}

static ordo_status replay_on_bus(ordo_bus_t *bus, void *arg, ordo_error_t *err)
{
    replay_job_t *job = arg;
    uint64_t first, last, scanned = 0;
    ordo_status st = parked_range(bus, &first, &last, err);

    if (st != ORDO_OK)
        return st;
    if (job->req->seq > 0)   /* that one alone: NOT_FOUND when it is gone or another durable's */
        first = last = job->req->seq;
    for (uint64_t seq = first; last > 0 && seq <= last && scanned++ < SCAN_MAX; seq++) {
        natsMsg *m = NULL;
        if ((st = parked_at(bus, seq, job->req->durable, &m, err)) == ORDO_NOT_FOUND && job->req->seq == 0)
            continue;
        if (st == ORDO_OK)
            st = replay_one(bus, m, seq, err);
        natsMsg_Destroy(m);
        if (st != ORDO_OK)
            return st;
        job->replayed++;
    }
    return ORDO_OK;
}

void es_parked_replay(void *vctx, ordo_pg_t *pg, void *call)
{
    es_ctx_t *ctx = vctx;
    (void)pg;
    Eventstore__ReplayParkedResponse resp = EVENTSTORE__REPLAY_PARKED_RESPONSE__INIT;
    replay_job_t job = {.req = (const Eventstore__ReplayParkedRequest *)ordo_grpc_call_request(call)};
    ordo_error_t err;
    ordo_status st = es_relay_with_bus(ctx->relay, replay_on_bus, &job, &err);

    if (st != ORDO_OK && job.replayed > 0) {   /* say how far it got */
        char why[sizeof err.msg];
        memcpy(why, err.msg, sizeof why);
        ordo_error_set(&err, st, "replayed %lld, then: %.400s", (long long)job.replayed, why);
    }
    resp.replayed = job.replayed;
    ordo_grpc_call_finish(call, st, err.msg, st == ORDO_OK ? &resp.base : NULL);
}
