/*
 * Generic gRPC server over protobuf-c service descriptors (gRPC C core).
 *
 * Each registered method keeps a few requested-call slots armed; an
 * unregistered path gets one generic slot that answers UNIMPLEMENTED. A call
 * is reference-counted: one reference for its owner (the handler until it
 * finishes the call, then the finish batch) and, for server-streaming calls,
 * one for an early RECV_CLOSE_ON_SERVER batch, which tells the streaming
 * handler when the client went away. A unary call receives the close in its
 * finish batch: one batch less per call.
 */
#include "grpc_internal.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/config.h"
#include "ordo/log.h"
#include "ordo/metrics.h"
#include "ordo/retry.h"

enum { GRPC_CODES = 17, SLOTS_PER_METHOD = 8, MAX_THREADS = 8, SHUTDOWN_SETTLE_MS = 100, MAX_IDENTITIES = 64, MAX_IDENTITY = 128 };

typedef enum tag_kind {
    TAG_NEW,        /* a registered method's call arrived */
    TAG_UNKNOWN,    /* a call to a path nobody registered arrived */
    TAG_CLOSE,      /* RECV_CLOSE_ON_SERVER completed: the call is over */
    TAG_SEND,       /* a streaming SEND_MESSAGE completed: the next of the chain starts, or the sender wakes */
    TAG_FINISH,     /* the final status was sent */
    TAG_SHUTDOWN,   /* grpc_server_shutdown_and_notify completed */
} tag_kind;

typedef struct tag {
    tag_kind kind;
    ordo_grpc_call_t *call;
} tag_t;

typedef struct method_entry {
    char path[256];
    void *registered;
    const ProtobufCMethodDescriptor *desc;
    ordo_grpc_handler_cb handler;   /* NULL: UNIMPLEMENTED */
    bool streaming;
    ordo_grpc_role role;            /* the least role that may call it (with TLS; at least reader) */
    void *ctx;
    const char *service;            /* desc's service name, for the metrics' labels */
    atomic_llong handled[GRPC_CODES];   /* calls finished, by status code */
    ordo_metric_t latency;          /* histogram: accepted to final status sent */
} method_entry_t;

/* A client certificate's common name and the role it maps to. */
typedef struct identity {
    char name[MAX_IDENTITY];
    ordo_grpc_role role;
} identity_t;

struct ordo_grpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t threads[MAX_THREADS];
    int n_threads;
    method_entry_t *methods;
    size_t n_methods;
    atomic_bool stopping;
    bool started, shut_down;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_tag_seen;
    int live_calls;                 /* accepted calls not yet freed; under mu */
    tag_t shutdown_tag;
    int port;                       /* bound by create, reported by start */
    bool tls;                       /* clients must present a known identity */
    identity_t identities[MAX_IDENTITIES];   /* read-only after create */
    int n_identities;
};

struct ordo_grpc_call {
    ordo_grpc_server_t *srv;
    method_entry_t *m;              /* NULL for an unknown path */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;      /* unknown paths only */
    grpc_byte_buffer *payload;
    ProtobufCMessage *request;
    atomic_int refs;
    bool accepted;
    tag_t t_new, t_close, t_send, t_finish;
    int close_cancelled;
    atomic_bool cancelled;
    bool sent_initial_md;
    bool close_watched;             /* an early RECV_CLOSE_ON_SERVER batch is running */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool send_done, send_ok;
    /* the messages of ordo_grpc_call_send_many: the sender packs them, the
     * completion of one starts the next on the completion thread, and the
     * sender waits until the last is taken (or one fails) */
    grpc_byte_buffer **chain;
    size_t chain_n, chain_next;
    grpc_byte_buffer *out;          /* message of the finish batch */
    grpc_slice status_details;
    int64_t accepted_us;            /* when the call arrived (ordo_mono_us) */
};

static void call_unref(ordo_grpc_call_t *c);

static ordo_grpc_call_t *call_new(ordo_grpc_server_t *srv, method_entry_t *m)
{
    ordo_grpc_call_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->srv = srv;
    c->m = m;
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancelled, false);
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->t_new = (tag_t){m != NULL ? TAG_NEW : TAG_UNKNOWN, c};
    c->t_close = (tag_t){TAG_CLOSE, c};
    c->t_send = (tag_t){TAG_SEND, c};
    c->t_finish = (tag_t){TAG_FINISH, c};
    return c;
}

