#include "ordo/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(ordo_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1, cap;
    char *grown;

    if (b->failed)
        return false;
    if (need <= b->cap)
        return true;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    grown = realloc(b->data, cap);
    if (grown == NULL) {
        b->failed = true;
        return false;
    }
    b->data = grown;
    b->cap = cap;
    return true;
}

void ordo_buf_append(ordo_buf_t *b, const char *data, size_t len)
{
    if (!reserve(b, len))
        return;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void ordo_buf_puts(ordo_buf_t *b, const char *s)
{
    ordo_buf_append(b, s, strlen(s));
}

void ordo_buf_printf(ordo_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ordo_buf_json_string(ordo_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;

    ordo_buf_append(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (ch == '"')
            esc = "\\\"";
        else if (ch == '\\')
            esc = "\\\\";
        else if (ch == '\n')
            esc = "\\n";
        else if (ch == '\r')
            esc = "\\r";
        else if (ch == '\t')
            esc = "\\t";
        else if (ch < 0x20) {
            memcpy(u, "\\u00", 4);
            u[4] = hex[ch >> 4];
            u[5] = hex[ch & 15];
            u[6] = '\0';
            esc = u;
        }
        if (esc != NULL) {
            ordo_buf_append(b, s + start, i - start);
            ordo_buf_puts(b, esc);
            start = i + 1;
        }
    }
    ordo_buf_append(b, s + start, len - start);
    ordo_buf_append(b, "\"", 1);
}

void ordo_buf_pg_array_elem(ordo_buf_t *b, const char *s, size_t len)
{
    size_t start = 0;

    ordo_buf_append(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            ordo_buf_append(b, s + start, i - start);
            ordo_buf_append(b, "\\", 1);
            start = i;
        }
    }
    ordo_buf_append(b, s + start, len - start);
    ordo_buf_append(b, "\"", 1);
}

void ordo_buf_pg_array_begin(ordo_buf_t *b)
{
    ordo_buf_reset(b);
    ordo_buf_append(b, "{", 1);
}

void ordo_buf_pg_array_text(ordo_buf_t *b, const char *s)
{
    if (b->len > 1)
        ordo_buf_append(b, ",", 1);
    ordo_buf_pg_array_elem(b, s, strlen(s));
}

void ordo_buf_pg_array_int(ordo_buf_t *b, long long v)
{
    ordo_buf_printf(b, "%s%lld", b->len > 1 ? "," : "", v);
}

void ordo_buf_pg_array_end(ordo_buf_t *b)
{
    ordo_buf_append(b, "}", 1);
}

void ordo_buf_reset(ordo_buf_t *b)
{
    b->len = 0;
    b->failed = false;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void ordo_buf_truncate(ordo_buf_t *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

const char *ordo_buf_str(const ordo_buf_t *b)
{
    return b->data != NULL ? b->data : "";
}

bool ordo_buf_failed(const ordo_buf_t *b)
{
    return b->failed;
}

void ordo_buf_free(ordo_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}
