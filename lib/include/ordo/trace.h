/**
 * @file trace.h
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the
 * `traceparent` of an order's events. orderapi continues the one a client
 * sends (or starts a trace); each follow-up event is a child of its cause's:
 * the same trace id, a span id of its own, the cause's span as its parent.
 * Stored in each event's metadata, carried in the bus headers.
 */
#ifndef ORDO_TRACE_H
#define ORDO_TRACE_H

#include <stdbool.h>
#include <stdint.h>

#define ORDO_TRACEPARENT_LEN 56   /* "00-" 32 "-" 16 "-" 2, and the NUL */

typedef struct ordo_trace {
    char trace_id[33];   /**< 32 lowercase hex digits, not all zero */
    char span_id[17];    /**< 16 lowercase hex digits, not all zero */
    uint8_t flags;       /**< trace-flags (bit 0: sampled) */
} ordo_trace_t;

/** Parses a version-00 traceparent; false (and @p out untouched) when it
 *  is malformed (a receiver then starts a new trace, as the spec says). */
bool ordo_trace_parse(const char *traceparent, ordo_trace_t *out);

/** A new trace: random trace and span ids, sampled. */
void ordo_trace_start(ordo_trace_t *out);

/** A child of @p parent (NULL or malformed: a new trace): its trace id and
 *  flags, a new span id. */
void ordo_trace_child(const ordo_trace_t *parent, ordo_trace_t *out);

/** The traceparent header of @p t. */
void ordo_trace_format(const ordo_trace_t *t, char out[ORDO_TRACEPARENT_LEN]);

/** The trace id of a traceparent, "" when it is malformed (for log lines). */
const char *ordo_trace_id_of(const char *traceparent, char out[33]);

#endif
