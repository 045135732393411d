#include "ordo/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/bus.h"
#include "ordo/uuid.h"

const char *ordo_envelope_header(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK && v != NULL ? v : "";
}


/* The event id @p m carries: Ordo-Event-Id on a parked, replayed or
 * re-driven copy, else its Nats-Msg-Id. */
static const char *event_id_of(natsMsg *m)
{
    const char *id = ordo_envelope_header(m, ORDO_HDR_EVENT_ID_COPY);
    return *id != '\0' ? id : ordo_envelope_header(m, ORDO_HDR_EVENT_ID);
}

static int64_t header_int(natsMsg *m, const char *key)
{
    const char *v = ordo_envelope_header(m, key);
    return *v != '\0' ? strtoll(v, NULL, 10) : -1;
}

static void set_int(natsMsg *m, const char *key, int64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%lld", (long long)v);
    natsMsgHeader_Set(m, key, num);
}

/* The header that carries metadata key @p k. */
static void meta_header(const char *k, char *name, size_t cap)
{
    if (strcmp(k, "correlation_id") == 0)
        snprintf(name, cap, "%s", ORDO_HDR_CORRELATION_ID);
    else if (strcmp(k, "causation_id") == 0)
        snprintf(name, cap, "%s", ORDO_HDR_CAUSATION_ID);
    else if (strcmp(k, "traceparent") == 0 || strcmp(k, "tracestate") == 0)
        snprintf(name, cap, "%s", k);
    else
        snprintf(name, cap, ORDO_HDR_META_PREFIX "%s", k);
}

natsStatus ordo_envelope_encode(const Eventstore__Event *ev, natsMsg **out)
{
    char subject[300];
    natsMsg *msg = NULL;
    natsStatus s;

    if (!ordo_bus_subject(subject, sizeof subject, ev->aggregate_type, ev->event_type))
        return NATS_INVALID_SUBJECT;
    s = natsMsg_Create(&msg, subject, NULL, ev->event_data, (int)strlen(ev->event_data));
    if (s != NATS_OK)
        return s;
    natsMsgHeader_Set(msg, ORDO_HDR_EVENT_ID, ev->event_id);
    natsMsgHeader_Set(msg, ORDO_HDR_EVENT_TYPE, ev->event_type);
    natsMsgHeader_Set(msg, ORDO_HDR_AGGREGATE_ID, ev->aggregate_id);
    natsMsgHeader_Set(msg, ORDO_HDR_AGGREGATE_TYPE, ev->aggregate_type);
    set_int(msg, ORDO_HDR_VERSION, ev->version);
    set_int(msg, ORDO_HDR_POSITION, ev->position);
    set_int(msg, ORDO_HDR_CREATED_AT, ev->created_at);
    if (ev->stream[0] != '\0')
        natsMsgHeader_Set(msg, ORDO_HDR_STREAM, ev->stream);
    for (size_t i = 0; i < ev->n_metadata; i++) {
        char name[96];
        meta_header(ev->metadata[i]->key, name, sizeof name);
        natsMsgHeader_Set(msg, name, ev->metadata[i]->value);
    }
    *out = msg;
    return NATS_OK;
}

void ordo_envelope_decode(natsMsg *m, ordo_bus_event_t *ev)
{
    ev->event_id = event_id_of(m);
    ev->event_type = ordo_envelope_header(m, ORDO_HDR_EVENT_TYPE);
    ev->aggregate_id = ordo_envelope_header(m, ORDO_HDR_AGGREGATE_ID);
    ev->aggregate_type = ordo_envelope_header(m, ORDO_HDR_AGGREGATE_TYPE);
    ev->correlation_id = ordo_envelope_header(m, ORDO_HDR_CORRELATION_ID);
    ev->traceparent = ordo_envelope_header(m, "traceparent");
    ev->tracestate = ordo_envelope_header(m, "tracestate");
    ev->version = strtoll(ordo_envelope_header(m, ORDO_HDR_VERSION), NULL, 10);
    ev->position = strtoll(ordo_envelope_header(m, ORDO_HDR_POSITION), NULL, 10);
    ev->created_at = strtoll(ordo_envelope_header(m, ORDO_HDR_CREATED_AT), NULL, 10);
    ev->data = natsMsg_GetData(m) != NULL ? natsMsg_GetData(m) : "";
    ev->data_len = natsMsg_GetDataLength(m);
    ev->delivered = 1;
    ev->round = 1;
}

const char *ordo_envelope_problem(const ordo_bus_event_t *ev)
{
    if (!ordo_uuid_valid(ev->event_id))
        return "not an Ordo event: no event id (a UUID in Nats-Msg-Id)";
    if (*ev->event_type == '\0')
        return "not an Ordo event: no " ORDO_HDR_EVENT_TYPE;
    if (*ev->aggregate_id == '\0' || *ev->aggregate_type == '\0')
        return "not an Ordo event: no " ORDO_HDR_AGGREGATE_ID " or " ORDO_HDR_AGGREGATE_TYPE;
    if (ev->version < 1 || ev->position < 1)
        return "not an Ordo event: no " ORDO_HDR_VERSION " or " ORDO_HDR_POSITION " of 1 or more";
    return NULL;
}

/* Copies @p from's headers to @p to, but for Nats-* (JetStream's own) and
 * those named @p skip_prefix (NULL: none). */
