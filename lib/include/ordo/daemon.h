/**
 * @file daemon.h
 * What every Ordo daemon's main() does the same way: read its config table,
 * print --help, set up logging, and wait for SIGTERM/SIGINT.
 */
#ifndef ORDO_DAEMON_H
#define ORDO_DAEMON_H

#include <signal.h>
#include <stddef.h>

#include "ordo/config.h"
#include "ordo/consumer.h"
#include "ordo/saga.h"
#include "ordo/grpc.h"

/** The gRPC TLS options of a daemon whose config type @p T has an
 *  ordo_grpc_tls_t field @p f: its server (if any) and its clients use them. */
#define ORDO_TLS_OPTIONS(T, f)                                                                                      \
    ORDO_OPTION(T, "tls-ca", "ORDO_TLS_CA", "", ORDO_OPT_STRING, f.ca_file, 0, 0,                                   \
                "CA certificate (PEM file) of the gRPC peers; with --tls-cert and --tls-key: TLS with client "      \
                "certificates on every gRPC connection"),                                                           \
    ORDO_OPTION(T, "tls-cert", "ORDO_TLS_CERT", "", ORDO_OPT_STRING, f.cert_file, 0, 0,                             \
                "this process's certificate (PEM file); its common name is its identity"),                          \
    ORDO_OPTION(T, "tls-key", "ORDO_TLS_KEY", "", ORDO_OPT_STRING, f.key_file, 0, 0,                                \
                "this process's private key (PEM file)")

/** The options of a daemon's gRPC server (config type @p T, fields client_roles and insecure). */
#define ORDO_GRPC_SERVER_OPTIONS(T)                                                                                 \
    ORDO_OPTION(T, "client-roles", "ORDO_CLIENT_ROLES", ORDO_GRPC_DEFAULT_ROLES, ORDO_OPT_STRING, client_roles, 0,   \
                0, "with TLS: client certificate common name = role (reader, writer, admin), comma separated"),     \
    ORDO_OPTION(T, "insecure", "ORDO_INSECURE", "false", ORDO_OPT_BOOL, insecure, 0, 0,                              \
                "serve plaintext gRPC on an address other than loopback (refused otherwise)")

/**
 * Loads @p opts into @p cfg; *@p log_level (a field of @p cfg) names the level.
 * Blocks SIGTERM/SIGINT in this and every later thread (ordo_daemon_wait
 * takes them) and ignores SIGPIPE. Call first, before any thread starts.
 * @return -1 to go on, or the exit code to return from main (0 after --help, 2 on bad config).
 */
int ordo_daemon_init(const char *name, const ordo_option_t *opts, size_t n, void *cfg,
                     const char *const *log_level, int argc, char **argv);

/** Seconds between ordo_daemon_wait()'s returns of free heap pages to the system. */
#define ORDO_DAEMON_TRIM_S 1

/**
 * Blocks until SIGTERM or SIGINT; returns the signal. Meanwhile, every
 * ORDO_DAEMON_TRIM_S seconds, returns the heap's free pages to the system.
 */
int ordo_daemon_wait(void);

struct ordo_grpc_client;

/** Most consumers one saga service runs. */
#define ORDO_DAEMON_MAX_CONSUMERS 4

/** One durable consumer of a saga service: the events on @c subject, on @c concurrency lanes. */
typedef struct ordo_daemon_consumer {
    const char *durable;
    const char *subject;
    int concurrency;
} ordo_daemon_consumer_t;

/**
 * The whole life of a saga service: opens *@p store (an event store client,
 * also the decider's through its context if it reads the store), runs the
 * @p n consumers (each its own durable, subject and lanes; every lane's
 * messages go through ordo_saga_run with @p decide and calls of
 * @p timeout_ms), serves their
 * /metrics on @p metrics_addr unless it is "" (ordo/svcmetrics.h; prints
 * metrics_port=N), and on SIGTERM finishes the messages in hand and stops.
 * @return the exit code for main.
 */
int ordo_daemon_run_consumers(const ordo_daemon_consumer_t *consumers, int n, const char *nats_url,
                              const ordo_bus_auth_t *nats_auth, const char *eventstore_addr,
                              const ordo_grpc_tls_t *tls, const char *metrics_addr, int timeout_ms,
                              ordo_saga_decide_cb decide, void *ctx, struct ordo_grpc_client **store);

#endif
