/**
 * @file grpc.h
 * A generic gRPC server and client over protobuf-c service descriptors,
 * built on the gRPC C core.
 *
 * Server: register a ProtobufCServiceDescriptor with a handler per method.
 * A completion-queue thread accepts calls, unpacks the request with the
 * method's input descriptor and calls the handler. Handlers run on that
 * thread and must not block: they hand the call to their own workers, which
 * answer later with ordo_grpc_call_finish() from any thread.
 *
 * Ownership: a call and its request belong to the server; the handler may
 * use both until it calls ordo_grpc_call_finish(), exactly once.
 *
 * Security: with TLS configured a server presents its certificate, asks every
 * client for one chained to its CA, maps the certificate's common name to a
 * role and lets each method be called only from its role up
 * (UNAUTHENTICATED without a known identity, PERMISSION_DENIED for a role
 * too low; each refusal logged with the identity and the method). It never
 * falls back to plaintext. Without TLS it serves loopback addresses only,
 * unless told it is insecure on purpose.
 */
#ifndef ORDO_GRPC_H
#define ORDO_GRPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "ordo/buf.h"
#include "ordo/status.h"

typedef struct ordo_grpc_server ordo_grpc_server_t;
typedef struct ordo_grpc_call ordo_grpc_call_t;

/** What a client identity may call; each role includes the ones below it. */
typedef enum ordo_grpc_role {
    ORDO_ROLE_NONE = 0,   /**< no role: refused */
    ORDO_ROLE_READER,     /**< reads: events, streams, statistics, queries */
    ORDO_ROLE_WRITER,     /**< reads and appends */
    ORDO_ROLE_ADMIN,      /**< everything, replays and rebuilds included */
} ordo_grpc_role;

/** "reader", "writer", "admin" (ORDO_ROLE_NONE: "none"). */
const char *ordo_grpc_role_name(ordo_grpc_role role);

/** The client identities of Ordo's own services and their roles: the
 *  default of a server's client_roles. */
#define ORDO_GRPC_DEFAULT_ROLES "orderapi=writer,paymentsvc=writer,restaurantsvc=writer,orderquery=reader,admin=admin"

/** TLS files (PEM paths, not owned). A server presents cert/key and asks
 *  clients for a certificate chained to ca; a client checks the server's
 *  certificate against ca and presents cert/key. */
typedef struct ordo_grpc_tls {
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    const char *option_prefix;   /**< how the options are spelled, for errors ("--" for --ca; NULL: "--tls-") */
} ordo_grpc_tls_t;

/** Whether @p tls asks for TLS: any of its files named. A server or client
 *  given TLS then needs all three, readable as PEM; the error names the
 *  option and the file at fault (never their content). */
bool ordo_grpc_tls_on(const ordo_grpc_tls_t *tls);

/** grpc_init(), with abseil's debug-build deadlock detection turned off
 *  first (once per process); pair with grpc_shutdown() as grpc_init(). */
void ordo_grpc_library_init(void);

/** Receives a new call. @p request is owned by @p call. Must not block. */
typedef void (*ordo_grpc_handler_cb)(void *ctx, ordo_grpc_call_t *call,
                                     const ProtobufCMessage *request);

typedef struct ordo_grpc_method {
    const char *name;              /**< method name as in the .proto, e.g. "CreateEvent" */
    ordo_grpc_handler_cb handler;
    bool server_streaming;         /**< answered with ordo_grpc_call_send() + finish */
    ordo_grpc_role role;           /**< with TLS, the least role that may call it (NONE: reader) */
} ordo_grpc_method_t;

typedef struct ordo_grpc_server_config {
    const char *addr;              /**< "127.0.0.1:50051"; port 0 picks a free port */
    int max_message_bytes;         /**< larger requests get RESOURCE_EXHAUSTED */
    int threads;                   /**< completion-queue threads (1 is usually best) */
    const ordo_grpc_tls_t *tls;    /**< NULL or no files: plaintext */
    const char *client_roles;      /**< with TLS: "common-name=role,..." (NULL: ORDO_GRPC_DEFAULT_ROLES) */
    bool insecure;                 /**< allows plaintext on an address other than loopback */
} ordo_grpc_server_config_t;

/** Creates a server (not yet listening). Free with ordo_grpc_server_destroy(). */
ordo_status ordo_grpc_server_create(const ordo_grpc_server_config_t *cfg,
                                    ordo_grpc_server_t **out, ordo_error_t *err);