static natsStatus copy_headers(natsMsg *from, natsMsg *to, const char *skip_prefix)
{
    const char **keys = NULL;
    int n = 0;
    natsStatus s = natsMsgHeader_Keys(from, &keys, &n);

    if (s == NATS_NOT_FOUND)
        return NATS_OK;   /* no headers */
    for (int i = 0; s == NATS_OK && i < n; i++) {
        const char **values = NULL;
        int nv = 0;
        if (strncmp(keys[i], "Nats-", 5) == 0 || (skip_prefix != NULL && strncmp(keys[i], skip_prefix, strlen(skip_prefix)) == 0))
            continue;
        if ((s = natsMsgHeader_Values(from, keys[i], &values, &nv)) == NATS_OK) {
            for (int k = 0; s == NATS_OK && k < nv; k++)
                s = natsMsgHeader_Add(to, keys[i], values[k]);
            free((void *)values);
        }
    }
    free((void *)keys);
    return s;
}

natsStatus ordo_envelope_parked_copy(natsMsg *m, const char *durable, const char *reason, uint64_t stream_seq,
                                     natsMsg **out)
{
    char subject[128], id[160];
    const char *event_id = event_id_of(m);
    natsMsg *copy = NULL;
    natsStatus s;

    snprintf(subject, sizeof subject, ORDO_PARKED_PREFIX "%s", durable);
    snprintf(id, sizeof id, "%s:%llu", durable, (unsigned long long)stream_seq);
    s = natsMsg_Create(&copy, subject, NULL, natsMsg_GetData(m), natsMsg_GetDataLength(m));
    if (s == NATS_OK)
        s = copy_headers(m, copy, NULL);
    if (s == NATS_OK && *event_id != '\0')
        s = natsMsgHeader_Set(copy, ORDO_HDR_EVENT_ID_COPY, event_id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(copy, ORDO_HDR_EVENT_ID, id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(copy, ORDO_HDR_PARKED_REASON, reason);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(copy, ORDO_HDR_PARKED_DURABLE, durable);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(copy, ORDO_HDR_PARKED_SUBJECT, natsMsg_GetSubject(m));
    if (s == NATS_OK) {
        set_int(copy, ORDO_HDR_PARKED_STREAM_SEQ, (int64_t)stream_seq);
        set_int(copy, ORDO_HDR_PARKED_AT, nats_NowInNanoSeconds() / 1000);
        *out = copy;
        return NATS_OK;
    }
    natsMsg_Destroy(copy);
    return s;
}

natsStatus ordo_envelope_fresh_id(natsMsg *m, const char *why)
{
    char id[200];
    const char *event_id = ordo_envelope_header(m, ORDO_HDR_EVENT_ID_COPY);
    natsStatus s = NATS_OK;

    if (*event_id == '\0' && (s = natsMsgHeader_Set(m, ORDO_HDR_EVENT_ID_COPY, event_id_of(m))) == NATS_OK)
        event_id = ordo_envelope_header(m, ORDO_HDR_EVENT_ID_COPY);   /* (the copy: Nats-Msg-Id is replaced below) */
    snprintf(id, sizeof id, "%s:%s:%lld", why, event_id, (long long)(nats_NowInNanoSeconds() / 1000));
    return s == NATS_OK ? natsMsgHeader_Set(m, ORDO_HDR_EVENT_ID, id) : s;
}

natsStatus ordo_envelope_replay_copy(natsMsg *parked, natsMsg **out)
{
    const char *subject = ordo_envelope_header(parked, ORDO_HDR_PARKED_SUBJECT), *durable = ordo_envelope_header(parked, ORDO_HDR_PARKED_DURABLE);
    natsMsg *copy = NULL;
    natsStatus s;

    if (strncmp(subject, "events.", 7) != 0 || *durable == '\0')
        return NATS_INVALID_ARG;
    s = natsMsg_Create(&copy, subject, NULL, natsMsg_GetData(parked), natsMsg_GetDataLength(parked));
    if (s == NATS_OK)
        s = copy_headers(parked, copy, "Ordo-Parked-");
    if (s == NATS_OK)
        s = ordo_envelope_fresh_id(copy, "replay");
    if (s == NATS_OK)
        s = natsMsgHeader_Set(copy, ORDO_HDR_REPLAY_FOR, durable);
    if (s == NATS_OK) {
        *out = copy;
        return NATS_OK;
    }
    natsMsg_Destroy(copy);
    return s;
}

int64_t ordo_envelope_position(natsMsg *m)
{
    return header_int(m, ORDO_HDR_POSITION);
}

int ordo_lane_of(const char *aggregate_id, int n)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)aggregate_id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (int)(h % (uint32_t)n);
}

/* The decimal number of @p tok (up to @p end); false when it is none. */
static bool token_number(const char *tok, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    if (tok == end)
        return false;
    for (const char *p = tok; p < end; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

bool ordo_delivery_of_reply(const char *reply, ordo_delivery_t *out)
{
    enum { MAX_TOKENS = 13 };
    const char *tok[MAX_TOKENS + 1];
    int n = 0, first;

    *out = (ordo_delivery_t){0};
    if (reply == NULL || strncmp(reply, "$JS.ACK.", 8) != 0)
        return false;
    for (const char *p = reply; n < MAX_TOKENS; p++) {
        tok[n++] = p;
        if ((p = strchr(p, '.')) == NULL)
            break;
    }
    tok[n] = reply + strlen(reply) + 1;   /* each token ends one before the next begins */
    if (n == 9)
        first = 4;                        /* $JS.ACK.<stream>.<consumer>.<delivered>... */
    else if (n == 11 || n == 12)
        first = 6;                        /* $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>... */
    else
        return false;
    if (!token_number(tok[first], tok[first + 1] - 1, &out->delivered) ||
        !token_number(tok[first + 1], tok[first + 2] - 1, &out->stream_seq) ||
        !token_number(tok[first + 2], tok[first + 3] - 1, &out->consumer_seq) ||
        !token_number(tok[first + 4], tok[first + 5] - 1, &out->pending)) {
        *out = (ordo_delivery_t){0};
        return false;
    }
    return true;
}
