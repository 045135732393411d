/*
 * gRPC client over protobuf-c messages (gRPC C core). Each blocking call uses
 * its own pluck completion queue, so any number of threads may share one
 * client; asynchronous calls share one queue whose thread (started at the
 * first such call) runs their callbacks.
 */
#include "grpc_internal.h"

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/log.h"

struct ordo_grpc_client {
    grpc_channel *channel;
    pthread_mutex_t mu;            /* guards the start of the completion thread */
    grpc_completion_queue *cq;     /* asynchronous calls' queue; NULL until the first */
    pthread_t thread;              /* runs their callbacks */
};

struct ordo_grpc_stream {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *recv;
    grpc_status_code status;
    grpc_slice details;
    bool recv_pending;              /* a RECV_MESSAGE batch is in flight */
    bool ended;                     /* the status was received */
};

enum { RECONNECT_FIRST_MS = 100, RECONNECT_MAX_MS = 1000 };

/* The host of @p target's first server ("ipv4:127.0.0.1:1,127.0.0.1:2" ->
 * "127.0.0.1", "[::1]:5" -> "::1", "dns:///h:5" -> "h"). */
static void server_host(const char *target, char *out, size_t cap)
{
    const char *p = target, *end;
    size_t len;

    if (strncmp(p, "ipv4:", 5) == 0 || strncmp(p, "ipv6:", 5) == 0)
        p += 5;
    else if (strncmp(p, "dns:///", 7) == 0)
        p += 7;
    end = p + strcspn(p, ",");
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        p++;
        end = close != NULL ? close : end;
    } else {
        const char *colon = NULL;
        for (const char *q = p; q < end; q++)
            if (*q == ':')
                colon = q;
        end = colon != NULL ? colon : end;
    }
    len = (size_t)(end - p) < cap - 1 ? (size_t)(end - p) : cap - 1;
    memcpy(out, p, len);
    out[len] = '\0';
}

/* Plaintext, or TLS checking the server against the CA and presenting our certificate. */
static ordo_status channel_credentials(const ordo_grpc_tls_t *tls, grpc_channel_credentials **out, ordo_error_t *err)
{
    ordo_grpc_pem_t pem;
    grpc_ssl_pem_key_cert_pair pair;
    ordo_status st;

    if (!ordo_grpc_tls_on(tls)) {
        *out = grpc_insecure_credentials_create();
        return ORDO_OK;
    }
    if ((st = ordo_grpc_pem_load(tls, &pem, err)) != ORDO_OK)
        return st;
    pair = (grpc_ssl_pem_key_cert_pair){.private_key = pem.key, .cert_chain = pem.cert};
    *out = grpc_ssl_credentials_create_ex(pem.ca, &pair, NULL, NULL);
    ordo_grpc_pem_free(&pem);   /* the credentials hold copies */
    return *out != NULL ? ORDO_OK : ordo_error_set(err, ORDO_INVALID, "gRPC refused the TLS files");
}

