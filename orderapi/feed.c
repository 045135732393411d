/*
 * GET /api/orders/changes: the read model's changes as Server-Sent Events
 * (docs/orderflow.md, "Live changes").
 *
 * One feed thread polls orderquery's ListChanges (rows by applied_at) and
 * turns each new (order, version) into one frame, kept in a ring of the
 * last --changes-history frames. Every stream is a position in that ring:
 * it is sent what follows its position as fast as its client reads, and a
 * client that falls a whole ring behind is dropped with a reason. Memory is
 * the ring's, whatever the number of streams; no server thread is held
 * while a stream waits (lib/http.c suspends the connection).
 *
 * Rows become visible when their transaction commits, which may be after a
 * newer row was read: every fourth poll looks back --changes-lookback-ms
 * before the newest row seen, and what was already sent (the same order at
 * the same version or older) is dropped by `seen`. A frame's id is
 * "APPLIED_AT-VERSION-ORDER_ID"; a client resumes with Last-Event-ID.
 */
#include "feed.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "order.pb-c.h"
#include "ordo/buf.h"
#include "ordo/log.h"
#include "ordo/retry.h"
#include "ordo/uuid.h"

enum {
    PAGE = 1000,          /* rows asked for in one call */
    MAX_PAGES = 20,       /* pages read in one poll */
    RECENT_MS = 200,      /* the lookback of the three polls in four that do not look back further */
    PING_S = 15,          /* a comment line to every stream this often: a client that left is noticed */
};

#define HELLO "retry: 3000\n: ordo order changes\n\n"

typedef struct frame {
    uint64_t seq;
    int64_t applied_at, version;
    char order_id[ORDO_UUID_LEN];
    char *customer_id;
    char *text;           /* the whole SSE event */
    size_t len;
} frame_t;

/* The last version sent of each order written in the lookback window. */
typedef struct seen_entry {
    char order_id[ORDO_UUID_LEN];   /* "": free */
    int64_t version, applied_at;
} seen_entry_t;

typedef struct seen_map {
    seen_entry_t *slots;
    size_t cap, used;     /* cap a power of two; used at most half of it */
} seen_map_t;

typedef struct sub {
    api_feed_t *feed;
    ordo_http_stream_t *stream;
    uint64_t pos;         /* the next frame to send */
    char *customer;       /* only this customer's orders (NULL: all) */
    char *pending;        /* control lines or a frame's rest, sent first */
    size_t pending_len, pending_off;
    bool ended;           /* nothing after pending: the stream ends */
    bool ping_due;
    struct sub *prev, *next;
} sub_t;

struct api_feed {
    api_ctx_t *api;
    pthread_mutex_t mu;   /* guards everything below */
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stop;
    frame_t *ring;
    size_t cap;
    uint64_t first_seq, next_seq;    /* frames [first_seq, next_seq) are in the ring */
    bool started;                    /* the first poll answered: high and complete_after are known */
    bool failing;                    /* the last poll failed */
    int64_t high;                    /* the newest applied_at read */
    int64_t now;                     /* the database's clock at the last poll */
    bool caught_up;                  /* that poll read every row there was (no budget or page limit stopped it) */
    int64_t complete_after;          /* every row written after this (and committed within the lookback) is or was in the ring */
    seen_map_t seen;
    sub_t *subs;
    int n_subs;
    long long frames_total, dropped_total, reset_total, late_total, poll_failures;
};

/* ------------------------------------------------------------ seen map */

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static seen_entry_t *seen_slot(seen_map_t *m, const char *id)
{
    size_t i = (size_t)hash_id(id) & (m->cap - 1);
    while (m->slots[i].order_id[0] != '\0' && strcmp(m->slots[i].order_id, id) != 0)
        i = (i + 1) & (m->cap - 1);
    return &m->slots[i];
}

