/**
 * @file bus.h
 * NATS JetStream access (cnats): connection with endless reconnects, the
 * EVENTS stream and its subjects (docs/eventstore.md, "Outbox and bus"; the
 * headers are ordo/envelope.h).
 */
#ifndef ORDO_BUS_H
#define ORDO_BUS_H

#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ordo/config.h"
#include "ordo/status.h"

#define ORDO_BUS_STREAM "EVENTS"
#define ORDO_BUS_SUBJECTS "events.>"
/* Messages a consumer could never handle, each on parked.<durable>, with
 * the reason (ordo/envelope.h, ORDO_HDR_PARKED_*); replayed by the event
 * store's ReplayParked. */
#define ORDO_PARKED_STREAM "PARKED"
#define ORDO_PARKED_SUBJECTS "parked.>"
#define ORDO_PARKED_PREFIX "parked."

typedef struct ordo_bus ordo_bus_t;

/**
 * How a process proves itself to NATS and checks the server: secrets come
 * from files (read at each connect, first line, never logged), never from the
 * URL. All optional; paths not owned.
 */
typedef struct ordo_bus_auth {
    const char *user;            /**< a NATS user, with password_file */
    const char *password_file;   /**< its password */
    const char *token_file;      /**< or a token */
    const char *creds_file;      /**< or a .creds file (JWT and NKey seed; cnats reads it) */
    const char *ca_file;         /**< TLS: the CA of the server's certificate (PEM) */
    const char *cert_file;       /**< TLS: a client certificate (optional, with key_file) */
    const char *key_file;
} ordo_bus_auth_t;

/** The NATS options of a program whose config type @p T has an ordo_bus_auth_t field @p f. */
#define ORDO_NATS_OPTIONS(T, f)                                                                                     \
    ORDO_OPTION(T, "nats-user", "NATS_USER", "", ORDO_OPT_STRING, f.user, 0, 0, "NATS user (with --nats-password-file)"), \
    ORDO_OPTION(T, "nats-password-file", "NATS_PASSWORD_FILE", "", ORDO_OPT_STRING, f.password_file, 0, 0,          \
                "file holding the NATS user's password"),                                                           \
    ORDO_OPTION(T, "nats-token-file", "NATS_TOKEN_FILE", "", ORDO_OPT_STRING, f.token_file, 0, 0,                   \
                "file holding a NATS token (instead of a user)"),                                                   \
    ORDO_OPTION(T, "nats-creds", "NATS_CREDS", "", ORDO_OPT_STRING, f.creds_file, 0, 0,                             \
                "NATS .creds file (JWT and NKey seed; instead of a user)"),                                         \
    ORDO_OPTION(T, "nats-ca", "NATS_CA", "", ORDO_OPT_STRING, f.ca_file, 0, 0,                                      \
                "CA of the NATS server's certificate (PEM): connect with TLS"),                                     \
    ORDO_OPTION(T, "nats-cert", "NATS_CERT", "", ORDO_OPT_STRING, f.cert_file, 0, 0,                                \
                "client certificate for NATS (PEM, optional, with --nats-key)"),                                    \
    ORDO_OPTION(T, "nats-key", "NATS_KEY", "", ORDO_OPT_STRING, f.key_file, 0, 0, "its private key (PEM file)")

typedef struct ordo_bus_config {
    const char *url;          /**< "nats://127.0.0.1:4222" */
    const char *name;         /**< connection name shown by the server */
    int connect_timeout_ms;
    jsOptions *js_options;    /**< may be NULL; copied by cnats */
    const ordo_bus_auth_t *auth; /**< may be NULL: no credentials, no TLS */
} ordo_bus_config_t;

/**
 * Connects and creates a JetStream context. The connection reconnects on its
 * own forever; publishes while it is reconnecting fail at once instead of
 * being buffered (so nothing is sent out of order after a reconnect).
 */
ordo_status ordo_bus_connect(const ordo_bus_config_t *cfg, ordo_bus_t **out, ordo_error_t *err);