ordo_status ordo_grpc_client_create(const char *target, int max_message_bytes, const ordo_grpc_tls_t *tls,
                                    ordo_grpc_client_t **out, ordo_error_t *err)
{
    grpc_arg args[6] = {
        ORDO_GRPC_INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, max_message_bytes),
        ORDO_GRPC_INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, max_message_bytes),
        /* a target listing several servers ("ipv4:a:1,b:2") spreads calls over them */
        {.type = GRPC_ARG_STRING, .key = (char *)GRPC_ARG_LB_POLICY_NAME, .value.string = (char *)"round_robin"},
        /* Reconnect soon once the server is back: gRPC's default backoff grows
         * to 120 s while a server stays unreachable (a POST still failed 12.9 s
         * after the event store came back from a 40 s outage). Capped here, and
         * with the backup poller's period that ordo_daemon_init sets, a client
         * is through within about a second. */
        ORDO_GRPC_INT_ARG(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, RECONNECT_FIRST_MS),
        ORDO_GRPC_INT_ARG(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, RECONNECT_MAX_MS),
    };
    size_t n_args = 5;
    grpc_channel_args cargs = {n_args, args};
    char host[256];
    grpc_channel_credentials *creds;
    ordo_grpc_client_t *c = calloc(1, sizeof *c);

    ordo_status st;

    *out = NULL;
    if (c == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    ordo_grpc_library_init();
    if ((st = channel_credentials(tls, &creds, err)) != ORDO_OK) {
        free(c);
        grpc_shutdown();
        return st;
    }
    if (ordo_grpc_tls_on(tls)) {
        /* A target that lists servers ("ipv4:a:1,b:2") is no host name: the
         * servers' certificates are checked against the first one's host. */
        server_host(target, host, sizeof host);
        args[n_args++] = (grpc_arg){.type = GRPC_ARG_STRING, .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                    .value.string = host};
        cargs.num_args = n_args;
    }
    c->channel = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if (c->channel == NULL) {
        free(c);
        grpc_shutdown();
        return ordo_error_set(err, ORDO_INVALID, "cannot create a channel to %s", target);
    }
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return ORDO_OK;
}

void ordo_grpc_client_destroy(ordo_grpc_client_t *c)
{
    if (c == NULL)
        return;
    if (c->cq != NULL) {   /* (the calls left finish by their deadlines; their callbacks run first) */
        grpc_completion_queue_shutdown(c->cq);
        pthread_join(c->thread, NULL);
        grpc_completion_queue_destroy(c->cq);
    }
    grpc_channel_destroy(c->channel);
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
}

static void cq_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type
           != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}

static ordo_status status_to_error(grpc_status_code code, grpc_slice details, ordo_error_t *err)
{
    ordo_status st = ordo_status_of_grpc_code(code);
    if (st != ORDO_OK) {
        char *text = grpc_slice_to_c_string(details);
        ordo_error_set(err, st, "%s", text[0] ? text : "call failed");
        gpr_free(text);
    }
    return st;
}

ordo_status ordo_grpc_client_unary(ordo_grpc_client_t *c, const char *path,
                                   const ProtobufCMessage *request,
                                   const ProtobufCMessageDescriptor *response_desc,
                                   int timeout_ms, ProtobufCMessage **response,
                                   ordo_error_t *err)
{
    return ordo_grpc_client_unary_traced(c, path, request, response_desc, timeout_ms, NULL, response, err);
}

/* One unary call's state, shared by the blocking form (its own pluck queue)
 * and the asynchronous one (the client's completion thread). */
typedef struct unary {
    grpc_call *call;
    grpc_metadata trace;
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *send, *recv;
    grpc_status_code code;
    grpc_slice details;
    const char *path;
    const ProtobufCMessageDescriptor *response_desc;
    ordo_grpc_done_cb done;   /* (asynchronous calls) */
    void *arg;
} unary_t;

/* Starts @p u on @p cq with @p tag: send the request (with @p traceparent,
 * copied, as metadata), close, and receive the answer and status in one batch. */
static ordo_status unary_start(ordo_grpc_client_t *c, grpc_completion_queue *cq, unary_t *u, const char *path,
                               const ProtobufCMessage *request, const ProtobufCMessageDescriptor *response_desc,
                               int timeout_ms, const char *traceparent, void *tag, ordo_error_t *err)
{
    grpc_op ops[6];

    u->path = path;
    u->response_desc = response_desc;
    u->code = GRPC_STATUS_UNKNOWN;
    u->details = grpc_empty_slice();
    u->send = ordo_grpc_pack(request);
    grpc_metadata_array_init(&u->initial_md);
    grpc_metadata_array_init(&u->trailing_md);
    u->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                       grpc_slice_from_static_string(path), NULL, ordo_grpc_deadline_ms(timeout_ms),
                                       NULL);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (traceparent != NULL && traceparent[0] != '\0') {
        u->trace.key = grpc_slice_from_static_string("traceparent");
        u->trace.value = grpc_slice_from_copied_string(traceparent);
        ops[0].data.send_initial_metadata.count = 1;
        ops[0].data.send_initial_metadata.metadata = &u->trace;
    }
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &u->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &u->trailing_md;
    ops[5].data.recv_status_on_client.status = &u->code;
    ops[5].data.recv_status_on_client.status_details = &u->details;
    if (u->send == NULL || grpc_call_start_batch(u->call, ops, 6, tag, NULL) != GRPC_CALL_OK)
        return ordo_error_set(err, ORDO_INTERNAL, "cannot start the call %s", path);
    return ORDO_OK;
}

