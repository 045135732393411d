/* Checks a CreateEventRequest and turns it into an es_append_t for the writer. */
#include <stdlib.h>
#include <string.h>

#include "es.h"
#include "ordo/buf.h"
#include "ordo/json.h"
#include "ordo/trace.h"
#include "ordo/uuid.h"

enum { MAX_ID_BYTES = 256, MAX_TYPE_BYTES = 128, MAX_METADATA = 32, MAX_META_KEY = 64, MAX_META_VALUE = 1024 };
/* For the write queue's byte bound, an event holds about twice its data and
 * metadata (the request as received and as unpacked) and this beside them. */
enum { EVENT_OVERHEAD_BYTES = 512 };

/* A name that becomes a NATS subject token or a header value: printable, no dot games. */
static ordo_status check_name(const char *what, const char *s, size_t max, bool dotted, int i, ordo_error_t *err)
{
    size_t len = strlen(s);
    if (len == 0)
        return ordo_error_set(err, ORDO_INVALID, "event %d: %s is missing", i, what);
    if (len > max)
        return ordo_error_set(err, ORDO_INVALID, "event %d: %s is %zu bytes, over the limit of %zu", i, what, len, max);
    if (!ordo_utf8_valid(s, len))
        return ordo_error_set(err, ORDO_INVALID, "event %d: %s is not valid UTF-8", i, what);
    for (size_t k = 0; k < len; k++)
        if ((unsigned char)s[k] < 0x20 || s[k] == 0x7f)
            return ordo_error_set(err, ORDO_INVALID, "event %d: %s contains a control character", i, what);
    if (dotted && (s[0] == '.' || s[len - 1] == '.' || strstr(s, "..") != NULL))
        return ordo_error_set(err, ORDO_INVALID, "event %d: %s must not start or end with '.' or contain \"..\"", i, what);
    return ORDO_OK;
}