static void call_free(ordo_grpc_call_t *c)
{
    ordo_grpc_server_t *srv = c->srv;
    bool accepted = c->accepted;

    if (c->call != NULL)
        grpc_call_unref(c->call);
    if (c->request != NULL)
        protobuf_c_message_free_unpacked(c->request, NULL);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->out != NULL)
        grpc_byte_buffer_destroy(c->out);
    grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);

    if (accepted) {
        pthread_mutex_lock(&srv->mu);
        srv->live_calls--;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
    }
}

static void call_unref(ordo_grpc_call_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        call_free(c);
}

/* Keeps one more requested-call slot armed for @p m (NULL: unknown paths). */
static void arm_slot(ordo_grpc_server_t *srv, method_entry_t *m)
{
    ordo_grpc_call_t *c;
    grpc_call_error e;

    if (atomic_load(&srv->stopping))
        return;
    c = call_new(srv, m);
    if (c == NULL) {
        ORDO_ERROR("grpc: out of memory arming a call slot", "%s", "");
        return;
    }
    if (m != NULL)
        e = grpc_server_request_registered_call(srv->server, m->registered, &c->call, &c->deadline,
                                                &c->md, &c->payload, srv->cq, srv->cq, &c->t_new);
    else
        e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md, srv->cq, srv->cq,
                                     &c->t_new);
    if (e != GRPC_CALL_OK) {
        ORDO_ERROR("grpc: request_call failed", "error=%d", (int)e);
        call_free(c);
    }
}

static void start_close_watch(ordo_grpc_call_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    atomic_fetch_add(&c->refs, 1);
    c->close_watched = true;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK) {
        c->close_watched = false;
        atomic_store(&c->cancelled, true);
        call_unref(c);
    }
}

/* The common name of the call's client certificate into @p out ("" when none). */
static void peer_identity(grpc_call *call, char *out, size_t cap)
{
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    grpc_auth_property_iterator it;
    const grpc_auth_property *p;

    out[0] = '\0';
    if (ctx == NULL)
        return;
    it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
    if ((p = grpc_auth_property_iterator_next(&it)) != NULL && p->value_length < cap &&
        memchr(p->value, '\0', p->value_length) == NULL) {
        memcpy(out, p->value, p->value_length);
        out[p->value_length] = '\0';
    }
    grpc_auth_context_release(ctx);
}

static ordo_grpc_role role_of(const ordo_grpc_server_t *srv, const char *identity)
{
    for (int i = 0; i < srv->n_identities; i++)
        if (strcmp(srv->identities[i].name, identity) == 0)
            return srv->identities[i].role;
    return ORDO_ROLE_NONE;
}

/* With TLS: whether the call's client may call @p path, which needs @p need.
 * A refusal is logged with the identity and the method, and set in @p msg. */
static ordo_status authorize(const ordo_grpc_server_t *srv, grpc_call *call, const char *path, ordo_grpc_role need,
                             char *msg, size_t cap)
{
    char identity[MAX_IDENTITY];
    ordo_grpc_role role;
    ordo_status st = ORDO_OK;

    if (!srv->tls)
        return ORDO_OK;
    peer_identity(call, identity, sizeof identity);
    role = role_of(srv, identity);
    if (identity[0] == '\0') {
        st = ORDO_UNAUTHENTICATED;
        snprintf(msg, cap, "a client certificate is required");
    } else if (role == ORDO_ROLE_NONE) {
        st = ORDO_UNAUTHENTICATED;
        snprintf(msg, cap, "client identity %s has no role here", identity);
    } else if (role < need) {
        st = ORDO_FORBIDDEN;
        snprintf(msg, cap, "%s (role %s) may not call %s", identity, ordo_grpc_role_name(role), path);
    }
    if (st != ORDO_OK)
        ORDO_WARN("grpc call refused", "identity=\"%s\" role=%s method=%s status=%s", identity,
                  ordo_grpc_role_name(role), path, ordo_status_text(st));
    return st;
}

