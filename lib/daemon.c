#include "ordo/daemon.h"
#include "ordo/svcmetrics.h"

#include <gnutls/gnutls.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "ordo/grpc.h"
#include "ordo/log.h"
#include "ordo/saga.h"

/* libpq loads GnuTLS (through libldap, for LDAP service lookups), and
 * GnuTLS's constructor initialised it at load: ~0.6-1 MB of pages a daemon
 * never needs (orderquery after the same load: 20.7 MB with it, 19.7 MB
 * without). GnuTLS's documented
 * switch, defined here, in the object every daemon links for
 * ordo_daemon_init, skips that. Whoever needs GnuTLS initialises it: libldap
 * for an ldaps:// lookup, libmicrohttpd when an HTTP server loads it. */
GNUTLS_SKIP_GLOBAL_INIT

/* cnats seeds its NUIDs with OpenSSL's RAND_bytes when it starts, and
 * OpenSSL's default set-up then loads its error strings: ~0.5 MB of pages
 * (the event store's file-backed RSS under load 16.3 -> 15.8 MB) for text
 * only a TLS error would print.
 * Asked first not to, OpenSSL ignores later requests for them (its
 * documented rule); a TLS error is then logged with its code, which
 * `openssl errstr CODE` spells out. The configuration (openssl.cnf: the
 * system's TLS policy) is still read. */
static void openssl_without_error_strings(void)
{
    OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS, NULL);
}

static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
}

int ordo_daemon_init(const char *name, const ordo_option_t *opts, size_t n, void *cfg,
                     const char *const *log_level, int argc, char **argv)
{
    sigset_t set;
    int level, rc;

    if ((rc = ordo_config_cli(name, opts, n, cfg, argc, argv)) >= 0)
        return rc;
    if ((level = ordo_log_level_parse(*log_level)) < 0) {
        fprintf(stderr, "%s: --log-level must be debug, info, warn or error\n", name);
        return 2;
    }
    ordo_log_init(name, (ordo_log_level)level);
    /* glibc gives threads that allocate at once arenas of their own, up to 8
     * per core (16 here, each keeping what it once held): two are enough for
     * our few busy threads and keep the heap small. */
    mallopt(M_ARENA_MAX, 2);
    openssl_without_error_strings();
    /* A client channel's reconnection makes progress only while something
     * polls it: a call in flight, or gRPC's backup poller (every 5 s by
     * default). Calls to a server that is down fail at once, so after an
     * outage every connection attempt waited for that poller: 5-10 s more
     * before calls went through again. Every 200 ms instead (unless the
     * environment says otherwise); read by gRPC when it starts. */
    setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "200", 0);
    /* Blocked everywhere, taken by sigwait in ordo_daemon_wait: no handler runs at all. */
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return -1;
}

int ordo_daemon_wait(void)
{
    const struct timespec tick = {ORDO_DAEMON_TRIM_S, 0};
    sigset_t set;
    int sig;

    stop_signals(&set);
    /* Meanwhile, hand the pages freed after a burst back to the system:
     * glibc returns an arena's free memory only from its top on its own. */
    while ((sig = sigtimedwait(&set, NULL, &tick)) < 0)
        malloc_trim(0);
    return sig;
}

/* A saga service's lanes: each lane's messages through ordo_saga_run. */
typedef struct saga_service {
    ordo_saga_decide_cb decide;
    void *ctx;
    ordo_grpc_client_t *store;
    int timeout_ms;
} saga_service_t;

static void saga_lane(void *arg, int lane, const ordo_bus_event_t *events, int n, ordo_msg_action *actions)
{
    const saga_service_t *s = arg;
    (void)lane;
    ordo_saga_run(s->store, s->timeout_ms, s->decide, s->ctx, events, n, actions);
}

int ordo_daemon_run_consumers(const ordo_daemon_consumer_t *consumers, int n, const char *nats_url,
                              const ordo_bus_auth_t *nats_auth, const char *eventstore_addr,
                              const ordo_grpc_tls_t *tls, const char *metrics_addr, int timeout_ms,
                              ordo_saga_decide_cb decide, void *ctx, ordo_grpc_client_t **store)
{
    saga_service_t saga = {decide, ctx, NULL, timeout_ms};
    ordo_consumer_t *running[ORDO_DAEMON_MAX_CONSUMERS] = {NULL};
    ordo_consumer_config_t ccfg[ORDO_DAEMON_MAX_CONSUMERS];
    ordo_service_metrics_t *metrics = calloc(1, sizeof *metrics);
    ordo_http_server_t *http = NULL;
    ordo_error_t err = {0};
    int started = 0, sig, port = 0;

    if (metrics == NULL)
        ordo_error_set(&err, ORDO_NO_MEMORY, "out of memory");
    else if (n < 1 || n > ORDO_DAEMON_MAX_CONSUMERS)
        ordo_error_set(&err, ORDO_INVALID, "a service runs 1 to %d consumers", ORDO_DAEMON_MAX_CONSUMERS);
    else if (ordo_grpc_client_create(eventstore_addr, ORDO_GRPC_APPEND_MAX_BYTES, tls, store, &err) == ORDO_OK) {
        for (int i = 0; i < n; i++) {
            ordo_consumer_config_init(&ccfg[i]);
            ccfg[i].nats_url = nats_url;
            ccfg[i].nats_auth = nats_auth;
            ccfg[i].durable = consumers[i].durable;
            ccfg[i].filter_subject = consumers[i].subject;
            ccfg[i].concurrency = consumers[i].concurrency;
            ccfg[i].batch_handler = saga_lane;
        }
        saga.store = *store;
        ordo_service_metrics_init(metrics, ccfg, n);
        bool serving = !ordo_opt_given(metrics_addr) ||
                       ordo_service_metrics_serve(metrics, metrics_addr, &http, &port, &err) == ORDO_OK;
        for (; serving && started < n; started++) {
            if (ordo_consumer_start(&ccfg[started], NULL, &saga, &running[started], &err) != ORDO_OK)
                break;
            ordo_service_metrics_watch(metrics, started, running[started]);
        }
    }
    if (started == n) {
        char shown[512];
        if (http != NULL) {
            printf("metrics_port=%d\n", port);
            fflush(stdout);
        }
        for (int i = 0; i < n; i++)
            ORDO_INFO("running", "consumer=%s subject=%s eventstore=%s nats=%s", consumers[i].durable,
                      consumers[i].subject, eventstore_addr, ordo_log_url(nats_url, shown, sizeof shown));
        sig = ordo_daemon_wait();
        ORDO_INFO("stopping", "signal=%d", sig);
    } else {
        ORDO_ERROR("cannot start", "err=\"%s\"", err.msg);
    }
    for (int i = 0; i < started; i++)
        ordo_consumer_destroy(running[i]);
    ordo_http_stop(http);
    free(metrics);
    ordo_grpc_client_destroy(*store);
    *store = NULL;
    return started == n ? 0 : 1;
}
