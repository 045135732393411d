/*
 * ordo_json_check: a JSON checker that builds nothing. It takes what
 * RFC 8259 and PostgreSQL's jsonb both take (the event store stores
 * event_data as jsonb, and a document the database refused would fail a
 * whole group commit): valid UTF-8 without NUL, no \u0000, UTF-16
 * surrogates only in pairs, numbers of any length within numeric's range
 * (131,072 digits before the point, 16,383 after), at most MAX_DEPTH levels
 * of nesting; and, by our own rule, no key twice in one object. Only object
 * keys are decoded (into one arena, for the duplicate check when their
 * object closes); everything else is scanned in place.
 */
#define _GNU_SOURCE   /* qsort_r */
#include "ordo/json.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/buf.h"

enum {
    MAX_DEPTH = 2048,
    NUMERIC_MAX_INT_DIGITS = 131072,   /* PostgreSQL numeric, before the point */
    NUMERIC_MAX_SCALE = 16383,         /* and after it */
    EXP_CAP = 1000000,                 /* exponents are counted up to this */
};

typedef struct key_ref {
    size_t off, len;     /* the decoded key in checker.keys */
    size_t at;           /* its offset in the input, for the error */
} key_ref_t;

typedef struct frame {
    bool object;
    size_t first_key;    /* this object's keys are refs[first_key..n_refs) */
    size_t keys_mark;    /* checker.keys.len when it opened */
} frame_t;

typedef struct checker {
    const unsigned char *start, *p, *end;
    frame_t *frames;
    int depth, cap_frames;
    ordo_buf_t keys;
    key_ref_t *refs;
    size_t n_refs, cap_refs;
    const char *why;     /* the reason, once something is wrong */
    size_t why_at;       /* and where */
} checker_t;

/* The offset of the first byte that is not well-formed UTF-8 (or is NUL); @p len if none. */
static size_t utf8_bad_at(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p, min;
        size_t n, i;
        if (c < 0x80) {
            if (c == 0)
                break;
            p++;
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            n = 1, min = 0x80, c &= 0x1f;
        else if ((c & 0xf0) == 0xe0)
            n = 2, min = 0x800, c &= 0x0f;
        else if ((c & 0xf8) == 0xf0)
            n = 3, min = 0x10000, c &= 0x07;
        else
            break;
        if ((size_t)(end - p) <= n)
            break;
        for (i = 1; i <= n && (p[i] & 0xc0) == 0x80; i++)
            c = (c << 6) | (p[i] & 0x3f);
        if (i <= n || c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            break;
        p += n + 1;
    }
    return (size_t)(p - (const unsigned char *)s);
}

static bool fail(checker_t *c, const unsigned char *at, const char *why)
{
    c->why = why;
    c->why_at = (size_t)(at - c->start);
    return false;
}

static void skip_space(checker_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = p[i] >= '0' && p[i] <= '9' ? p[i] - '0'
              : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
              : p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Appends code point @p cp as UTF-8 to @p b. */
static void put_utf8(ordo_buf_t *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3f)), u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3f)), u[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    }
    ordo_buf_append(b, u, n);
}

/* One \uXXXX escape (a surrogate pair as one) at c->p (after the backslash
 * and 'u'); its code point in *cp. */