static void on_new_call(ordo_grpc_call_t *c, bool ok)
{
    ordo_grpc_server_t *srv = c->srv;
    method_entry_t *m = c->m;
    char msg[320];
    ordo_status st;

    if (!ok) {              /* the server is shutting down: the slot was never used */
        call_free(c);
        return;
    }
    arm_slot(srv, m);
    c->accepted_us = ordo_mono_us();
    pthread_mutex_lock(&srv->mu);
    srv->live_calls++;
    c->accepted = true;
    pthread_mutex_unlock(&srv->mu);
    if (m != NULL && m->streaming)
        start_close_watch(c);

    if (m == NULL) {   /* (an unknown path is no secret, but only a known client learns so) */
        char *path = grpc_slice_to_c_string(c->details.method);
        if ((st = authorize(srv, c->call, path, ORDO_ROLE_READER, msg, sizeof msg)) == ORDO_OK)
            snprintf(msg, sizeof msg, "unknown method %.200s", path);
        gpr_free(path);
        ordo_grpc_call_finish(c, st == ORDO_OK ? ORDO_UNIMPLEMENTED : st, msg, NULL);
        return;
    }
    if ((st = authorize(srv, c->call, m->path, m->role, msg, sizeof msg)) != ORDO_OK) {
        ordo_grpc_call_finish(c, st, msg, NULL);
        return;
    }
    if (m->handler == NULL) {
        snprintf(msg, sizeof msg, "method %s is not implemented", m->path);
        ordo_grpc_call_finish(c, ORDO_UNIMPLEMENTED, msg, NULL);
        return;
    }
    if (c->payload == NULL) {
        ordo_grpc_call_finish(c, ORDO_INVALID, "the request carries no message", NULL);
        return;
    }
    c->request = ordo_grpc_unpack(m->desc->input, c->payload, msg, sizeof msg);
    if (c->request == NULL) {
        ordo_grpc_call_finish(c, ORDO_INVALID, msg, NULL);
        return;
    }
    m->handler(m->ctx, c, c->request);
}

/* Puts the call's initial metadata into @p ops at *@p n unless it went out
 * with an earlier batch (one per call). */
static void add_initial_md(ordo_grpc_call_t *c, grpc_op *ops, size_t *n)
{
    if (!c->sent_initial_md) {
        ops[(*n)++].op = GRPC_OP_SEND_INITIAL_METADATA;
        c->sent_initial_md = true;
    }
}

/* Starts the SEND_MESSAGE of the chain's next message (with the initial
 * metadata on the call's first); false when gRPC refused the batch. */
static bool send_next(ordo_grpc_call_t *c)
{
    grpc_op ops[2];
    size_t n = 0;

    memset(ops, 0, sizeof ops);
    add_initial_md(c, ops, &n);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->chain[c->chain_next];
    n++;
    return grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL) == GRPC_CALL_OK;
}

/* A message of the chain was taken (@p ok) or not: start the next one here,
 * on the completion thread (no hand-off per message), or wake the sender. */
static void on_sent(ordo_grpc_call_t *c, bool ok)
{
    grpc_byte_buffer_destroy(c->chain[c->chain_next]);
    c->chain[c->chain_next++] = NULL;
    if (ok && c->chain_next < c->chain_n && !atomic_load(&c->cancelled)) {
        if (send_next(c))
            return;
        ok = false;
    }
    pthread_mutex_lock(&c->mu);
    c->send_done = true;
    c->send_ok = ok && c->chain_next == c->chain_n;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void dispatch(ordo_grpc_server_t *srv, tag_t *t, bool ok)
{
    ordo_grpc_call_t *c = t->call;

    switch (t->kind) {
    case TAG_NEW:
    case TAG_UNKNOWN:
        on_new_call(c, ok);
        break;
    case TAG_CLOSE:
        pthread_mutex_lock(&c->mu);
        atomic_store(&c->cancelled, c->close_cancelled != 0 || !ok);
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        call_unref(c);
        break;
    case TAG_SEND:
        on_sent(c, ok);
        break;
    case TAG_FINISH:
        call_unref(c);
        break;
    case TAG_SHUTDOWN:
        pthread_mutex_lock(&srv->mu);
        srv->shutdown_tag_seen = true;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        break;
    }
}

static void *cq_thread(void *arg)
{
    ordo_grpc_server_t *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            dispatch(srv, ev.tag, ev.success != 0);
    }
    return NULL;
}