/* Rebuilds the map at @p cap slots with the entries written after @p keep_after. */
static bool seen_rebuild(seen_map_t *m, size_t cap, int64_t keep_after)
{
    seen_map_t n = {calloc(cap, sizeof *n.slots), cap, 0};

    if (n.slots == NULL)
        return false;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].order_id[0] != '\0' && m->slots[i].applied_at > keep_after) {
            *seen_slot(&n, m->slots[i].order_id) = m->slots[i];
            n.used++;
        }
    free(m->slots);
    *m = n;
    return true;
}

/* Records that @p id was sent at @p version; false when it was sent at
 * that version or a later one already (or memory ran out: then it is sent
 * again, which a client tells by its version). */
static bool seen_new(seen_map_t *m, const char *id, int64_t version, int64_t applied_at)
{
    seen_entry_t *e;

    if ((m->used + 1) * 2 > m->cap && !seen_rebuild(m, m->cap * 2, INT64_MIN))
        return true;
    e = seen_slot(m, id);
    if (e->order_id[0] != '\0' && e->version >= version)
        return false;
    if (e->order_id[0] == '\0') {
        snprintf(e->order_id, sizeof e->order_id, "%s", id);
        m->used++;
    }
    e->version = version;
    e->applied_at = applied_at;
    return true;
}

/* ---------------------------------------------------------------- ring */

static void frame_clear(frame_t *f)
{
    free(f->customer_id);
    free(f->text);
    memset(f, 0, sizeof *f);
}

static frame_t *frame_at(api_feed_t *f, uint64_t seq)
{
    return &f->ring[seq % f->cap];
}