static bool meta_key_ok(const char *k)
{
    size_t len = strlen(k);
    if (len == 0 || len > MAX_META_KEY)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* The event's metadata as a JSON object; the call's @p traceparent (NULL:
 * none) joins an event that carries none of its own. */
static ordo_status metadata_json(const Eventstore__Event *ev, int i, const char *traceparent, char **out,
                                 ordo_error_t *err)
{
    ordo_buf_t b = ORDO_BUF_INIT;

    *out = NULL;
    if (ev->n_metadata > MAX_METADATA)
        return ordo_error_set(err, ORDO_INVALID, "event %d: %zu metadata entries, over the limit of %d", i, ev->n_metadata, MAX_METADATA);
    ordo_buf_puts(&b, "{");
    for (size_t k = 0; k < ev->n_metadata; k++) {
        const char *key = ev->metadata[k]->key, *val = ev->metadata[k]->value;
        size_t vlen = strlen(val);
        if (!meta_key_ok(key)) {
            ordo_buf_free(&b);
            return ordo_error_set(err, ORDO_INVALID, "event %d: metadata key \"%.64s\" must be 1-%d characters of A-Z a-z 0-9 _ - .", i, key, MAX_META_KEY);
        }
        if (vlen > MAX_META_VALUE || !ordo_utf8_valid(val, vlen) || strpbrk(val, "\r\n") != NULL) {
            ordo_buf_free(&b);
            return ordo_error_set(err, ORDO_INVALID, "event %d: metadata \"%s\" must be valid UTF-8 up to %d bytes, without line breaks", i, key, MAX_META_VALUE);
        }
        for (size_t j = 0; j < k; j++)
            if (strcmp(ev->metadata[j]->key, key) == 0) {
                ordo_buf_free(&b);
                return ordo_error_set(err, ORDO_INVALID, "event %d: metadata key \"%s\" given twice", i, key);
            }
        if (k > 0)
            ordo_buf_puts(&b, ",");
        ordo_buf_json_string(&b, key, strlen(key));
        ordo_buf_puts(&b, ":");
        ordo_buf_json_string(&b, val, vlen);
        if (strcmp(key, "traceparent") == 0)
            traceparent = NULL;   /* the event's own */
    }
    if (traceparent != NULL) {
        ordo_buf_puts(&b, ev->n_metadata > 0 ? ",\"traceparent\":" : "\"traceparent\":");
        ordo_buf_json_string(&b, traceparent, strlen(traceparent));
    }
    ordo_buf_puts(&b, "}");
    if (ordo_buf_failed(&b)) {
        ordo_buf_free(&b);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    *out = b.data;
    return ORDO_OK;
}

static ordo_status check_event(const es_config_t *cfg, const Eventstore__Event *ev, int i, ordo_error_t *err)
{
    ordo_status st;
    size_t len = strlen(ev->event_data);

    if ((st = check_name("aggregate_id", ev->aggregate_id, MAX_ID_BYTES, false, i, err)) != ORDO_OK ||
        (st = check_name("aggregate_type", ev->aggregate_type, MAX_TYPE_BYTES, true, i, err)) != ORDO_OK ||
        (st = check_name("event_type", ev->event_type, MAX_TYPE_BYTES, true, i, err)) != ORDO_OK)
        return st;
    if (ev->event_id[0] != '\0' && !ordo_uuid_valid(ev->event_id))
        return ordo_error_set(err, ORDO_INVALID, "event %d: event_id \"%.64s\" is not a UUID", i, ev->event_id);
    if (len > (size_t)cfg->max_event_bytes)
        return ordo_error_set(err, ORDO_INVALID, "event %d: event_data is %zu bytes, over the limit of %d", i, len, cfg->max_event_bytes);
    if (len == 0)
        return ordo_error_set(err, ORDO_INVALID, "event %d: event_data is missing (a JSON document is required)", i);
    if ((st = ordo_json_check(ev->event_data, len, err)) != ORDO_OK) {
        char why[sizeof err->msg];
        memcpy(why, err->msg, sizeof why);
        return ordo_error_set(err, ORDO_INVALID, "event %d: event_data is %.400s", i, why);
    }
    if (strlen(ev->stream) > MAX_ID_BYTES || !ordo_utf8_valid(ev->stream, strlen(ev->stream)))
        return ordo_error_set(err, ORDO_INVALID, "event %d: stream must be valid UTF-8 up to %d bytes", i, MAX_ID_BYTES);
    return ORDO_OK;
}

void es_append_free(es_append_t *a)
{
    if (a == NULL)
        return;
    if (a->metadata != NULL)
        for (size_t i = 0; i < a->n; i++)
            free(a->metadata[i]);
    free(a->metadata);
    if (a->stored != NULL)
        for (size_t i = 0; i < a->n; i++)
            free(a->stored[i]);
    free(a->stored);
    free(a->ids);
    free(a->positions);
    free(a->created);
    free(a);
}

static void normalise_id(const char *in, char out[37])
{
    for (int k = 0; k < 36; k++)
        out[k] = (in[k] >= 'A' && in[k] <= 'F') ? (char)(in[k] - 'A' + 'a') : in[k];
    out[36] = '\0';
}

ordo_status es_validate_append(const es_config_t *cfg, ordo_grpc_call_t *call,
                               const Eventstore__CreateEventRequest *req, es_append_t **out,
                               ordo_error_t *err)
{
    Eventstore__Event **events = req->events;
    size_t n = req->n_events;
    es_append_t *a;
    char tp[ORDO_TRACEPARENT_LEN];
    ordo_trace_t parsed;
    /* a traceparent in the call's metadata (a well-formed one) goes to every event that has none */
    const char *call_tp = ordo_grpc_call_metadata(call, "traceparent", tp, sizeof tp) && ordo_trace_parse(tp, &parsed)
                              ? tp
                              : NULL;
    ordo_status st = ORDO_OK;

    *out = NULL;
    if (req->event != NULL && n > 0)
        return ordo_error_set(err, ORDO_INVALID, "give either event or events, not both");
    if (req->event != NULL) {
        events = &((Eventstore__CreateEventRequest *)req)->event;
        n = 1;
    }
    if (n == 0)
        return ordo_error_set(err, ORDO_INVALID, "no event given: set event or events");
    if (n > (size_t)cfg->max_batch_events)
        return ordo_error_set(err, ORDO_INVALID, "%zu events in one request, over the limit of %d", n, cfg->max_batch_events);
    if (req->expected_case == EVENTSTORE__CREATE_EVENT_REQUEST__EXPECTED_EXPECTED_VERSION && req->expected_version < 0)
        return ordo_error_set(err, ORDO_INVALID, "expected_version must be 0 or more, got %lld", (long long)req->expected_version);

    a = calloc(1, sizeof *a);
    if (a == NULL || (a->ids = calloc(n, sizeof *a->ids)) == NULL || (a->metadata = calloc(n, sizeof *a->metadata)) == NULL ||
        (a->positions = calloc(n, sizeof *a->positions)) == NULL || (a->created = calloc(n, sizeof *a->created)) == NULL ||
        (a->stored = calloc(n, sizeof *a->stored)) == NULL) {
        es_append_free(a);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    a->call = call;
    a->events = events;
    a->n = n;
    a->expected = req->expected_case == EVENTSTORE__CREATE_EVENT_REQUEST__EXPECTED_EXPECTED_VERSION ? req->expected_version : -1;
    for (size_t i = 0; i < n && st == ORDO_OK; i++) {
        const Eventstore__Event *ev = events[i];
        if ((st = check_event(cfg, ev, (int)i, err)) != ORDO_OK)
            break;
        if (strcmp(ev->aggregate_id, events[0]->aggregate_id) != 0 || strcmp(ev->aggregate_type, events[0]->aggregate_type) != 0)
            st = ordo_error_set(err, ORDO_INVALID, "events of mixed aggregates: event %zu is for %s/%.64s, event 0 for %s/%.64s",
                                i, ev->aggregate_type, ev->aggregate_id, events[0]->aggregate_type, events[0]->aggregate_id);
        else if (ev->event_id[0] == '\0')
            ordo_uuid_v4(a->ids[i]);
        else
            normalise_id(ev->event_id, a->ids[i]);
        for (size_t j = 0; j < i && st == ORDO_OK; j++)
            if (strcmp(a->ids[j], a->ids[i]) == 0)
                st = ordo_error_set(err, ORDO_INVALID, "event_id %s appears twice in the request", a->ids[i]);
        if (st == ORDO_OK && (st = metadata_json(ev, (int)i, call_tp, &a->metadata[i], err)) == ORDO_OK)
            a->bytes += 2 * (strlen(ev->event_data) + strlen(a->metadata[i])) + EVENT_OVERHEAD_BYTES;
    }
    if (st != ORDO_OK) {
        es_append_free(a);
        return st;
    }
    *out = a;
    return ORDO_OK;
}
