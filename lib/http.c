#include "ordo/http.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ordo/buf.h"
#include "ordo/config.h"
#include "ordo/log.h"
#include "ordo/retry.h"

/*
 * libmicrohttpd is loaded when a server starts, not with the binary: its
 * load-time constructor initialises GnuTLS (~0.7 MB resident with the
 * library's own pages: GnuTLS's resident pages 1,128 -> 360 kB in the event
 * store), which the event store paid for even with /metrics off, its
 * default. Each server holds the library and the functions it calls.
 */
typedef struct mhd_api {
    void *lib;
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
    __typeof__(MHD_get_daemon_info) *get_daemon_info;
    __typeof__(MHD_lookup_connection_value) *lookup_connection_value;
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_destroy_response) *destroy_response;
    __typeof__(MHD_create_response_from_callback) *create_response_from_callback;
    __typeof__(MHD_suspend_connection) *suspend_connection;
    __typeof__(MHD_resume_connection) *resume_connection;
    __typeof__(MHD_get_connection_info) *get_connection_info;
} mhd_api_t;

struct ordo_http_server {
    mhd_api_t mhd;
    char *tls_cert, *tls_key;   /* HTTPS: the PEM texts, for the daemon's life */
    struct MHD_Daemon *daemon;
    ordo_http_handler_cb handler;
    void *ctx;
    size_t max_body;
    int max_streams, stream_sndbuf;
    pthread_mutex_t streams_mu;      /* guards the list and its count; stopping is set, and n_later raised, under it */
    ordo_http_stream_t *streams;     /* open streamed responses */
    int n_streams;
    atomic_bool stopping;            /* streams end at their next pull */
    atomic_int n_later;              /* requests answered later whose answer is not yet sent (or the client gone) */
};

/*
 * A streamed response. References: one for libmicrohttpd (dropped when it
 * destroys the response, after src->closed), one for the handler that
 * opened it, and any holds. `asleep` is set under mu by the content reader
 * as it suspends the connection; whoever clears it resumes the connection,
 * which cannot close while suspended, so the one resume is always valid.
 */
struct ordo_http_stream {
    ordo_http_server_t *srv;
    struct MHD_Connection *conn;
    const ordo_http_stream_source_t *src;
    void *ctx;
    pthread_mutex_t mu;
    bool asleep;       /* suspended by the reader, not yet resumed */
    bool woken;        /* a wake came while the reader was pulling */
    atomic_int refs;
    ordo_http_stream_t *prev, *next;   /* the server's list */
};

/*
 * An answer given later (ordo_http_respond_later). `asleep` is set under mu
 * as the connection is suspended to wait; the answer, under mu, resumes it
 * when set, and otherwise leaves it for the server thread to send at once.
 * Lives in the request's state, which the connection keeps until the answer
 * has been sent.
 */
struct ordo_http_later {
    ordo_http_server_t *srv;
    struct MHD_Connection *conn;
    pthread_mutex_t mu;
    bool asleep;
    bool answered;
    ordo_http_response_t answer;
};

typedef struct request_state {
    ordo_buf_t body;
    bool too_large;
    size_t drained;      /* bytes of an oversized body read and dropped */
    bool deferred;       /* the handler took `later`: the answer comes from ordo_http_answer */
    ordo_http_later_t later;
} request_state_t;

/* An oversized body is read and dropped, up to this much past the limit,
 * before the 413 goes out: answering while the client still sends makes the
 * server close with unread data, the kernel reset the connection, and the
 * client lose the answer (over TLS most of all). Beyond it, the 413 goes
 * out at once and the connection closes. */
#define DRAIN_BYTES ((size_t)1 << 20)

int ordo_http_code_of(ordo_status st)
{
    switch (st) {
    case ORDO_OK: return 200;
    case ORDO_INVALID: return 400;
    case ORDO_NOT_FOUND: return 404;
    case ORDO_CONFLICT: return 409;
    case ORDO_TOO_LARGE: return 413;
    case ORDO_UNAVAILABLE:
    case ORDO_RETRY:
    case ORDO_TIMEOUT: return 503;
    case ORDO_UNIMPLEMENTED: return 501;
    case ORDO_UNAUTHENTICATED: return 401;
    case ORDO_FORBIDDEN: return 403;
    default: return 500;
    }
}

/* The error code a client reads: the status's name for what the request
 * can change, and on the server's side only whether a later try can help. */
