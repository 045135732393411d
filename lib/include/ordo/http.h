/**
 * @file http.h
 * A small HTTP/1.1 server over libmicrohttpd: a pool of threads, capped
 * bodies (413 before the handler runs), connection limits and timeouts,
 * and JSON responses. Plain HTTP, or HTTP without authenticated requests,
 * is served on loopback addresses only unless the caller says insecure. The handler sees a whole request and fills a response.
 */
#ifndef ORDO_HTTP_H
#define ORDO_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "ordo/buf.h"
#include "ordo/status.h"

typedef struct ordo_http_server ordo_http_server_t;
typedef struct ordo_http_stream ordo_http_stream_t;

typedef struct ordo_http_request {
    const char *method;
    const char *path;            /**< without the query string */
    const char *body;            /**< NUL-terminated; "" when none */
    size_t body_len;
    void *conn;                  /**< for ordo_http_header / ordo_http_query */
    ordo_http_server_t *server;  /**< (likewise) */
    void *state;                 /**< the server's own (ordo_http_respond_later) */
} ordo_http_request_t;

typedef struct ordo_http_response {
    int status;
    char *body;                  /**< malloc'd; the server frees it */
    const char *content_type;    /**< default application/json (a static string) */
    const char *header_name;     /**< one extra header, or NULL (static strings) */
    const char *header_value;
    ordo_http_stream_t *stream;  /**< set by ordo_http_respond_stream: the body comes from it */
} ordo_http_response_t;

/** Handles one request. Runs on a server thread; should not block for
 *  long (the thread serves other connections too): a handler that waits on
 *  another service answers later (ordo_http_respond_later). */
typedef void (*ordo_http_handler_cb)(void *ctx, const ordo_http_request_t *req, ordo_http_response_t *resp);

typedef struct ordo_http_config {
    const char *addr;            /**< "127.0.0.1:8080"; port 0 = any */
    int threads;
    size_t max_body;             /**< larger bodies get 413 */
    int connection_timeout_s;    /**< a connection idle this long is closed */
    int max_connections;         /**< open connections in all */
    int max_per_address;         /**< and from one client address (0: no such limit) */
    const char *tls_cert_file;   /**< HTTPS: the server's certificate chain (PEM); NULL or "": plain HTTP */
    const char *tls_key_file;    /**< and its private key (PEM) */
    bool authenticated;          /**< requests must present a key: with HTTPS, any address may be served */
    bool insecure;               /**< serve an address other than loopback without HTTPS and keys anyway */
    const char *enable_hint;     /**< what the refusal of such an address tells to do (may be NULL) */
    int max_streams;             /**< streamed responses open at once (0: none allowed) */
    int stream_sndbuf;           /**< a stream connection's kernel send buffer, bytes (0: the system's) */
} ordo_http_config_t;

ordo_status ordo_http_start(const ordo_http_config_t *cfg, ordo_http_handler_cb handler, void *ctx,
                            ordo_http_server_t **out, int *bound_port, ordo_error_t *err);

/** Stops accepting, finishes requests in flight, frees. Accepts NULL. */
void ordo_http_stop(ordo_http_server_t *srv);

/** A request header (case-insensitive name), or NULL. */
const char *ordo_http_header(const ordo_http_request_t *req, const char *name);

/** A query-string argument, or NULL. */
const char *ordo_http_query(const ordo_http_request_t *req, const char *name);

/**
 * Sets the response of a request that failed with @p err: the one rendering
 * of a status as HTTP (code from ordo_http_code_of(); error code the
 * status's name, "unavailable" for 503, "internal" for 500; err->msg as the
 * message). Handlers return a status and leave this to their caller.
 */
void ordo_http_fail(ordo_http_response_t *resp, const ordo_error_t *err);

/** Sets a JSON error response {"error":{"code":..,"message":..}}: for HTTP's
 *  own answers that are no status of ours (405, 413, 415). */
