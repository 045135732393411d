#include "ordo/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/bus.h"

static const char *header(natsMsg *m, const char *key)
{
    const char *v = NULL;
    return natsMsgHeader_Get(m, key, &v) == NATS_OK && v != NULL ? v : "";
}

static int64_t header_int(natsMsg *m, const char *key)
{
    const char *v = header(m, key);
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
    ev->event_id = header(m, ORDO_HDR_EVENT_ID);
    ev->event_type = header(m, ORDO_HDR_EVENT_TYPE);
    ev->aggregate_id = header(m, ORDO_HDR_AGGREGATE_ID);
    ev->aggregate_type = header(m, ORDO_HDR_AGGREGATE_TYPE);
    ev->correlation_id = header(m, ORDO_HDR_CORRELATION_ID);
    ev->version = strtoll(header(m, ORDO_HDR_VERSION), NULL, 10);
    ev->position = strtoll(header(m, ORDO_HDR_POSITION), NULL, 10);
    ev->created_at = strtoll(header(m, ORDO_HDR_CREATED_AT), NULL, 10);
    ev->data = natsMsg_GetData(m) != NULL ? natsMsg_GetData(m) : "";
    ev->data_len = natsMsg_GetDataLength(m);
    ev->delivered = 1;
    ev->round = 1;
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