static const char *error_code_of(ordo_status st, int http)
{
    if (http == 503)
        return "unavailable";
    if (http == 500)
        return "internal";
    return ordo_status_text(st);
}

void ordo_http_fail(ordo_http_response_t *resp, const ordo_error_t *err)
{
    int http = ordo_http_code_of(err->code);
    ordo_http_error(resp, http, error_code_of(err->code, http), "%s", err->msg);
}

void ordo_http_error(ordo_http_response_t *resp, int status, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    json_t *doc;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    doc = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    free(resp->body);
    resp->status = status;
    resp->body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
}

const char *ordo_http_header(const ordo_http_request_t *req, const char *name)
{
    return req->server->mhd.lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *ordo_http_query(const ordo_http_request_t *req, const char *name)
{
    return req->server->mhd.lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ------------------------------------------------------------ streams */

void ordo_http_stream_hold(ordo_http_stream_t *s)
{
    atomic_fetch_add(&s->refs, 1);
}

void ordo_http_stream_release(ordo_http_stream_t *s)
{
    if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1) {
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
}

void ordo_http_stream_wake(ordo_http_stream_t *s)
{
    bool resume;

    pthread_mutex_lock(&s->mu);
    resume = s->asleep;
    s->asleep = false;
    s->woken = !resume;
    pthread_mutex_unlock(&s->mu);
    if (resume)   /* (suspended until this call: the connection and server are there) */
        s->srv->mhd.resume_connection(s->conn);
}

/* libmicrohttpd's content reader: the source's next bytes, or sleep. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    ordo_http_stream_t *s = cls;
    long n;
    (void)pos;

    pthread_mutex_lock(&s->mu);
    s->woken = false;
    pthread_mutex_unlock(&s->mu);
    if (atomic_load(&s->srv->stopping))
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if ((n = s->src->pull(s->ctx, buf, max)) != 0)
        return n > 0 ? (ssize_t)n : MHD_CONTENT_READER_END_OF_STREAM;
    pthread_mutex_lock(&s->mu);
    if (!s->woken && !atomic_load(&s->srv->stopping)) {   /* (woken while pulling: pull again at once) */
        s->asleep = true;
        s->srv->mhd.suspend_connection(s->conn);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* libmicrohttpd is done with the response: the connection is over. */
static void stream_done(void *cls)
{
    ordo_http_stream_t *s = cls;
    ordo_http_server_t *srv = s->srv;

    pthread_mutex_lock(&srv->streams_mu);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        srv->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    srv->n_streams--;
    pthread_mutex_unlock(&srv->streams_mu);
    s->src->closed(s->ctx);
    ordo_http_stream_release(s);
}

ordo_status ordo_http_respond_stream(const ordo_http_request_t *req, ordo_http_response_t *resp,
                                     const char *content_type, const ordo_http_stream_source_t *src, void *ctx,
                                     ordo_http_stream_t **out, ordo_error_t *err)
{
    ordo_http_server_t *srv = req->server;
    ordo_http_stream_t *s = calloc(1, sizeof *s);

    *out = NULL;
    if (s == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    pthread_mutex_lock(&srv->streams_mu);
    if (srv->n_streams >= srv->max_streams || atomic_load(&srv->stopping)) {
        pthread_mutex_unlock(&srv->streams_mu);
        free(s);
        return ordo_error_set(err, ORDO_UNAVAILABLE, "this server has its most streams open (%d)", srv->max_streams);
    }
    *s = (ordo_http_stream_t){.srv = srv, .conn = req->conn, .src = src, .ctx = ctx, .next = srv->streams};
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->refs, 2);
    if (srv->streams != NULL)
        srv->streams->prev = s;
    srv->streams = s;
    srv->n_streams++;
    pthread_mutex_unlock(&srv->streams_mu);
    resp->status = 200;
    resp->content_type = content_type;
    resp->stream = s;
    *out = s;
    return ORDO_OK;
}

/* Sends a streamed response (its source is closed even if that fails). */
static enum MHD_Result send_stream(const mhd_api_t *mhd, struct MHD_Connection *conn, ordo_http_response_t *r)
{
    ordo_http_stream_t *s = r->stream;
    struct MHD_Response *mr = mhd->create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, s, stream_done);
    const union MHD_ConnectionInfo *fd = mhd->get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    enum MHD_Result ret;

    free(r->body);
    r->body = NULL;
    r->stream = NULL;
    if (mr == NULL) {
        stream_done(s);
        return MHD_NO;
    }
    /* a small kernel buffer: a client that stops reading is soon seen as slow */
    if (s->srv->stream_sndbuf > 0 && fd != NULL)
        setsockopt(fd->connect_fd, SOL_SOCKET, SO_SNDBUF, &s->srv->stream_sndbuf, sizeof s->srv->stream_sndbuf);
    mhd->add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    mhd->add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    mhd->add_response_header(mr, "X-Content-Type-Options", "nosniff");
    mhd->add_response_header(mr, "X-Accel-Buffering", "no");   /* (a proxy in front: pass events on at once) */
    if (r->header_name != NULL)
        mhd->add_response_header(mr, r->header_name, r->header_value);
    ret = mhd->queue_response(conn, (unsigned)r->status, mr);
    mhd->destroy_response(mr);   /* (ours goes when the connection does: stream_done) */
    return ret;
}

/* ------------------------------------------------------------ later */

ordo_status ordo_http_respond_later(const ordo_http_request_t *req, ordo_http_later_t **out, ordo_error_t *err)
{
    request_state_t *st = req->state;
    ordo_http_server_t *srv = req->server;

    *out = NULL;
    pthread_mutex_lock(&srv->streams_mu);   /* (a stop sets stopping under it: then it sees this count) */
    if (atomic_load(&srv->stopping)) {
        pthread_mutex_unlock(&srv->streams_mu);
        return ordo_error_set(err, ORDO_UNAVAILABLE, "the server is stopping");
    }
    atomic_fetch_add(&srv->n_later, 1);
    pthread_mutex_unlock(&srv->streams_mu);
    st->deferred = true;
    st->later = (ordo_http_later_t){.srv = srv, .conn = req->conn};
    pthread_mutex_init(&st->later.mu, NULL);
    *out = &st->later;
    return ORDO_OK;
}

void ordo_http_answer(ordo_http_later_t *l, ordo_http_response_t *resp)
{
    ordo_http_server_t *srv = l->srv;

    pthread_mutex_lock(&l->mu);
    l->answer = *resp;
    l->answered = true;
    if (l->asleep) {   /* (suspended until this call: the connection is there) */
        l->asleep = false;
        srv->mhd.resume_connection(l->conn);
    }
    pthread_mutex_unlock(&l->mu);   /* (from here the connection may send the answer and free l) */
    resp->body = NULL;
}

static enum MHD_Result send_response(const mhd_api_t *mhd, struct MHD_Connection *conn, ordo_http_response_t *r);

/* After the handler took `later`: sends the answer if it came already, else
 * suspends the connection until ordo_http_answer resumes it (libmicrohttpd
 * then calls on_request again, which comes here once more). */
static enum MHD_Result send_later(ordo_http_server_t *srv, struct MHD_Connection *conn, ordo_http_later_t *l)
{
    ordo_http_response_t answer;

    pthread_mutex_lock(&l->mu);
    if (!l->answered) {
        if (!l->asleep) {
            l->asleep = true;
            srv->mhd.suspend_connection(conn);
        }
        pthread_mutex_unlock(&l->mu);
        return MHD_YES;
    }
    answer = l->answer;
    l->answer.body = NULL;
    pthread_mutex_unlock(&l->mu);
    return send_response(&srv->mhd, conn, &answer);
}

/* Waits, up to a minute, for the answers still to come (each call behind
 * one has a deadline) and to be sent: a suspended connection must not
 * outlive the daemon, and neither may an answer resumed but not yet written
 * (stopping the daemon then would close it unanswered). */
static void later_wait(ordo_http_server_t *srv)
{
    for (int waited = 0; atomic_load(&srv->n_later) > 0; waited++) {
        if (waited == 6000) {
            ORDO_WARN("http answers still pending at stop", "count=%d", atomic_load(&srv->n_later));
            return;
        }
        ordo_sleep_ms(10);
    }
}

/* Ends every stream (they end at their next pull) and waits, up to two
 * seconds, for libmicrohttpd to let them go: a suspended connection must
 * not outlive the daemon. */
static void streams_end(ordo_http_server_t *srv)
{
    ordo_http_stream_t **all = NULL;
    int n = 0;

    pthread_mutex_lock(&srv->streams_mu);
    atomic_store(&srv->stopping, true);
    if (srv->n_streams > 0 && (all = calloc((size_t)srv->n_streams, sizeof *all)) != NULL)
        for (ordo_http_stream_t *s = srv->streams; s != NULL; s = s->next) {
            ordo_http_stream_hold(s);
            all[n++] = s;
        }
    pthread_mutex_unlock(&srv->streams_mu);
    for (int i = 0; i < n; i++) {
        ordo_http_stream_wake(all[i]);
        ordo_http_stream_release(all[i]);
    }
    free(all);
    for (int waited = 0; waited < 200; waited++) {
        pthread_mutex_lock(&srv->streams_mu);
        n = srv->n_streams;
        pthread_mutex_unlock(&srv->streams_mu);
        if (n == 0)
            break;
        ordo_sleep_ms(10);
    }
}

static enum MHD_Result send_response(const mhd_api_t *mhd, struct MHD_Connection *conn, ordo_http_response_t *r)
{
    const char *body = r->body ? r->body : "";
    struct MHD_Response *mr;
    enum MHD_Result ret;

    if (r->stream != NULL)
        return send_stream(mhd, conn, r);
    mr = mhd->create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    mhd->add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type ? r->content_type : "application/json");
    mhd->add_response_header(mr, "X-Content-Type-Options", "nosniff");   /* (a browser takes the type as given) */
    if (r->header_name != NULL)
        mhd->add_response_header(mr, r->header_name, r->header_value);
    if (r->status == 503)   /* a dependency down or a queue full: worth trying again soon, with the same key */
        mhd->add_response_header(mr, "Retry-After", "1");
    ret = mhd->queue_response(conn, (unsigned)r->status, mr);
    mhd->destroy_response(mr);
    free(r->body);
    r->body = NULL;
    return ret;
}