void ordo_http_error(ordo_http_response_t *resp, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** The one mapping from ordo_status to an HTTP status code. */
int ordo_http_code_of(ordo_status st);

/*
 * Answers given later: a handler that calls another service starts the call,
 * takes the request's `later` handle and returns; the connection waits
 * (suspended, holding no server thread) until the call's callback gives the
 * answer with ordo_http_answer, from any thread. ordo_http_stop waits for
 * the answers still to come, and for them to be sent, so each must come
 * (the calls behind them need deadlines).
 */
typedef struct ordo_http_later ordo_http_later_t;

/** Takes the answer of @p req out of the handler: whatever the handler puts
 *  in its response is dropped, and exactly one ordo_http_answer(*@p out)
 *  must follow. ORDO_UNAVAILABLE when the server is stopping. */
ordo_status ordo_http_respond_later(const ordo_http_request_t *req, ordo_http_later_t **out, ordo_error_t *err);

/** The answer to a request taken with ordo_http_respond_later (takes
 *  resp->body; the header and type strings must be static). Any thread;
 *  @p later is gone once this returns. */
void ordo_http_answer(ordo_http_later_t *later, ordo_http_response_t *resp);

/*
 * Streamed responses (Server-Sent Events): the body is pulled from the
 * handler's source as the client takes it, for as long as the connection
 * lives, without holding a server thread. When the source has nothing, the
 * connection sleeps (libmicrohttpd's suspend) until ordo_http_stream_wake.
 * A sleeping connection does not time out and does not notice a client
 * that left: the source sends something now and then (a comment line).
 */
typedef struct ordo_http_stream_source {
    /** Copies up to @p max bytes of what comes next into @p buf: the count;
     *  0 when nothing is ready (the stream then sleeps until woken); -1 at
     *  the end (the connection closes once it is sent). On a server thread. */
    long (*pull)(void *ctx, char *buf, size_t max);
    /** The connection is over (client gone, stream ended, server stopping):
     *  called once, on a server thread; ctx is the source's own again. */
    void (*closed)(void *ctx);
} ordo_http_stream_source_t;

/**
 * Answers the request with a stream from @p src (@p ctx its argument):
 * status 200, Content-Type @p content_type (resp->header_name may add one
 * header). *@p out holds one reference for the caller: pass it to
 * ordo_http_stream_wake, and ordo_http_stream_release it once src->closed
 * has run or the caller no longer wakes it. src->closed runs exactly once,
 * even if the answer could not be sent. ORDO_UNAVAILABLE when the server
 * has more streams open than it was configured for (resp is then a 503).
 */
ordo_status ordo_http_respond_stream(const ordo_http_request_t *req, ordo_http_response_t *resp,
                                     const char *content_type, const ordo_http_stream_source_t *src, void *ctx,
                                     ordo_http_stream_t **out, ordo_error_t *err);

/** Something is ready to pull: wakes a sleeping stream (any thread). */
void ordo_http_stream_wake(ordo_http_stream_t *s);

/** Another reference to @p s (for a thread that wakes it without a lock). */
void ordo_http_stream_hold(ordo_http_stream_t *s);

/** Drops a reference; the last one frees the handle. */
void ordo_http_stream_release(ordo_http_stream_t *s);

/** What a daemon's GET /metrics shows: @p render appends the Prometheus
 *  text exposition (called on a server thread, once per scrape). */
typedef struct ordo_metrics_endpoint {
    void (*render)(void *ctx, ordo_buf_t *out);
    void *ctx;
} ordo_metrics_endpoint_t;

/** Answers 200 with @p ep's exposition (text format 0.0.4). */
void ordo_http_metrics_page(const ordo_metrics_endpoint_t *ep, ordo_http_response_t *resp);

/** Serves GET /metrics alone on @p addr (plain HTTP, so a loopback address
 *  unless @p insecure; port 0: any, in *@p port); any other path is 404,
 *  any other method 405. @p ep must outlive the server (ordo_http_stop). */
ordo_status ordo_http_serve_metrics(const char *addr, bool insecure, const ordo_metrics_endpoint_t *ep,
                                    ordo_http_server_t **out, int *port, ordo_error_t *err);

#endif