/**
 * Serves @p desc: @p methods (copied) name its methods; @p ctx is passed to
 * each handler. Methods of @p desc without a handler answer UNIMPLEMENTED.
 * Call before ordo_grpc_server_start().
 */
ordo_status ordo_grpc_server_add_service(ordo_grpc_server_t *srv,
                                         const ProtobufCServiceDescriptor *desc,
                                         const ordo_grpc_method_t *methods, size_t n_methods,
                                         void *ctx, ordo_error_t *err);

/** Binds and starts serving; @p bound_port receives the port (may be NULL). */
ordo_status ordo_grpc_server_start(ordo_grpc_server_t *srv, int *bound_port, ordo_error_t *err);

/** True once ordo_grpc_server_shutdown() has begun: streaming handlers should end. */
bool ordo_grpc_server_stopping(const ordo_grpc_server_t *srv);

/**
 * Stops accepting calls, lets calls in flight finish for up to @p grace_ms,
 * then cancels the rest and waits for them. Blocks; call once.
 */
void ordo_grpc_server_shutdown(ordo_grpc_server_t *srv, int grace_ms);

/** Appends the server's per-method figures in the Prometheus text format:
 *  grpc_server_handled_total{grpc_service,grpc_method,grpc_code} and the
 *  histogram grpc_server_handling_seconds{grpc_service,grpc_method}.
 *  Thread-safe; accepts NULL (nothing). */
void ordo_grpc_server_metrics_render(ordo_grpc_server_t *srv, ordo_buf_t *out);

/** Frees the server (shuts it down first if needed). Accepts NULL. */
void ordo_grpc_server_destroy(ordo_grpc_server_t *srv);

/**
 * Ends a call: status @p st (mapped by ordo_grpc_code_of), a message for
 * errors, and @p response for ORDO_OK (NULL otherwise; packed before return,
 * so the caller keeps ownership). Thread-safe; exactly once per call; the
 * call and its request must not be used afterwards.
 */
void ordo_grpc_call_finish(ordo_grpc_call_t *call, ordo_status st, const char *message,
                           const ProtobufCMessage *response);

/**
 * Sends one message of a server-streaming call and waits until gRPC took it.
 * @return ORDO_OK, or ORDO_UNAVAILABLE when the client went away.
 */
ordo_status ordo_grpc_call_send(ordo_grpc_call_t *call, const ProtobufCMessage *msg);

/**
 * Sends @p n messages of a server-streaming call, in order, and waits until
 * gRPC took them all: the completion of one starts the next on gRPC's
 * completion thread, so a page of messages costs the caller one wait, not
 * one per message. The messages are packed before the first is sent; the
 * caller may free them once it returns.
 * @return ORDO_OK, or ORDO_UNAVAILABLE when the client went away (some may
 *         have been sent).
 */
ordo_status ordo_grpc_call_send_many(ordo_grpc_call_t *call, const ProtobufCMessage *const *msgs, size_t n);

/**
 * ordo_grpc_call_send_many(), but when gRPC has not taken them all within
 * @p timeout_ms (the client does not read: flow control holds the sends)
 * the call is cancelled and ORDO_TIMEOUT returned.
 */
ordo_status ordo_grpc_call_send_many_within(ordo_grpc_call_t *call, const ProtobufCMessage *const *msgs, size_t n,
                                            int timeout_ms);

/** Who calls, for per-client limits: the client certificate's common name
 *  with TLS, else the peer's address without its port ("127.0.0.1"). */
void ordo_grpc_call_client(ordo_grpc_call_t *call, char *out, size_t cap);

/** True when the client cancelled the call or the connection broke. */
bool ordo_grpc_call_cancelled(ordo_grpc_call_t *call);

/** True when nobody waits for the call's answer any more: its deadline has
 *  passed, or it was cancelled. Work it asked for that has not begun should
 *  not begin. */
bool ordo_grpc_call_expired(ordo_grpc_call_t *call);

/** The call's request (owned by the call), as handed to the handler. */
const ProtobufCMessage *ordo_grpc_call_request(const ordo_grpc_call_t *call);

/** The server a call belongs to. */
ordo_grpc_server_t *ordo_grpc_call_server(ordo_grpc_call_t *call);

/** The call's request metadata @p key (lowercase) in @p out; false when the
 *  call has none (or @p call is NULL, or it does not fit in @p cap). */
bool ordo_grpc_call_metadata(const ordo_grpc_call_t *call, const char *key, char *out, size_t cap);

/** The one mapping from ordo_status to a gRPC status code. */
int ordo_grpc_code_of(ordo_status st);