/* "name=role,name=role" into the server's identities. */
static ordo_status parse_roles(ordo_grpc_server_t *srv, const char *spec, ordo_error_t *err)
{
    for (const char *p = spec; *p != '\0';) {
        size_t len = strcspn(p, ","), name_len;
        const char *eq = memchr(p, '=', len);
        char role[16];
        identity_t *id;

        if (len == 0) {
            p++;
            continue;
        }
        name_len = eq != NULL ? (size_t)(eq - p) : 0;
        if (eq == NULL || name_len == 0 || name_len >= MAX_IDENTITY || len - name_len - 1 >= sizeof role)
            return ordo_error_set(err, ORDO_INVALID, "client roles: \"%.*s\" is not name=role", (int)len, p);
        if (srv->n_identities == MAX_IDENTITIES)
            return ordo_error_set(err, ORDO_INVALID, "client roles: more than %d identities", MAX_IDENTITIES);
        id = &srv->identities[srv->n_identities++];
        memcpy(id->name, p, name_len);
        id->name[name_len] = '\0';
        snprintf(role, sizeof role, "%.*s", (int)(len - name_len - 1), eq + 1);
        id->role = ORDO_ROLE_NONE;
        for (ordo_grpc_role r = ORDO_ROLE_READER; r <= ORDO_ROLE_ADMIN; r++)
            if (strcmp(role, ordo_grpc_role_name(r)) == 0)
                id->role = r;
        if (id->role == ORDO_ROLE_NONE)
            return ordo_error_set(err, ORDO_INVALID, "client roles: %s: role \"%s\" is not reader, writer or admin",
                                  id->name, role);
        p += len + (p[len] == ',');
    }
    return ORDO_OK;
}

/* Plaintext, or TLS that asks every client for a certificate from the CA
 * (verified when given; a call without one is refused by authorize, so the
 * client hears UNAUTHENTICATED rather than a failed handshake). */
static ordo_status server_credentials(ordo_grpc_server_t *srv, const ordo_grpc_server_config_t *cfg,
                                      grpc_server_credentials **out, ordo_error_t *err)
{
    ordo_grpc_pem_t pem;
    grpc_ssl_pem_key_cert_pair pair;
    ordo_status st;

    if (!ordo_grpc_tls_on(cfg->tls)) {
        *out = grpc_insecure_server_credentials_create();
        return ORDO_OK;
    }
    if ((st = parse_roles(srv, cfg->client_roles != NULL ? cfg->client_roles : ORDO_GRPC_DEFAULT_ROLES, err)) !=
            ORDO_OK ||
        (st = ordo_grpc_pem_load(cfg->tls, &pem, err)) != ORDO_OK)
        return st;
    pair = (grpc_ssl_pem_key_cert_pair){.private_key = pem.key, .cert_chain = pem.cert};
    *out = grpc_ssl_server_credentials_create_ex(pem.ca, &pair, 1, GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY,
                                                 NULL);
    ordo_grpc_pem_free(&pem);   /* the credentials hold copies */
    if (*out == NULL)
        return ordo_error_set(err, ORDO_INVALID, "gRPC refused the TLS files (--tls-ca, --tls-cert, --tls-key)");
    srv->tls = true;
    return ORDO_OK;
}

ordo_status ordo_grpc_server_create(const ordo_grpc_server_config_t *cfg,
                                    ordo_grpc_server_t **out, ordo_error_t *err)
{
    ordo_grpc_server_t *srv;
    grpc_arg args[] = {
        ORDO_GRPC_INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, cfg->max_message_bytes),
        ORDO_GRPC_INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, 64 * 1024 * 1024),
    };
    grpc_channel_args cargs = {sizeof args / sizeof args[0], args};
    grpc_server_credentials *creds;
    ordo_status st;
    int port;

    *out = NULL;
    if (!ordo_grpc_tls_on(cfg->tls) && !cfg->insecure && !ordo_addr_is_loopback(cfg->addr))
        return ordo_error_set(err, ORDO_INVALID,
                              "refusing to serve gRPC on %s without TLS: set --tls-ca, --tls-cert and --tls-key "
                              "(clients then need certificates too), or --insecure to serve plaintext anyway",
                              cfg->addr);
    if (cfg->threads < 1 || cfg->threads > MAX_THREADS)
        return ordo_error_set(err, ORDO_INVALID, "grpc threads must be 1..%d", MAX_THREADS);
    srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    ordo_grpc_library_init();
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    atomic_init(&srv->stopping, false);
    srv->n_threads = cfg->threads;
    srv->shutdown_tag = (tag_t){TAG_SHUTDOWN, NULL};

    srv->server = grpc_server_create(&cargs, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);

    if ((st = server_credentials(srv, cfg, &creds, err)) != ORDO_OK) {
        ordo_grpc_server_destroy(srv);
        return st;
    }
    port = grpc_server_add_http2_port(srv->server, cfg->addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        ordo_grpc_server_destroy(srv);
        return ordo_error_set(err, ORDO_UNAVAILABLE, "cannot listen on %s", cfg->addr);
    }
    srv->port = port;
    *out = srv;
    return ORDO_OK;
}