static enum MHD_Result too_large(const ordo_http_server_t *srv, struct MHD_Connection *conn)
{
    ordo_http_response_t r = {0};
    ordo_http_error(&r, 413, "body_too_large", "the request body is over the limit of %zu bytes", srv->max_body);
    return send_response(&srv->mhd, conn, &r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    ordo_http_server_t *srv = cls;
    request_state_t *st = *con_cls;
    (void)version;

    if (st == NULL) {
        const char *cl = srv->mhd.lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if ((st = calloc(1, sizeof *st)) == NULL)
            return MHD_NO;
        *con_cls = st;
        /* a declared oversized body: dropped as it comes (413 once read), or
         * refused before reading any of it when it is far too large */
        if (cl != NULL && strtoull(cl, NULL, 10) > srv->max_body) {
            st->too_large = true;
            if (strtoull(cl, NULL, 10) - srv->max_body > DRAIN_BYTES)
                return too_large(srv, conn);
        }
        return MHD_YES;
    }
    if (st->deferred)   /* (again, after the answer resumed the connection) */
        return send_later(srv, conn, &st->later);
    if (*upload_data_size > 0) {
        if (!st->too_large && st->body.len + *upload_data_size <= srv->max_body) {
            ordo_buf_append(&st->body, upload_data, *upload_data_size);
        } else {
            st->too_large = true;
            st->drained += *upload_data_size;
        }
        *upload_data_size = 0;
        if (st->drained > DRAIN_BYTES)   /* (a chunked body that goes on): answer now */
            return too_large(srv, conn);
        return MHD_YES;
    }
    if (st->too_large)
        return too_large(srv, conn);
    ordo_http_request_t req = {method, url, ordo_buf_str(&st->body), st->body.len, conn, srv, st};
    ordo_http_response_t resp = {500, NULL, NULL, NULL, NULL, NULL};
    if (ordo_buf_failed(&st->body))
        ordo_http_fail(&resp, &(ordo_error_t){.code = ORDO_NO_MEMORY, .msg = "out of memory"});
    else
        srv->handler(srv->ctx, &req, &resp);
    if (st->deferred) {
        free(resp.body);
        return send_later(srv, conn, &st->later);
    }
    return send_response(&srv->mhd, conn, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t)
{
    request_state_t *st = *con_cls;
    (void)cls;
    (void)conn;
    (void)t;
    if (st != NULL) {
        ordo_buf_free(&st->body);
        if (st->deferred) {
            free(st->later.answer.body);   /* (an answer the client left before) */
            pthread_mutex_destroy(&st->later.mu);
            atomic_fetch_sub(&st->later.srv->n_later, 1);   /* (sent, or the client left: a stop may go on) */
        }
        free(st);
        *con_cls = NULL;
    }
}

/* libmicrohttpd's own messages, in our log: at debug level what a client
 * leaving or a setting it ignores makes it say (a browser closing a stream
 * is routine), at warn level the rest. Quotes and line ends are dropped so
 * that the line stays one key=value line. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    static const char *const routine[] = {"Failed to send", "Closing connection", "disconnected", "is ignored",
                                          "Connection reset", "Error receiving", "Socket is not connected"};
    char said[300];
    bool quiet = false;
    (void)cls;

    vsnprintf(said, sizeof said, fmt, ap);
    for (char *p = said; *p != '\0'; p++)
        if (*p == '"' || *p == '\n' || *p == '\r')
            *p = *p == '"' ? '\'' : ' ';
    for (size_t i = 0; i < sizeof routine / sizeof routine[0] && !quiet; i++)
        quiet = strstr(said, routine[i]) != NULL;
    if (quiet)
        ORDO_DEBUG("http library", "said=\"%s\"", said);
    else
        ORDO_WARN("http library", "said=\"%s\"", said);
}

static ordo_status parse_addr(const char *addr, struct sockaddr_in *sa, ordo_error_t *err)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    size_t hl = colon ? (size_t)(colon - addr) : 0;

    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    if (colon == NULL || hl == 0 || hl >= sizeof host)
        return ordo_error_set(err, ORDO_INVALID, "HTTP address must be host:port, got \"%s\"", addr);
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return ordo_error_set(err, ORDO_INVALID, "HTTP host must be an IPv4 address, got \"%s\"", host);
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    return ORDO_OK;
}

/* Loads libmicrohttpd and the functions this file calls into @p mhd. */
static ordo_status mhd_load(mhd_api_t *mhd, ordo_error_t *err)
{
    struct {
        const char *name;
        void **fn;
    } fns[] = {
        {"MHD_start_daemon", (void **)&mhd->start_daemon},
        {"MHD_stop_daemon", (void **)&mhd->stop_daemon},
        {"MHD_get_daemon_info", (void **)&mhd->get_daemon_info},
        {"MHD_lookup_connection_value", (void **)&mhd->lookup_connection_value},
        {"MHD_create_response_from_buffer", (void **)&mhd->create_response_from_buffer},
        {"MHD_add_response_header", (void **)&mhd->add_response_header},
        {"MHD_queue_response", (void **)&mhd->queue_response},
        {"MHD_destroy_response", (void **)&mhd->destroy_response},
        {"MHD_create_response_from_callback", (void **)&mhd->create_response_from_callback},
        {"MHD_suspend_connection", (void **)&mhd->suspend_connection},
        {"MHD_resume_connection", (void **)&mhd->resume_connection},
        {"MHD_get_connection_info", (void **)&mhd->get_connection_info},
    };

    if ((mhd->lib = dlopen(ORDO_MHD_SONAME, RTLD_NOW | RTLD_LOCAL)) == NULL)
        return ordo_error_set(err, ORDO_UNAVAILABLE, "cannot load the HTTP library: %s", dlerror());
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if ((*fns[i].fn = dlsym(mhd->lib, fns[i].name)) == NULL) {
            ordo_error_set(err, ORDO_UNAVAILABLE, "the HTTP library %s has no %s", ORDO_MHD_SONAME, fns[i].name);
            dlclose(mhd->lib);
            return ORDO_UNAVAILABLE;
        }
    return ORDO_OK;
}

/* The one cleanup once the daemon is stopped (or never ran). */
static void server_free(ordo_http_server_t *srv)
{
    ordo_secret_free(srv->tls_key);
    free(srv->tls_cert);
    dlclose(srv->mhd.lib);
    pthread_mutex_destroy(&srv->streams_mu);
    free(srv);
}

/* HTTPS: both files, or neither. */
static ordo_status load_tls(const ordo_http_config_t *cfg, ordo_http_server_t *srv, ordo_error_t *err)
{
    bool cert = ordo_opt_given(cfg->tls_cert_file), key = ordo_opt_given(cfg->tls_key_file);
    ordo_status st;

    if (!cert && !key)
        return ORDO_OK;
    if (!cert || !key)
        return ordo_error_set(err, ORDO_INVALID, "HTTPS needs both --https-cert and --https-key");
    if ((st = ordo_file_read(cfg->tls_cert_file, 1 << 20, &srv->tls_cert, err)) != ORDO_OK ||
        (st = ordo_file_read(cfg->tls_key_file, 1 << 20, &srv->tls_key, err)) != ORDO_OK)
        return st;
    return ORDO_OK;
}

ordo_status ordo_http_start(const ordo_http_config_t *cfg, ordo_http_handler_cb handler, void *ctx,
                            ordo_http_server_t **out, int *bound_port, ordo_error_t *err)
{
    struct sockaddr_in sa;
    ordo_http_server_t *srv;
    const union MHD_DaemonInfo *info;
    ordo_status st;

    *out = NULL;
    if (!ordo_addr_is_loopback(cfg->addr) && !cfg->insecure &&
        !(ordo_opt_given(cfg->tls_cert_file) && cfg->authenticated))
        return ordo_error_set(err, ORDO_INVALID, "refusing to serve %s without HTTPS and API keys%s%s, or --insecure "
                                                 "to serve it anyway", cfg->addr, cfg->enable_hint != NULL ? ": " : "",
                              cfg->enable_hint != NULL ? cfg->enable_hint : "");
    if ((st = parse_addr(cfg->addr, &sa, err)) != ORDO_OK)
        return st;
    if ((srv = calloc(1, sizeof *srv)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    if ((st = mhd_load(&srv->mhd, err)) != ORDO_OK) {
        free(srv);
        return st;
    }
    srv->handler = handler;
    srv->ctx = ctx;
    srv->max_body = cfg->max_body;
    srv->max_streams = cfg->max_streams;
    srv->stream_sndbuf = cfg->stream_sndbuf;
    pthread_mutex_init(&srv->streams_mu, NULL);
    atomic_init(&srv->stopping, false);
    atomic_init(&srv->n_later, 0);
    if ((st = load_tls(cfg, srv, err)) != ORDO_OK) {
        server_free(srv);
        return st;
    }
    srv->daemon = srv->mhd.start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (srv->tls_cert != NULL ? MHD_USE_TLS : 0) |
            MHD_ALLOW_SUSPEND_RESUME,
        0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* (first: it hears the rest) */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)cfg->threads, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout_s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)(cfg->max_per_address > 0 ? cfg->max_per_address : 0), MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        /* (with HTTPS: the key and certificate; without, the list ends here) */
        srv->tls_cert != NULL ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, srv->tls_key, MHD_OPTION_HTTPS_MEM_CERT,
        srv->tls_cert, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        server_free(srv);
        return ordo_error_set(err, ORDO_UNAVAILABLE, "cannot listen on %s%s", cfg->addr,
                              ordo_opt_given(cfg->tls_cert_file) ? " (or the HTTPS files were refused)" : "");
    }
    info = srv->mhd.get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (bound_port != NULL)
        *bound_port = info ? info->port : 0;
    *out = srv;
    return ORDO_OK;
}

void ordo_http_stop(ordo_http_server_t *srv)
{
    if (srv == NULL)
        return;
    streams_end(srv);
    later_wait(srv);
    srv->mhd.stop_daemon(srv->daemon);
    server_free(srv);
}

void ordo_http_metrics_page(const ordo_metrics_endpoint_t *ep, ordo_http_response_t *resp)
{
    ordo_buf_t b = ORDO_BUF_INIT;

    ep->render(ep->ctx, &b);
    resp->status = 200;
    resp->body = b.data != NULL ? b.data : strdup("");
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

static void serve_metrics(void *ctx, const ordo_http_request_t *req, ordo_http_response_t *resp)
{
    if (strcmp(req->path, "/metrics") != 0) {
        ordo_http_fail(resp, &(ordo_error_t){.code = ORDO_NOT_FOUND, .msg = "only /metrics is served here"});
    } else if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        ordo_http_error(resp, 405, "method_not_allowed", "allowed here: GET, HEAD");
        resp->header_name = "Allow";
        resp->header_value = "GET, HEAD";
    } else {
        ordo_http_metrics_page(ctx, resp);
    }
}

ordo_status ordo_http_serve_metrics(const char *addr, bool insecure, const ordo_metrics_endpoint_t *ep,
                                    ordo_http_server_t **out, int *port, ordo_error_t *err)
{
    ordo_http_config_t cfg = {.addr = addr, .threads = 1, .max_body = 1024, .connection_timeout_s = 10,
                              .max_connections = 16, .max_per_address = 8, .insecure = insecure,
                              .enable_hint = "serve /metrics on a loopback address"};
    return ordo_http_start(&cfg, serve_metrics, (void *)ep, out, port, err);
}