/* The finished call's outcome: its status, and on ORDO_OK the answer unpacked into *@p response. */
static ordo_status unary_result(unary_t *u, ProtobufCMessage **response, ordo_error_t *err)
{
    ordo_status st = status_to_error(u->code, u->details, err);

    *response = NULL;
    if (st == ORDO_OK) {
        if (u->recv == NULL)
            st = ordo_error_set(err, ORDO_INTERNAL, "%s answered OK without a message", u->path);
        else if ((*response = ordo_grpc_unpack(u->response_desc, u->recv, NULL, 0)) == NULL)
            st = ordo_error_set(err, ORDO_INTERNAL, "%s answered a malformed %s", u->path, u->response_desc->name);
    }
    return st;
}

static void unary_free(unary_t *u)
{
    if (u->call != NULL)
        grpc_call_unref(u->call);
    if (u->send != NULL)
        grpc_byte_buffer_destroy(u->send);
    if (u->recv != NULL)
        grpc_byte_buffer_destroy(u->recv);
    grpc_slice_unref(u->details);
    grpc_slice_unref(u->trace.value);   /* (the empty slice when no trace was sent) */
    grpc_metadata_array_destroy(&u->initial_md);
    grpc_metadata_array_destroy(&u->trailing_md);
}

ordo_status ordo_grpc_client_unary_traced(ordo_grpc_client_t *c, const char *path, const ProtobufCMessage *request,
                                          const ProtobufCMessageDescriptor *response_desc, int timeout_ms,
                                          const char *traceparent, ProtobufCMessage **response, ordo_error_t *err)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    unary_t u = {0};
    ordo_status st;

    *response = NULL;
    st = unary_start(c, cq, &u, path, request, response_desc, timeout_ms, traceparent, &u, err);
    if (st == ORDO_OK) {
        grpc_completion_queue_pluck(cq, &u, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        st = unary_result(&u, response, err);
    }
    unary_free(&u);
    cq_destroy(cq);
    return st;
}

/* The client's completion thread: runs each finished asynchronous call's
 * callback, until the queue is shut down (ordo_grpc_client_destroy). */
static void *completion_thread(void *arg)
{
    ordo_grpc_client_t *c = arg;

    for (;;) {
        grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        unary_t *u = ev.tag;
        ProtobufCMessage *response;
        ordo_error_t err = {0};
        ordo_status st = unary_result(u, &response, &err);
        ordo_grpc_done_cb done = u->done;
        void *done_arg = u->arg;
        unary_free(u);
        free(u);
        done(done_arg, st, response, &err);
    }
}