ordo_status ordo_grpc_server_add_service(ordo_grpc_server_t *srv,
                                         const ProtobufCServiceDescriptor *desc,
                                         const ordo_grpc_method_t *methods, size_t n_methods,
                                         void *ctx, ordo_error_t *err)
{
    method_entry_t *grown = realloc(srv->methods, (srv->n_methods + desc->n_methods) * sizeof *grown);
    if (grown == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    srv->methods = grown;
    for (size_t i = 0; i < n_methods; i++)
        if (protobuf_c_service_descriptor_get_method_by_name(desc, methods[i].name) == NULL)
            return ordo_error_set(err, ORDO_INVALID, "%s has no method %s", desc->name, methods[i].name);
    for (unsigned i = 0; i < desc->n_methods; i++) {
        method_entry_t *m = &srv->methods[srv->n_methods++];
        memset(m, 0, sizeof *m);
        m->desc = &desc->methods[i];
        m->ctx = ctx;
        m->service = desc->name;
        snprintf(m->path, sizeof m->path, "/%s/%s", desc->name, m->desc->name);
        for (size_t k = 0; k < n_methods; k++) {
            if (strcmp(methods[k].name, m->desc->name) == 0) {
                m->handler = methods[k].handler;
                m->streaming = methods[k].server_streaming;
                m->role = methods[k].role != ORDO_ROLE_NONE ? methods[k].role : ORDO_ROLE_READER;
            }
        }
        m->registered = grpc_server_register_method(srv->server, m->path, NULL,
                                                    GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (m->registered == NULL)
            return ordo_error_set(err, ORDO_INTERNAL, "cannot register %s", m->path);
    }
    return ORDO_OK;
}

ordo_status ordo_grpc_server_start(ordo_grpc_server_t *srv, int *bound_port, ordo_error_t *err)
{
    grpc_server_start(srv->server);
    srv->started = true;
    for (size_t i = 0; i < srv->n_methods; i++)
        for (int k = 0; k < SLOTS_PER_METHOD; k++)
            arm_slot(srv, &srv->methods[i]);
    arm_slot(srv, NULL);
    for (int i = 0; i < srv->n_threads; i++) {
        if (pthread_create(&srv->threads[i], NULL, cq_thread, srv) != 0) {
            srv->n_threads = i;
            return ordo_error_set(err, ORDO_INTERNAL, "cannot start gRPC threads");
        }
        ordo_thread_name(srv->threads[i], "grpc-cq", i);
    }
    if (bound_port != NULL)
        *bound_port = srv->port;
    return ORDO_OK;
}

bool ordo_grpc_server_stopping(const ordo_grpc_server_t *srv)
{
    return atomic_load(&srv->stopping);
}

static bool wait_until(ordo_grpc_server_t *srv, bool (*done)(ordo_grpc_server_t *), int ms)
{
    struct timespec until = ordo_deadline_ms(ms);
    bool ok;

    pthread_mutex_lock(&srv->mu);
    while (!(ok = done(srv)))
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &until) != 0 && !(ok = done(srv)))
            break;
    pthread_mutex_unlock(&srv->mu);
    return ok;
}

static bool all_done(ordo_grpc_server_t *srv)
{
    return srv->shutdown_tag_seen && srv->live_calls == 0;
}

static bool handlers_idle(ordo_grpc_server_t *srv)
{
    return srv->live_calls == 0;
}