/** The one mapping from a gRPC status code back to ordo_status. */
ordo_status ordo_status_of_grpc_code(int code);

/* ------------------------------------------------------------------ client */

typedef struct ordo_grpc_client ordo_grpc_client_t;
typedef struct ordo_grpc_stream ordo_grpc_stream_t;

/* The largest answer a client takes, by what it asks for (a larger one fails
 * the call with RESOURCE_EXHAUSTED). */
#define ORDO_GRPC_APPEND_MAX_BYTES (4 << 20)   /**< appends and reads of one order's events */
#define ORDO_GRPC_PAGE_MAX_BYTES (16 << 20)    /**< a page of the read model (500 orders) */
#define ORDO_GRPC_READ_MAX_BYTES (64 << 20)    /**< catch-up reads and streams (up to 10,000 events) */
/** The largest request orderquery takes (its queries are small). */
#define ORDO_GRPC_QUERY_REQUEST_MAX_BYTES (1 << 20)

/** Opens a channel to @p target ("127.0.0.1:50051"): TLS with @p tls's
 *  files (checked first; the error names the one at fault), plaintext when
 *  @p tls is NULL or names none. Thread-safe use. */
ordo_status ordo_grpc_client_create(const char *target, int max_message_bytes, const ordo_grpc_tls_t *tls,
                                    ordo_grpc_client_t **out, ordo_error_t *err);

/** Closes the channel. Accepts NULL. */
void ordo_grpc_client_destroy(ordo_grpc_client_t *c);

/**
 * One unary call to @p path ("/eventstore.EventStore/CreateEvent"). On
 * ORDO_OK, *@p response is unpacked with @p response_desc and owned by the
 * caller (protobuf_c_message_free_unpacked). Otherwise @p err holds the
 * server's status (mapped back to ordo_status) and message. Thread-safe.
 */
ordo_status ordo_grpc_client_unary(ordo_grpc_client_t *c, const char *path,
                                   const ProtobufCMessage *request,
                                   const ProtobufCMessageDescriptor *response_desc,
                                   int timeout_ms, ProtobufCMessage **response,
                                   ordo_error_t *err);

/** ordo_grpc_client_unary() sending @p traceparent (W3C; NULL or "": none)
 *  as the call's `traceparent` metadata. */
ordo_status ordo_grpc_client_unary_traced(ordo_grpc_client_t *c, const char *path, const ProtobufCMessage *request,
                                          const ProtobufCMessageDescriptor *response_desc, int timeout_ms,
                                          const char *traceparent, ProtobufCMessage **response, ordo_error_t *err);

/**
 * What an asynchronous call hands its callback: the call's status, *@p err
 * when it is not ORDO_OK, and on ORDO_OK the answer (the callback's to free).
 * Runs on the client's completion thread: it must not block (starting
 * another asynchronous call is fine).
 */
typedef void (*ordo_grpc_done_cb)(void *arg, ordo_status st, ProtobufCMessage *response, const ordo_error_t *err);

/**
 * ordo_grpc_client_unary_traced() without waiting: @p done(@p arg, ...) runs
 * once when the call ends (by the deadline at the latest). ORDO_OK when the
 * call started; otherwise @p done is not called and *@p err says why. The
 * request may be freed once this returns. Thread-safe. Calls still running
 * when the client is destroyed end first (their callbacks run).
 */
ordo_status ordo_grpc_client_unary_async(ordo_grpc_client_t *c, const char *path, const ProtobufCMessage *request,
                                         const ProtobufCMessageDescriptor *response_desc, int timeout_ms,
                                         const char *traceparent, ordo_grpc_done_cb done, void *arg, ordo_error_t *err);

/** Starts a server-streaming call. Close with ordo_grpc_stream_close(). */
ordo_status ordo_grpc_stream_open(ordo_grpc_client_t *c, const char *path,
                                  const ProtobufCMessage *request, int timeout_ms,
                                  ordo_grpc_stream_t **out, ordo_error_t *err);

/**
 * Receives the next message (caller frees it). ORDO_NOT_FOUND at a clean end
 * of the stream; the server's status otherwise.
 */
ordo_status ordo_grpc_stream_next(ordo_grpc_stream_t *s, const ProtobufCMessageDescriptor *desc,
                                  ProtobufCMessage **out, ordo_error_t *err);

/** Cancels (if still open) and frees the stream. Accepts NULL. */
void ordo_grpc_stream_close(ordo_grpc_stream_t *s);

#endif