/* The SSE event of @p o: id, type, and the order without its items. */
static char *frame_text(const Order__Order *o, size_t *len)
{
    json_t *doc = api_order_json(o);
    ordo_buf_t b = ORDO_BUF_INIT;
    char *data;

    if (doc == NULL)
        return NULL;
    json_object_del(doc, "order_items");
    json_object_set_new(doc, "applied_at", json_integer(o->applied_at));
    if ((data = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15))) != NULL)
        ordo_buf_printf(&b, "id: %lld-%lld-%s\nevent: order\ndata: %s\n\n", (long long)o->applied_at,
                        (long long)o->version, o->order_id, data);
    free(data);
    json_decref(doc);
    if (data == NULL || ordo_buf_failed(&b)) {
        ordo_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

/* Appends @p o's frame (caller holds mu); the oldest goes when the ring is full. */
static void ring_push(api_feed_t *f, const Order__Order *o)
{
    frame_t nf = {.seq = f->next_seq, .applied_at = o->applied_at, .version = o->version};

    snprintf(nf.order_id, sizeof nf.order_id, "%s", o->order_id);
    if ((nf.text = frame_text(o, &nf.len)) == NULL || (nf.customer_id = strdup(o->customer_id)) == NULL) {
        frame_clear(&nf);
        ORDO_WARN("order change not streamed: out of memory", "order_id=%s version=%lld", o->order_id,
                  (long long)o->version);
        return;
    }
    if (f->next_seq - f->first_seq == f->cap) {
        frame_t *old = frame_at(f, f->first_seq);
        if (old->applied_at > f->complete_after)
            f->complete_after = old->applied_at;
        frame_clear(old);
        f->first_seq++;
    }
    *frame_at(f, f->next_seq) = nf;
    f->next_seq++;
    f->frames_total++;
}

/* ------------------------------------------------------------- streams */

/* Sets the control lines a stream sends next (caller holds mu). */
static void sub_say(sub_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sub_say(sub_t *s, const char *fmt, ...)
{
    ordo_buf_t b = ORDO_BUF_INIT;
    char line[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (s->pending != NULL)   /* after what is still to go */
        ordo_buf_append(&b, s->pending + s->pending_off, s->pending_len - s->pending_off);
    ordo_buf_append(&b, line, strlen(line));
    if (ordo_buf_failed(&b)) {
        ordo_buf_free(&b);
        return;
    }
    free(s->pending);
    s->pending = b.data;
    s->pending_len = b.len;
    s->pending_off = 0;
}

static size_t copy_pending(sub_t *s, char *buf, size_t max)
{
    size_t n = s->pending_len - s->pending_off;

    if (n > max)
        n = max;
    memcpy(buf, s->pending + s->pending_off, n);
    s->pending_off += n;
    if (s->pending_off == s->pending_len) {
        free(s->pending);
        s->pending = NULL;
    }
    return n;
}

/* What a stream sends next: pending lines, then its frames; the drop
 * notice when the ring moved past it. (The stream source's pull.) */
static long sub_pull(void *ctx, char *buf, size_t max)
{
    sub_t *s = ctx;
    api_feed_t *f = s->feed;
    size_t n = 0;

    pthread_mutex_lock(&f->mu);
    while (n < max) {
        if (s->pending != NULL) {
            n += copy_pending(s, buf + n, max - n);
            continue;
        }
        if (s->ended)
            break;
        if (s->pos < f->first_seq) {   /* the client reads slower than orders change */
            sub_say(s, "event: dropped\ndata: {\"reason\":\"slow_client\",\"message\":\"this client fell %zu changes "
                       "behind; reconnect (with Last-Event-ID) or reload the list\"}\n\n", f->cap);
            s->ended = true;
            f->dropped_total++;
            ORDO_INFO("order changes: slow client dropped", "behind=%zu", f->cap);
            continue;
        }
        if (s->pos == f->next_seq) {
            bool ping = s->ping_due && n == 0;
            s->ping_due = false;   /* (data just sent serves as well) */
            if (!ping)
                break;
            sub_say(s, ": ping\n\n");
            continue;
        }
        frame_t *fr = frame_at(f, s->pos);
        if (s->customer != NULL && strcmp(s->customer, fr->customer_id) != 0) {
            s->pos++;
            continue;
        }
        if (fr->len > max - n && n > 0)   /* whole frames: the next pull sends it */
            break;
        s->pos++;
        if (fr->len <= max - n) {
            memcpy(buf + n, fr->text, fr->len);
            n += fr->len;
        } else if ((s->pending = strdup(fr->text)) != NULL) {   /* larger than a write: its rest is kept */
            s->pending_len = fr->len;
            s->pending_off = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return n > 0 ? (long)n : s->ended ? -1 : 0;
}

static void sub_closed(void *ctx)
{
    sub_t *s = ctx;
    api_feed_t *f = s->feed;

    pthread_mutex_lock(&f->mu);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        f->subs = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    f->n_subs--;
    pthread_mutex_unlock(&f->mu);
    ordo_http_stream_release(s->stream);
    free(s->pending);
    free(s->customer);
    free(s);
}

static const ordo_http_stream_source_t SUB_SOURCE = {sub_pull, sub_closed};

/* Wakes every stream (after new frames, or for a ping). */
static void wake_all(api_feed_t *f, bool ping)
{
    ordo_http_stream_t **all;
    int n = 0;

    pthread_mutex_lock(&f->mu);
    if ((all = calloc((size_t)f->n_subs + 1, sizeof *all)) != NULL)
        for (sub_t *s = f->subs; s != NULL; s = s->next) {
            s->ping_due |= ping;
            ordo_http_stream_hold(s->stream);
            all[n++] = s->stream;
        }
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < n; i++) {   /* (outside mu: a resume may wait on the HTTP library) */
        ordo_http_stream_wake(all[i]);
        ordo_http_stream_release(all[i]);
    }
    free(all);
}

/* Parses "APPLIED_AT-VERSION-ORDER_ID". */
static bool parse_id(const char *id, int64_t *at, int64_t *version, char order_id[ORDO_UUID_LEN])
{
    char *end;

    *at = strtoll(id, &end, 10);
    if (end == id || *end != '-')
        return false;
    id = end + 1;
    *version = strtoll(id, &end, 10);
    if (end == id || *end != '-' || !ordo_uuid_valid(end + 1))
        return false;
    snprintf(order_id, ORDO_UUID_LEN, "%s", end + 1);
    return true;
}

/* Where a stream that last saw @p last_id starts (caller holds mu): after
 * that frame when the ring has it; else after the lookback before it, when
 * the ring holds that far back (a change may come twice: the version tells);
 * else (or before the feed's first poll) at the live end, after a reset
 * notice: the client reloads its list. */
static void sub_place(api_feed_t *f, sub_t *s, const char *last_id, size_t recent)
{
    int64_t at, version, lookback = (int64_t)f->api->cfg->changes_lookback_ms * 1000;
    char order_id[ORDO_UUID_LEN];

    s->pos = f->next_seq;
    if (last_id == NULL) {   /* from now, or the last @p recent the history holds */
        s->pos = f->next_seq - f->first_seq < recent ? f->first_seq : f->next_seq - recent;
        return;
    }
    if (!parse_id(last_id, &at, &version, order_id))
        return;
    /* (before the feed's first poll nothing is known of what the client missed) */
    for (uint64_t q = f->next_seq; f->started && q > f->first_seq; q--) {
        frame_t *fr = frame_at(f, q - 1);
        if (fr->applied_at == at && fr->version == version && strcmp(fr->order_id, order_id) == 0) {
            s->pos = q;
            return;
        }
    }
    if (f->started && at - lookback > f->complete_after) {
        for (s->pos = f->first_seq; s->pos < f->next_seq && frame_at(f, s->pos)->applied_at <= at - lookback;)
            s->pos++;
        return;
    }
    f->reset_total++;
    sub_say(s, "event: reset\ndata: {\"reason\":\"too_old\",\"message\":\"changes after this Last-Event-ID are no "
               "longer held here; reload the list, then follow from now\"}\n\n");
}

ordo_status api_feed_subscribe(api_feed_t *f, const ordo_http_request_t *req, const char *customer,
                               ordo_http_response_t *resp, ordo_error_t *err)
{
    const char *last_id = ordo_http_header(req, "Last-Event-ID"), *recent_s = ordo_http_query(req, "recent");
    long recent = 0;
    int64_t a, v;
    char id[ORDO_UUID_LEN], *end = NULL;
    sub_t *s;
    ordo_status st;

    if (last_id != NULL && !parse_id(last_id, &a, &v, id))
        return ordo_error_set(err, ORDO_INVALID, "Last-Event-ID must be an id this stream sent (APPLIED_AT-VERSION-ORDER_ID)");
    if (recent_s != NULL) {
        recent = strtol(recent_s, &end, 10);
        if (end == recent_s || *end != '\0' || recent < 0 || recent > 1000000)
            return ordo_error_set(err, ORDO_INVALID, "recent must be an integer from 0 to 1000000");
    }
    if ((s = calloc(1, sizeof *s)) == NULL || (customer != NULL && (s->customer = strdup(customer)) == NULL)) {
        free(s);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    s->feed = f;
    if ((st = ordo_http_respond_stream(req, resp, "text/event-stream", &SUB_SOURCE, s, &s->stream, err)) != ORDO_OK) {
        free(s->customer);
        free(s);
        return st;
    }
    /* (the stream is read only once this handler has returned: it joins first) */
    pthread_mutex_lock(&f->mu);
    sub_say(s, HELLO);
    sub_place(f, s, last_id, (size_t)recent);
    s->next = f->subs;
    if (f->subs != NULL)
        f->subs->prev = s;
    f->subs = s;
    f->n_subs++;
    pthread_mutex_unlock(&f->mu);
    return ORDO_OK;
}

/* ---------------------------------------------------------------- poll */

/* One ListChanges call: rows written after @p since. */
static ordo_status list_changes(api_feed_t *f, int64_t since, Order__ListChangesResponse **out, ordo_error_t *err)
{
    Order__ListChangesRequest req = ORDER__LIST_CHANGES_REQUEST__INIT;

    req.since = since;
    req.limit = PAGE;
    return ordo_grpc_client_unary(f->api->query, "/order.OrderQuery/ListChanges", &req.base,
                                  &order__list_changes_response__descriptor, f->api->cfg->timeout_ms,
                                  (ProtobufCMessage **)out, err);
}

/* Takes a page's rows into the ring, oldest first, until @p budget new
 * frames (caller holds mu); the count of new frames. The rows past the
 * budget are read again by the next poll: `high` stops before them. */
static int take_page(api_feed_t *f, const Order__ListChangesResponse *r, size_t budget)
{
    size_t added = 0;

    for (size_t i = 0; i < r->n_orders && added < budget; i++) {
        const Order__Order *o = r->orders[i];
        bool fresh = o->applied_at > f->high;
        if (fresh)
            f->high = o->applied_at;
        if (!seen_new(&f->seen, o->order_id, o->version, o->applied_at))
            continue;
        if (!fresh)
            f->late_total++;   /* committed after a newer row was read: what the lookback is for */
        ring_push(f, o);
        added++;
    }
    return (int)added;
}

/* One poll: pages from @p lookback_us before the newest row seen. */
static ordo_status poll_once(api_feed_t *f, int64_t lookback_us, int *added, ordo_error_t *err)
{
    Order__ListChangesResponse *r = NULL;
    int64_t since;
    ordo_status st = ORDO_OK;

    /* back from the newest row read or, when the last poll read everything
     * there was, from the clock if that is newer: a row made longer ago
     * than the lookback is past waiting for (an idle feed reads nothing) */
    pthread_mutex_lock(&f->mu);
    since = f->started ? (f->caught_up && f->now > f->high ? f->now : f->high) - lookback_us : 0;
    pthread_mutex_unlock(&f->mu);
    if (since <= 0) {   /* the first poll: the database's clock is where the feed starts */
        if ((st = list_changes(f, 0, &r, err)) != ORDO_OK)
            return st;
        pthread_mutex_lock(&f->mu);
        f->high = f->now = r->now;
        f->complete_after = r->now - (int64_t)f->api->cfg->changes_lookback_ms * 1000;
        f->started = true;
        pthread_mutex_unlock(&f->mu);
        order__list_changes_response__free_unpacked(r, NULL);
        return ORDO_OK;
    }
    /* a quarter of the history per poll at most: the streams take it before
     * the next (a burst after an outage is fed in over several polls) */
    for (int page = 0; page < MAX_PAGES; page++) {
        if ((st = list_changes(f, since, &r, err)) != ORDO_OK)
            return st;
        size_t budget = f->cap / 4 - (size_t)*added;
        pthread_mutex_lock(&f->mu);
        int took = take_page(f, r, budget);
        *added += took;
        if (page == 0)
            f->now = r->now;
        /* caught up: the page had all the rows left and the budget took them all */
        f->caught_up = r->n_orders < PAGE && (size_t)took < budget;
        pthread_mutex_unlock(&f->mu);
        bool more = r->n_orders == PAGE && (size_t)took < budget;
        if (more)   /* (rows of the same microsecond may straddle pages: seen drops the repeats) */
            since = r->orders[r->n_orders - 1]->applied_at - 1;
        order__list_changes_response__free_unpacked(r, NULL);
        if (!more)
            break;
    }
    return ORDO_OK;
}

static void *feed_main(void *arg)
{
    api_feed_t *f = arg;
    const api_config_t *cfg = f->api->cfg;
    int64_t lookback = (int64_t)cfg->changes_lookback_ms * 1000;
    double last_ping = ordo_mono_s();
    long tick = 0;

    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        ordo_error_t err;
        int added = 0;

        pthread_mutex_unlock(&f->mu);
        ordo_status st = poll_once(f, tick++ % 4 == 0 ? lookback : RECENT_MS * 1000, &added, &err);
        pthread_mutex_lock(&f->mu);
        if (st != ORDO_OK) {
            f->poll_failures++;
            if (!f->failing)
                ORDO_WARN("order changes: the read model cannot be read; streams wait", "err=\"%s\"", err.msg);
        } else if (f->failing) {
            ORDO_INFO("order changes: the read model is read again", "high=%lld", (long long)f->high);
        }
        f->failing = st != ORDO_OK;
        bool failing = f->failing;
        if (tick % 4 == 1 && f->seen.used > 0)   /* what the lookback can no longer return */
            seen_rebuild(&f->seen, f->seen.cap, f->high - lookback - 1000000);
        pthread_mutex_unlock(&f->mu);
        bool ping = ordo_mono_s() - last_ping >= PING_S;
        if (ping)
            last_ping = ordo_mono_s();
        if (added > 0 || ping)
            wake_all(f, ping);
        pthread_mutex_lock(&f->mu);
        struct timespec until = ordo_deadline_ms(failing ? 1000 : cfg->changes_poll_ms);
        if (!f->stop)
            pthread_cond_timedwait(&f->cv, &f->mu, &until);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

ordo_status api_feed_start(api_ctx_t *api, api_feed_t **out, ordo_error_t *err)
{
    api_feed_t *f = calloc(1, sizeof *f);

    *out = NULL;
    if (f == NULL || (f->ring = calloc((size_t)api->cfg->changes_history, sizeof *f->ring)) == NULL ||
        (f->seen.slots = calloc(1024, sizeof *f->seen.slots)) == NULL) {
        if (f != NULL)
            free(f->ring);
        free(f);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    f->api = api;
    f->cap = (size_t)api->cfg->changes_history;
    f->seen.cap = 1024;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    if (pthread_create(&f->thread, NULL, feed_main, f) != 0) {
        api_feed_destroy(f);
        return ordo_error_set(err, ORDO_UNAVAILABLE, "cannot start the change feed's thread");
    }
    f->running = true;
    *out = f;
    return ORDO_OK;
}

void api_feed_destroy(api_feed_t *f)
{
    if (f == NULL)
        return;
    if (f->running) {
        pthread_mutex_lock(&f->mu);
        f->stop = true;
        pthread_cond_signal(&f->cv);
        pthread_mutex_unlock(&f->mu);
        pthread_join(f->thread, NULL);
    }
    for (uint64_t q = f->first_seq; q < f->next_seq; q++)
        frame_clear(frame_at(f, q));
    free(f->ring);
    free(f->seen.slots);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* Whether the last poll answered (caller holds mu). */
static bool feed_up_locked(const api_feed_t *f)
{
    return f->started && !f->failing;
}

bool api_feed_up(api_feed_t *f)
{
    bool up;

    if (f == NULL)
        return false;
    pthread_mutex_lock(&f->mu);
    up = feed_up_locked(f);
    pthread_mutex_unlock(&f->mu);
    return up;
}

void api_feed_render_metrics(api_feed_t *f, ordo_buf_t *out)
{
    struct {
        const char *name, *type, *help;
        long long value;
    } m[] = {
        {"ordo_changes_feed_up", "gauge", "1 when the change feed's last poll of the read model answered", 0},
        {"ordo_changes_streams", "gauge", "open GET /api/orders/changes streams", 0},
        {"ordo_changes_events_total", "counter", "order changes taken from the read model into the feed", 0},
        {"ordo_changes_dropped_streams_total", "counter",
         "streams ended because their client fell a whole history behind", 0},
        {"ordo_changes_resets_total", "counter",
         "resumes from a Last-Event-ID older than the history held (told to reload)", 0},
        {"ordo_changes_late_rows_total", "counter",
         "changes that committed after a newer one was read (caught by the lookback)", 0},
        {"ordo_changes_poll_failures_total", "counter",
         "polls of the read model that failed (streams wait, nothing is skipped)", 0},
        {"ordo_changes_history", "gauge", "changes held for resuming streams", 0},
    };

    if (f == NULL)
        return;
    pthread_mutex_lock(&f->mu);   /* (one reading of them all) */
    m[0].value = feed_up_locked(f);
    m[1].value = f->n_subs;
    m[2].value = f->frames_total;
    m[3].value = f->dropped_total;
    m[4].value = f->reset_total;
    m[5].value = f->late_total;
    m[6].value = f->poll_failures;
    m[7].value = (long long)(f->next_seq - f->first_seq);
    pthread_mutex_unlock(&f->mu);
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        ordo_metrics_render_header(out, m[i].name, m[i].type, m[i].help);
        ordo_buf_printf(out, "%s %lld\n", m[i].name, m[i].value);
    }
}