void ordo_grpc_server_shutdown(ordo_grpc_server_t *srv, int grace_ms)
{
    if (srv->shut_down)
        return;
    srv->shut_down = true;
    atomic_store(&srv->stopping, true);
    if (srv->started) {
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
        /* The calls in flight get the grace period to finish. gRPC publishes
         * its shutdown only once every client connection has closed too,
         * which clients under load put off (2-5 s measured, the whole grace):
         * once no call of ours is in flight (and a moment for one matched
         * just before the shutdown to arrive), closing them loses nothing. */
        bool idle = wait_until(srv, handlers_idle, grace_ms);
        if (!idle)
            ORDO_WARN("grpc: cancelling calls still in flight after the grace period", "grace_ms=%d", grace_ms);
        if (!wait_until(srv, all_done, idle ? SHUTDOWN_SETTLE_MS : 0)) {
            grpc_server_cancel_all_calls(srv->server);   /* also closes the clients' connections */
            while (!wait_until(srv, all_done, 1000))
                ORDO_WARN("grpc: waiting for handlers to finish their calls", "live=%d", srv->live_calls);
        }
    }
    grpc_server_destroy(srv->server);
    srv->server = NULL;
    grpc_completion_queue_shutdown(srv->cq);
    for (int i = 0; i < srv->n_threads; i++)
        pthread_join(srv->threads[i], NULL);
    srv->n_threads = 0;
    if (!srv->started) {
        /* never started: drain whatever the queue still reports */
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
    }
    grpc_completion_queue_destroy(srv->cq);
    srv->cq = NULL;
}

void ordo_grpc_server_destroy(ordo_grpc_server_t *srv)
{
    if (srv == NULL)
        return;
    ordo_grpc_server_shutdown(srv, 0);
    free(srv->methods);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
    grpc_shutdown();
}

/* A registered method's call is finished with @p code: counted, timed. */
static void count_finished(ordo_grpc_call_t *c, int code)
{
    if (c->m == NULL)
        return;   /* unknown paths are anyone's strings: not labels */
    atomic_fetch_add(&c->m->handled[code >= 0 && code < GRPC_CODES ? code : 2 /* UNKNOWN */], 1);
    ordo_metric_observe_us(&c->m->latency, ordo_mono_us() - c->accepted_us);
}

static const char *const code_names[GRPC_CODES] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};

void ordo_grpc_server_metrics_render(ordo_grpc_server_t *srv, ordo_buf_t *out)
{
    char labels[320];

    if (srv == NULL || srv->n_methods == 0)
        return;
    ordo_metrics_render_header(out, "grpc_server_handled_total", "counter",
                               "calls finished, by method and status code (OK always shown; others once seen)");
    for (size_t i = 0; i < srv->n_methods; i++) {
        method_entry_t *m = &srv->methods[i];
        for (int code = 0; code < GRPC_CODES; code++) {
            long long v = atomic_load(&m->handled[code]);
            if (v > 0 || code == 0)
                ordo_buf_printf(out, "grpc_server_handled_total{grpc_service=\"%s\",grpc_method=\"%s\",grpc_code=\"%s\"} %lld\n",
                                m->service, m->desc->name, code_names[code], v);
        }
    }
    ordo_metrics_render_header(out, "grpc_server_handling_seconds", "histogram",
                               "time from a call's arrival to its final status (a stream's whole life)");
    for (size_t i = 0; i < srv->n_methods; i++) {
        method_entry_t *m = &srv->methods[i];
        snprintf(labels, sizeof labels, "grpc_service=\"%s\",grpc_method=\"%s\"", m->service, m->desc->name);
        ordo_metric_render_histogram(&m->latency, "grpc_server_handling_seconds", labels, out);
    }
}

void ordo_grpc_call_finish(ordo_grpc_call_t *c, ordo_status st, const char *message,
                           const ProtobufCMessage *response)
{
    grpc_op ops[4];
    size_t n = 0;

    memset(ops, 0, sizeof ops);
    add_initial_md(c, ops, &n);
    if (st == ORDO_OK && response != NULL) {
        c->out = ordo_grpc_pack(response);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->out;
        n++;
    }
    c->status_details = grpc_slice_from_copied_string(st == ORDO_OK || message == NULL ? "" : message);
    count_finished(c, ordo_grpc_code_of(st));
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)ordo_grpc_code_of(st);
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    n++;
    if (!c->close_watched) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n].data.recv_close_on_server.cancelled = &c->close_cancelled;
        n++;
    }
    /* The owner's reference now belongs to the finish batch. */
    if (grpc_call_start_batch(c->call, ops, n, &c->t_finish, NULL) != GRPC_CALL_OK) {
        ORDO_ERROR("grpc: cannot send the final status", "path=%s", c->m ? c->m->path : "?");
        call_unref(c);
    }
}

