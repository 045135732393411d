#include "ordo/trace.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static bool hex_field(const char *s, size_t n, bool nonzero)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        any |= s[i] != '0';
    }
    return any || !nonzero;
}

bool ordo_trace_parse(const char *tp, ordo_trace_t *out)
{
    unsigned flags;

    /* version 00: exactly 00-<32>-<16>-<2>; ids lowercase hex and not all zero */
    if (tp == NULL || strlen(tp) != ORDO_TRACEPARENT_LEN - 1 || strncmp(tp, "00-", 3) != 0 || tp[35] != '-' ||
        tp[52] != '-' || !hex_field(tp + 3, 32, true) || !hex_field(tp + 36, 16, true) || !hex_field(tp + 53, 2, false))
        return false;
    sscanf(tp + 53, "%2x", &flags);
    memcpy(out->trace_id, tp + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->span_id, tp + 36, 16);
    out->span_id[16] = '\0';
    out->flags = (uint8_t)flags;
    return true;
}

/* @p n random bytes as 2n hex digits, not all zero. */
static void random_hex(char *out, size_t n)
{
    unsigned char b[16] = {0};
    bool any = false;

    while (!any) {
        if (getrandom(b, n, 0) != (ssize_t)n)
            b[0] = 1;   /* (no entropy: still a valid, non-zero id) */
        for (size_t i = 0; i < n; i++)
            any |= b[i] != 0;
    }
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

void ordo_trace_start(ordo_trace_t *out)
{
    random_hex(out->trace_id, 16);
    random_hex(out->span_id, 8);
    out->flags = 1;
}

void ordo_trace_child(const ordo_trace_t *parent, ordo_trace_t *out)
{
    if (parent == NULL) {
        ordo_trace_start(out);
        return;
    }
    memcpy(out->trace_id, parent->trace_id, sizeof out->trace_id);
    out->flags = parent->flags;
    random_hex(out->span_id, 8);
}

void ordo_trace_format(const ordo_trace_t *t, char out[ORDO_TRACEPARENT_LEN])
{
    snprintf(out, ORDO_TRACEPARENT_LEN, "00-%s-%s-%02x", t->trace_id, t->span_id, t->flags);
}

const char *ordo_trace_id_of(const char *traceparent, char out[33])
{
    ordo_trace_t t;
    out[0] = '\0';
    if (ordo_trace_parse(traceparent, &t))
        memcpy(out, t.trace_id, 33);
    return out;
}