static bool unicode_escape(checker_t *c, const unsigned char *esc, unsigned *cp)
{
    int hi, lo;
    if (c->end - c->p < 4 || (hi = hex4(c->p)) < 0)
        return fail(c, esc, "\\u needs four hex digits");
    c->p += 4;
    if (hi == 0)
        return fail(c, esc, "\\u0000 is not allowed (PostgreSQL's jsonb cannot store it)");
    if (hi >= 0xdc00 && hi <= 0xdfff)
        return fail(c, esc, "a low surrogate without a high one before it");
    if (hi >= 0xd800 && hi <= 0xdbff) {
        if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || (lo = hex4(c->p + 2)) < 0 || lo < 0xdc00 ||
            lo > 0xdfff)
            return fail(c, esc, "a high surrogate without a low one after it");
        c->p += 6;
        *cp = 0x10000 + (((unsigned)hi - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
        return true;
    }
    *cp = (unsigned)hi;
    return true;
}

/* The string at c->p (on its opening quote); decoded into @p into unless NULL. */
static bool string(checker_t *c, ordo_buf_t *into)
{
    const unsigned char *open = c->p++, *run = c->p;
    static const char simple[] = "\"\\/bfnrt", as[] = "\"\\/\b\f\n\r\t";

    while (c->p < c->end) {
        unsigned char ch = *c->p;
        if (ch == '"') {
            if (into)
                ordo_buf_append(into, (const char *)run, (size_t)(c->p - run));
            c->p++;
            return true;
        }
        if (ch < 0x20)
            return fail(c, c->p, "a control character in a string must be escaped");
        if (ch != '\\') {
            c->p++;
            continue;
        }
        if (into)
            ordo_buf_append(into, (const char *)run, (size_t)(c->p - run));
        const unsigned char *esc = c->p++;
        if (c->p >= c->end)
            break;
        const char *k = *c->p != '\0' ? strchr(simple, *c->p) : NULL;
        if (k != NULL) {
            if (into)
                ordo_buf_append(into, &as[k - simple], 1);
            c->p++;
        } else if (*c->p == 'u') {
            unsigned cp;
            c->p++;
            if (!unicode_escape(c, esc, &cp))
                return false;
            if (into)
                put_utf8(into, cp);
        } else {
            return fail(c, esc, "an unknown escape in a string");
        }
        run = c->p;
    }
    return fail(c, open, "a string without its closing quote");
}

static bool literal(checker_t *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return fail(c, c->p, "a value was expected (an object, array, string, number, true, false or null)");
    c->p += n;
    return true;
}

/* Counts digits at c->p; in *first_sig the index (from @p base) of the first non-zero one. */
static size_t digits(checker_t *c, size_t base, size_t *first_sig)
{
    size_t n = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (*c->p != '0' && *first_sig == SIZE_MAX)
            *first_sig = base + n;
        c->p++, n++;
    }
    return n;
}

static bool number(checker_t *c)
{
    const unsigned char *at = c->p;
    size_t int_digits, frac_digits = 0, first_sig = SIZE_MAX;
    long exp = 0;

    if (*c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++, int_digits = 1;
    else if ((int_digits = digits(c, 0, &first_sig)) == 0)
        return fail(c, at, "a number needs digits");
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if ((frac_digits = digits(c, int_digits, &first_sig)) == 0)
            return fail(c, at, "a number needs digits after its point");
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        bool neg = false;
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            neg = *c->p++ == '-';
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return fail(c, at, "a number needs digits in its exponent");
        for (; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++)
            if (exp < EXP_CAP)
                exp = exp * 10 + (*c->p - '0');
        if (neg)
            exp = -exp;
    }
    /* numeric's range: digits before the point and after it (its scale) */
    if (first_sig != SIZE_MAX && (long)int_digits - (long)first_sig + exp > NUMERIC_MAX_INT_DIGITS)
        return fail(c, at, "a number too large for PostgreSQL's numeric");
    if ((long)frac_digits - exp > NUMERIC_MAX_SCALE)
        return fail(c, at, "a number with more digits after its point than PostgreSQL's numeric keeps");
    return true;
}

static bool push(checker_t *c, bool object)
{
    if (c->depth == MAX_DEPTH)
        return fail(c, c->p, "nested deeper than 2048 levels");
    if (c->depth == c->cap_frames) {
        int cap = c->cap_frames ? c->cap_frames * 2 : 16;
        frame_t *f = realloc(c->frames, (size_t)cap * sizeof *f);
        if (f == NULL)
            return fail(c, c->p, "out of memory");
        c->frames = f, c->cap_frames = cap;
    }
    c->frames[c->depth++] = (frame_t){object, c->n_refs, c->keys.len};
    c->p++;
    return true;
}

static int key_cmp(const void *a, const void *b, void *arg)
{
    const key_ref_t *x = a, *y = b;
    const char *base = arg != NULL ? arg : "";   /* no key has a byte yet */
    int r = memcmp(base + x->off, base + y->off, x->len < y->len ? x->len : y->len);
    return r != 0 ? r : (x->len > y->len) - (x->len < y->len);
}