ordo_status ordo_grpc_call_send_many(ordo_grpc_call_t *c, const ProtobufCMessage *const *msgs, size_t n)
{
    return ordo_grpc_call_send_many_within(c, msgs, n, 0);
}

ordo_status ordo_grpc_call_send_many_within(ordo_grpc_call_t *c, const ProtobufCMessage *const *msgs, size_t n,
                                            int timeout_ms)
{
    grpc_byte_buffer **chain;
    struct timespec until = ordo_deadline_ms(timeout_ms);
    bool ok, timed_out = false;

    if (atomic_load(&c->cancelled))
        return ORDO_UNAVAILABLE;
    if (n == 0)
        return ORDO_OK;
    if ((chain = calloc(n, sizeof *chain)) == NULL)
        return ORDO_NO_MEMORY;
    for (size_t i = 0; i < n; i++)
        chain[i] = ordo_grpc_pack(msgs[i]);
    c->chain = chain;
    c->chain_n = n;
    c->chain_next = 0;
    pthread_mutex_lock(&c->mu);
    c->send_done = false;
    pthread_mutex_unlock(&c->mu);
    if (!send_next(c)) {
        pthread_mutex_lock(&c->mu);
        c->send_done = true;
        c->send_ok = false;
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&c->mu);
    while (!c->send_done) {
        if (timeout_ms <= 0 || timed_out)
            pthread_cond_wait(&c->cv, &c->mu);
        else if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0 && !c->send_done) {
            /* the client takes nothing: cancel the call, whose pending send then
             * completes (failed) and ends the chain */
            timed_out = true;
            pthread_mutex_unlock(&c->mu);
            grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                         "the client did not read the stream", NULL);
            pthread_mutex_lock(&c->mu);
        }
    }
    ok = c->send_ok;
    pthread_mutex_unlock(&c->mu);
    for (size_t i = c->chain_next; i < n; i++)   /* not sent: the chain stopped */
        grpc_byte_buffer_destroy(chain[i]);
    free(chain);
    c->chain = NULL;
    return ok ? ORDO_OK : timed_out ? ORDO_TIMEOUT : ORDO_UNAVAILABLE;
}

void ordo_grpc_call_client(ordo_grpc_call_t *c, char *out, size_t cap)
{
    char *peer;
    const char *host;
    size_t len;

    if (c->srv->tls) {
        peer_identity(c->call, out, cap);
        return;
    }
    /* "ipv4:127.0.0.1:54321", "ipv6:[::1]:54321" */
    peer = grpc_call_get_peer(c->call);
    host = peer != NULL && strchr(peer, ':') != NULL ? strchr(peer, ':') + 1 : "";
    len = strrchr(host, ':') != NULL ? (size_t)(strrchr(host, ':') - host) : strlen(host);
    snprintf(out, cap, "%.*s", (int)len, host);
    gpr_free(peer);
}

ordo_status ordo_grpc_call_send(ordo_grpc_call_t *c, const ProtobufCMessage *msg)
{
    return ordo_grpc_call_send_many(c, &msg, 1);
}

bool ordo_grpc_call_cancelled(ordo_grpc_call_t *c)
{
    return atomic_load(&c->cancelled);
}

bool ordo_grpc_call_expired(ordo_grpc_call_t *c)
{
    return atomic_load(&c->cancelled) || gpr_time_cmp(gpr_now(c->deadline.clock_type), c->deadline) >= 0;
}

bool ordo_grpc_call_metadata(const ordo_grpc_call_t *c, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);

    for (size_t i = 0; c != NULL && i < c->md.count; i++) {
        const grpc_metadata *m = &c->md.metadata[i];
        size_t vlen = GRPC_SLICE_LENGTH(m->value);
        if (GRPC_SLICE_LENGTH(m->key) == klen && memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) == 0 &&
            vlen < cap) {
            memcpy(out, GRPC_SLICE_START_PTR(m->value), vlen);
            out[vlen] = '\0';
            return true;
        }
    }
    return false;
}

const ProtobufCMessage *ordo_grpc_call_request(const ordo_grpc_call_t *c)
{
    return c->request;
}

ordo_grpc_server_t *ordo_grpc_call_server(ordo_grpc_call_t *c)
{
    return c->srv;
}
