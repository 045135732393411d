/**
 * @file buf.h
 * A growable byte buffer for building SQL array literals, JSON and HTTP
 * bodies. Always NUL-terminated. Not thread-safe. Allocation failure is
 * sticky: the buffer stops growing and ordo_buf_failed() reports it.
 */
#ifndef ORDO_BUF_H
#define ORDO_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ordo_buf {
    char *data;     /**< owned; NULL until the first append */
    size_t len;
    size_t cap;
    bool failed;
} ordo_buf_t;

#define ORDO_BUF_INIT {NULL, 0, 0, false}

void ordo_buf_append(ordo_buf_t *b, const char *data, size_t len);
void ordo_buf_puts(ordo_buf_t *b, const char *s);
void ordo_buf_printf(ordo_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Appends @p s as a JSON string literal (quoted, escaped). */
void ordo_buf_json_string(ordo_buf_t *b, const char *s, size_t len);
/** Appends @p s as one element of a PostgreSQL array literal (quoted, escaped). */
void ordo_buf_pg_array_elem(ordo_buf_t *b, const char *s, size_t len);

/* A PostgreSQL array literal ("{...}", a text parameter for $n::type[]):
 * begin (empties the buffer), add elements, end. */
void ordo_buf_pg_array_begin(ordo_buf_t *b);
void ordo_buf_pg_array_text(ordo_buf_t *b, const char *s);
void ordo_buf_pg_array_int(ordo_buf_t *b, long long v);
void ordo_buf_pg_array_end(ordo_buf_t *b);
/** Empties the buffer, keeping its memory. */
void ordo_buf_reset(ordo_buf_t *b);
/** Shortens the text to its first @p len bytes (nothing when it is not longer). */
void ordo_buf_truncate(ordo_buf_t *b, size_t len);
/** The text ("" when empty). */
const char *ordo_buf_str(const ordo_buf_t *b);
bool ordo_buf_failed(const ordo_buf_t *b);
/** Frees the memory. */
void ordo_buf_free(ordo_buf_t *b);

#endif
