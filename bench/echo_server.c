/*
 * echo_server: the transport's own ceiling, for the benchmark suite. It
 * serves /eventstore.EventStore/CreateEvent and answers every call at once
 * with an empty CreateEventResponse (OK), touching no database, in one of two
 * ways, so that bench/es_load drives both with the same requests:
 *
 *   --mode bare  gRPC's C core alone: a registered method whose payload
 *                comes with the call, one batch (initial metadata, the
 *                answer, status, close) per call, on --threads
 *                completion-queue threads.
 *   --mode ordo  Ordo's own generic server (lib/grpc_server.c) with an echo
 *                handler: its unpacking, dispatch, packing and metrics, on
 *                the same number of threads.
 *
 * Ordo-glue / bare is what our glue costs; the event store cannot go faster
 * than the ordo figure whatever the database does. With --tls-ca, --tls-cert
 * and --tls-key both serve TLS asking for a client certificate, as the event
 * store does. Prints port=N; stops on SIGTERM or SIGINT. Loopback only.
 */
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstore.pb-c.h"
#include "grpc_internal.h"   /* ordo_grpc_pem_load: the bare server reads the same files the same way */
#include "ordo/daemon.h"
#include "ordo/grpc.h"
#include "ordo/log.h"

#define CREATE_EVENT "/eventstore.EventStore/CreateEvent"

typedef struct echo_config {
    const char *listen, *mode, *log_level;
    int threads, slots;
    ordo_grpc_tls_t tls;
} echo_config_t;

#define OPT(...) ORDO_OPTION(echo_config_t, __VA_ARGS__)

static const ordo_option_t options[] = {
    OPT("listen", NULL, "127.0.0.1:0", ORDO_OPT_STRING, listen, 0, 0, "loopback address (port 0: any free port)"),
    OPT("mode", NULL, "bare", ORDO_OPT_STRING, mode, 0, 0, "bare (gRPC's C core alone) or ordo (lib/grpc_server.c)"),
    OPT("threads", NULL, "1", ORDO_OPT_INT, threads, 1, 8, "completion-queue threads"),
    OPT("slots", NULL, "64", ORDO_OPT_INT, slots, 1, 4096, "bare: calls requested ahead"),
    OPT("log-level", "LOG_LEVEL", "warn", ORDO_OPT_STRING, log_level, 0, 0, "debug, info, warn or error"),
    ORDO_TLS_OPTIONS(echo_config_t, tls),
};

/* ---------------------------------------------------------------- bare */

/* One requested call: armed, answered, then armed again. */
typedef struct slot {
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    int cancelled;
    bool answering;
} slot_t;

typedef struct bare {
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method;
    slot_t *slots;
    int n_slots;
    pthread_t threads[8];
    int n_threads;
} bare_t;

static void bare_arm(bare_t *b, slot_t *s)
{
    memset(s, 0, sizeof *s);
    grpc_metadata_array_init(&s->md);
    if (grpc_server_request_registered_call(b->server, b->method, &s->call, &s->deadline, &s->md, &s->payload, b->cq,
                                            b->cq, s) != GRPC_CALL_OK)
        ORDO_ERROR("echo: request_registered_call failed", "%s", "");
}

/* A call came: answer it whole in one batch. */
static void bare_answer(slot_t *s)
{
    grpc_byte_buffer *empty = grpc_raw_byte_buffer_create(NULL, 0);
    grpc_op ops[4];

    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = empty;
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &s->cancelled;
    s->answering = true;
    if (grpc_call_start_batch(s->call, ops, 4, s, NULL) != GRPC_CALL_OK)
        ORDO_ERROR("echo: start_batch failed", "%s", "");
    grpc_byte_buffer_destroy(empty);   /* (the batch holds its own reference) */
}

static void slot_clear(slot_t *s)
{
    if (s->payload != NULL)
        grpc_byte_buffer_destroy(s->payload);
    grpc_metadata_array_destroy(&s->md);
    if (s->call != NULL)
        grpc_call_unref(s->call);
}

static void *bare_run(void *arg)
{
    bare_t *b = arg;

    for (;;) {
        grpc_event ev = grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        slot_t *s = ev.tag;
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE || s == NULL)   /* (the server's shutdown tag) */
            continue;
        if (!s->answering && ev.success) {
            bare_answer(s);
        } else {
            bool again = ev.success;
            slot_clear(s);
            if (again)
                bare_arm(b, s);
        }
    }
}