/* Closes the innermost container; an object's keys must be distinct. */
static bool pop(checker_t *c)
{
    frame_t *f = &c->frames[--c->depth];
    size_t n = c->n_refs - f->first_key;

    if (f->object && n > 1) {
        key_ref_t *k = c->refs + f->first_key;   /* (refs is NULL until a key is seen: no offset on it before) */
        if (ordo_buf_failed(&c->keys))
            return fail(c, c->p, "out of memory");
        qsort_r(k, n, sizeof *k, key_cmp, c->keys.data);
        for (size_t i = 1; i < n; i++)
            if (key_cmp(&k[i - 1], &k[i], c->keys.data) == 0)
                return fail(c, c->start + (k[i - 1].at > k[i].at ? k[i - 1].at : k[i].at), "a key twice in one object");
    }
    c->n_refs = f->first_key;
    ordo_buf_truncate(&c->keys, f->keys_mark);
    c->p++;
    return true;
}

/* An object's key and its colon, at c->p. */
static bool key(checker_t *c)
{
    key_ref_t r;
    skip_space(c);
    r = (key_ref_t){c->keys.len, 0, (size_t)(c->p - c->start)};
    if (c->p >= c->end || *c->p != '"')
        return fail(c, c->p, "an object key (a string) was expected");
    if (!string(c, &c->keys))
        return false;
    r.len = c->keys.len - r.off;
    if (c->n_refs == c->cap_refs) {
        size_t cap = c->cap_refs ? c->cap_refs * 2 : 32;
        key_ref_t *refs = realloc(c->refs, cap * sizeof *refs);
        if (refs == NULL)
            return fail(c, c->p, "out of memory");
        c->refs = refs, c->cap_refs = cap;
    }
    c->refs[c->n_refs++] = r;
    skip_space(c);
    if (c->p >= c->end || *c->p != ':')
        return fail(c, c->p, "a colon after the object key was expected");
    c->p++;
    return true;
}

/* One value at c->p; a container is only opened (ordo_json_check's loop reads on). */
static bool value(checker_t *c)
{
    skip_space(c);
    if (c->p >= c->end)
        return fail(c, c->p, "a value was expected, the text ended");
    switch (*c->p) {
    case '{': return push(c, true);
    case '[': return push(c, false);
    case '"': return string(c, NULL);
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    default:
        if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
            return number(c);
        return fail(c, c->p, "a value was expected (an object, array, string, number, true, false or null)");
    }
}

/* After a value (or an opening bracket, @p opened): what follows it in the
 * innermost container, until a new value is due. Returns false on an error,
 * *done when the whole document has been read. */
static bool after(checker_t *c, bool opened, bool *done)
{
    for (;;) {
        frame_t *f;
        skip_space(c);
        if (c->depth == 0) {
            *done = true;
            return c->p == c->end || fail(c, c->p, "text after the document's one value");
        }
        f = &c->frames[c->depth - 1];
        if (c->p >= c->end)
            return fail(c, c->p, f->object ? "an object without its closing }" : "an array without its closing ]");
        if (*c->p == (f->object ? '}' : ']')) {
            if (!pop(c))
                return false;
            opened = false;
            continue;
        }
        if (opened)
            return f->object ? key(c) : true;
        if (*c->p != ',')
            return fail(c, c->p, f->object ? "a comma or } was expected" : "a comma or ] was expected");
        c->p++;
        return f->object ? key(c) : true;
    }
}

ordo_status ordo_json_check(const char *data, size_t len, ordo_error_t *err)
{
    checker_t c = {(const unsigned char *)data, (const unsigned char *)data, (const unsigned char *)data + len,
                   NULL, 0, 0, ORDO_BUF_INIT, NULL, 0, 0, NULL, 0};
    size_t bad = utf8_bad_at(data, len);
    bool ok, done = false;
    ordo_status st = ORDO_OK;

    if (bad < len) {
        ok = fail(&c, c.start + bad, "not well-formed UTF-8, or a NUL byte");
    } else {
        do {
            int depth = c.depth;
            ok = value(&c) && after(&c, c.depth > depth, &done);
        } while (ok && !done);
    }
    if (!ok) {
        int line = 1, col = 1;
        for (size_t i = 0; i < c.why_at; i++, col++)
            if (data[i] == '\n')
                line++, col = 0;
        st = ordo_error_set(err, ORDO_INVALID, "not valid JSON at line %d column %d: %s", line, col, c.why);
    }
    free(c.frames);
    free(c.refs);
    ordo_buf_free(&c.keys);
    return st;
}

bool ordo_utf8_valid(const char *s, size_t len)
{
    return utf8_bad_at(s, len) == len;
}