/* The completion queue and its thread, made at the first asynchronous call. */
static ordo_status async_ready(ordo_grpc_client_t *c, ordo_error_t *err)
{
    ordo_status st = ORDO_OK;

    pthread_mutex_lock(&c->mu);
    if (c->cq == NULL) {
        c->cq = grpc_completion_queue_create_for_next(NULL);
        if (pthread_create(&c->thread, NULL, completion_thread, c) != 0) {
            grpc_completion_queue_destroy(c->cq);
            c->cq = NULL;
            st = ordo_error_set(err, ORDO_UNAVAILABLE, "cannot start the gRPC completion thread");
        } else {
            ordo_thread_name(c->thread, "grpc-done", -1);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return st;
}

ordo_status ordo_grpc_client_unary_async(ordo_grpc_client_t *c, const char *path, const ProtobufCMessage *request,
                                         const ProtobufCMessageDescriptor *response_desc, int timeout_ms,
                                         const char *traceparent, ordo_grpc_done_cb done, void *arg, ordo_error_t *err)
{
    unary_t *u;
    ordo_status st;

    if ((st = async_ready(c, err)) != ORDO_OK)
        return st;
    if ((u = calloc(1, sizeof *u)) == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    u->done = done;
    u->arg = arg;
    if ((st = unary_start(c, c->cq, u, path, request, response_desc, timeout_ms, traceparent, u, err)) != ORDO_OK) {
        unary_free(u);
        free(u);
    }
    return st;
}

ordo_status ordo_grpc_stream_open(ordo_grpc_client_t *c, const char *path,
                                  const ProtobufCMessage *request, int timeout_ms,
                                  ordo_grpc_stream_t **out, ordo_error_t *err)
{
    ordo_grpc_stream_t *s = calloc(1, sizeof *s);
    grpc_byte_buffer *send;
    grpc_op ops[4];
    grpc_call_error e;

    *out = NULL;
    if (s == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
                                       grpc_slice_from_static_string(path), NULL,
                                       ordo_grpc_deadline_ms(timeout_ms), NULL);
    send = ordo_grpc_pack(request);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    e = grpc_call_start_batch(s->call, ops, 4, (void *)1, NULL);
    if (e == GRPC_CALL_OK)
        grpc_completion_queue_pluck(s->cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_byte_buffer_destroy(send);
    if (e != GRPC_CALL_OK) {
        ordo_grpc_stream_close(s);
        return ordo_error_set(err, ORDO_INTERNAL, "cannot start the call %s", path);
    }
    *out = s;
    return ORDO_OK;
}

static void stream_recv_status(ordo_grpc_stream_t *s)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    op.data.recv_status_on_client.status = &s->status;
    op.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &op, 1, (void *)3, NULL) == GRPC_CALL_OK)
        grpc_completion_queue_pluck(s->cq, (void *)3, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    else
        s->status = GRPC_STATUS_INTERNAL;
    s->ended = true;
}

ordo_status ordo_grpc_stream_next(ordo_grpc_stream_t *s, const ProtobufCMessageDescriptor *desc,
                                  ProtobufCMessage **out, ordo_error_t *err)
{
    grpc_op op;
    ordo_status st;

    *out = NULL;
    if (s->ended)
        goto ended;
    if (!s->recv_pending) {
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->recv;
        if (grpc_call_start_batch(s->call, &op, 1, (void *)2, NULL) != GRPC_CALL_OK)
            return ordo_error_set(err, ORDO_INTERNAL, "cannot read from the stream");
        s->recv_pending = true;
    }
    grpc_completion_queue_pluck(s->cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    s->recv_pending = false;
    if (s->recv != NULL) {
        *out = ordo_grpc_unpack(desc, s->recv, NULL, 0);
        grpc_byte_buffer_destroy(s->recv);
        s->recv = NULL;
        if (*out == NULL)
            return ordo_error_set(err, ORDO_INTERNAL, "the stream sent a malformed %s", desc->name);
        return ORDO_OK;
    }
    stream_recv_status(s);
ended:
    st = status_to_error(s->status, s->details, err);
    return st == ORDO_OK ? ordo_error_set(err, ORDO_NOT_FOUND, "end of stream") : st;
}

void ordo_grpc_stream_close(ordo_grpc_stream_t *s)
{
    if (s == NULL)
        return;
    if (s->call != NULL) {
        grpc_call_cancel(s->call, NULL);
        if (s->recv_pending) {
            grpc_completion_queue_pluck(s->cq, (void *)2, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (s->recv != NULL)
                grpc_byte_buffer_destroy(s->recv);
        }
        if (!s->ended)
            stream_recv_status(s);
        grpc_call_unref(s->call);
    }
    cq_destroy(s->cq);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    free(s);
}