/** Closes and frees. Accepts NULL. */
void ordo_bus_destroy(ordo_bus_t *bus);

bool ordo_bus_connected(ordo_bus_t *bus);
jsCtx *ordo_bus_js(ordo_bus_t *bus);
natsConnection *ordo_bus_nc(ordo_bus_t *bus);

/** A new subject for replies to this connection, under the inbox prefix its
 *  user may subscribe to (wildcards below it are the caller's). */
void ordo_bus_inbox(ordo_bus_t *bus, char *out, size_t cap);

/**
 * How many times the connection has reconnected. A server may come back
 * without its JetStream state (the stream and the durables gone, so that
 * publishes find no responders and pull requests only time out): whoever
 * relies on that state checks it again when this number changes.
 */
unsigned ordo_bus_reconnects(ordo_bus_t *bus);

/** The limits of the EVENTS stream (the event store's --stream-max-age-s
 *  and --stream-max-bytes): the oldest messages go first beyond them. */
typedef struct ordo_stream_limits {
    int64_t max_age_s;
    int64_t max_bytes;
} ordo_stream_limits_t;

enum {
    ORDO_EVENTS_MAX_AGE_S = 7 * 24 * 3600,       /**< defaults of the EVENTS stream's limits */
    ORDO_PARKED_MAX_AGE_S = 30 * 24 * 3600,      /**< the PARKED stream's: a month, */
    ORDO_PARKED_MAX_BYTES = 256 * 1024 * 1024,   /**< 256 MiB, then new parks are refused (and held) */
};
#define ORDO_EVENTS_MAX_BYTES ((int64_t)1 << 30)

/**
 * Creates the EVENTS stream (events.>, file storage, 2 min duplicate
 * window) and the PARKED stream (parked.>, file storage, a month or 256 MiB,
 * refusing new messages when full) when missing (logged). With @p limits
 * (the event store) an EVENTS stream whose limits differ is updated to
 * them; without (a service), EVENTS is created with the defaults above.
 */
ordo_status ordo_bus_ensure_streams(ordo_bus_t *bus, const ordo_stream_limits_t *limits, ordo_error_t *err);

/** One durable consumer of the EVENTS stream and how far behind it is. */
typedef struct ordo_bus_lag {
    char name[64];
    int64_t pending;          /**< stream messages it has not been handed yet */
    int64_t ack_pending;      /**< handed over, not yet acknowledged */
    int64_t redelivered;      /**< handed over more than once, not yet acknowledged */
    int64_t delivered;        /**< the last stream sequence handed over */
    int64_t parked;           /**< its messages in the PARKED stream */
} ordo_bus_lag_t;

/** The durable consumers of EVENTS, sorted by name, with their parked
 *  messages, in *out (malloc'ed: the caller frees it; NULL when there are
 *  none) and their number in *n. */
ordo_status ordo_bus_lags(ordo_bus_t *bus, ordo_bus_lag_t **out, size_t *n, ordo_error_t *err);

/** Maps a cnats status (and JetStream error code, or 0) to ordo_status, with @p what as context. */
ordo_status ordo_status_of_nats(natsStatus s, jsErrCode jerr, const char *what, ordo_error_t *err);

/** ordo_status_of_nats for a call on @p bus that failed with @p s: when
 *  the server has refused this connection something for its user's
 *  permissions (a JetStream request it may not send goes unanswered, and
 *  cnats then reports a timeout), ORDO_FORBIDDEN with the server's words. */
ordo_status ordo_bus_status(ordo_bus_t *bus, natsStatus s, jsErrCode jerr, const char *what, ordo_error_t *err);

/**
 * Writes the subject events.<aggregate_type>.<event_type> into @p out, with
 * the characters NATS reserves in a token (space, '*', '>', control
 * characters) replaced by '_'. @return false if it does not fit.
 */
bool ordo_bus_subject(char *out, size_t cap, const char *aggregate_type, const char *event_type);

#endif