static int bare_main(const echo_config_t *cfg)
{
    bare_t b = {0};
    grpc_server_credentials *creds;
    int port, rc;

    ordo_grpc_library_init();
    b.server = grpc_server_create(NULL, NULL);
    b.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(b.server, b.cq, NULL);
    b.method = grpc_server_register_method(b.server, CREATE_EVENT, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (ordo_grpc_tls_on(&cfg->tls)) {   /* as lib/grpc_server.c: a client certificate asked for and verified */
        ordo_grpc_pem_t pem;
        ordo_error_t err;
        if (ordo_grpc_pem_load(&cfg->tls, &pem, &err) != ORDO_OK) {
            ORDO_ERROR("echo: cannot read the TLS files", "err=\"%s\"", err.msg);
            return 1;
        }
        grpc_ssl_pem_key_cert_pair pair = {.private_key = pem.key, .cert_chain = pem.cert};
        creds = grpc_ssl_server_credentials_create_ex(pem.ca, &pair, 1, GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY,
                                                      NULL);
        ordo_grpc_pem_free(&pem);
    } else {
        creds = grpc_insecure_server_credentials_create();
    }
    port = grpc_server_add_http2_port(b.server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        ORDO_ERROR("echo: cannot listen", "listen=%s", cfg->listen);
        return 1;
    }
    grpc_server_start(b.server);
    b.n_slots = cfg->slots;
    b.slots = calloc((size_t)b.n_slots, sizeof *b.slots);
    for (int i = 0; i < b.n_slots; i++)
        bare_arm(&b, &b.slots[i]);
    b.n_threads = cfg->threads;
    for (int i = 0; i < b.n_threads; i++)
        pthread_create(&b.threads[i], NULL, bare_run, &b);
    printf("port=%d\n", port);
    fflush(stdout);
    rc = ordo_daemon_wait();
    grpc_server_shutdown_and_notify(b.server, b.cq, NULL);
    grpc_server_cancel_all_calls(b.server);
    grpc_completion_queue_shutdown(b.cq);
    for (int i = 0; i < b.n_threads; i++)
        pthread_join(b.threads[i], NULL);
    grpc_server_destroy(b.server);
    grpc_completion_queue_destroy(b.cq);
    free(b.slots);
    grpc_shutdown();
    return rc > 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- ordo */

static void on_create_event(void *ctx, ordo_grpc_call_t *call, const ProtobufCMessage *msg)
{
    Eventstore__CreateEventResponse resp = EVENTSTORE__CREATE_EVENT_RESPONSE__INIT;
    (void)ctx;
    (void)msg;
    ordo_grpc_call_finish(call, ORDO_OK, NULL, &resp.base);
}

static int ordo_main(const echo_config_t *cfg)
{
    static const ordo_grpc_method_t methods[] = {{"CreateEvent", on_create_event, false, ORDO_ROLE_WRITER}};
    ordo_grpc_server_config_t scfg = {.addr = cfg->listen, .max_message_bytes = ORDO_GRPC_APPEND_MAX_BYTES,
                                      .threads = cfg->threads, .tls = &cfg->tls};
    ordo_grpc_server_t *srv = NULL;
    ordo_error_t err;
    int port = 0, rc;

    if (ordo_grpc_server_create(&scfg, &srv, &err) != ORDO_OK ||
        ordo_grpc_server_add_service(srv, &eventstore__event_store__descriptor, methods, 1, NULL, &err) != ORDO_OK ||
        ordo_grpc_server_start(srv, &port, &err) != ORDO_OK) {
        ORDO_ERROR("echo: cannot start", "err=\"%s\"", err.msg);
        ordo_grpc_server_destroy(srv);
        return 1;
    }
    printf("port=%d\n", port);
    fflush(stdout);
    rc = ordo_daemon_wait();
    ordo_grpc_server_shutdown(srv, 1000);
    ordo_grpc_server_destroy(srv);
    return rc > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    echo_config_t cfg = {0};
    int rc = ordo_daemon_init("echo_server", options, sizeof options / sizeof options[0], &cfg, &cfg.log_level, argc,
                              argv);

    if (rc >= 0)
        return rc;
    if (!ordo_addr_is_loopback(cfg.listen)) {
        fprintf(stderr, "echo_server: --listen must be a loopback address (plaintext)\n");
        return 2;
    }
    if (strcmp(cfg.mode, "bare") == 0)
        return bare_main(&cfg);
    if (strcmp(cfg.mode, "ordo") == 0)
        return ordo_main(&cfg);
    fprintf(stderr, "echo_server: --mode must be bare or ordo\n");
    return 2;
}
