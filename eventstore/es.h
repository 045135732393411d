/*
 * eventstore: private declarations shared by its modules.
 *
 * Threads: gRPC completion-queue thread(s) validate requests and hand them
 * on; writer threads group-commit CreateEvent calls; reader threads answer
 * GetEvents and admin calls; one thread per GetEventsStream call; one
 * watermark thread; one outbox relay thread. Each thread that talks to the
 * database owns its own connection.
 */
#ifndef ES_H
#define ES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eventstore.pb-c.h"
#include "ordo/bus.h"
#include "ordo/grpc.h"
#include "ordo/http.h"
#include "ordo/metrics.h"
#include "ordo/pg.h"
#include "ordo/workers.h"
#include "ordo/status.h"

typedef struct es_config {
    const char *database_url;
    const char *nats_url;
    const char *listen;
    const char *log_level;
    int max_message_bytes;   /* whole gRPC request */
    int max_event_bytes;     /* one event_data */
    int max_batch_events;    /* events in one CreateEvent */
    int writers;
    int group_commit_max;    /* calls per write transaction; 1 = no group commit */
    int group_commit_wait_us; /* how long a lane waits for more calls to join a small batch (writer.c: take) */
    int readers;
    int max_streams;
    int max_streams_per_client; /* open GetEventsStream calls of one client (identity with TLS, else address) */
    int stream_idle_ms;      /* a stream whose client takes nothing for this long is ended */
    int read_max_bytes;      /* a GetEvents page, and a stream's page, stop at about this many bytes */
    int gap_timeout_ms;
    int statement_timeout_ms;
    int write_queue_calls;   /* CreateEvent calls admitted and not yet answered, at most */
    int write_queue_bytes;   /* and their bytes */
    bool relay;
    int reconcile_after_s;   /* a stream of reconcile_type whose last event is this old and not final is
                                re-driven (0: off) */
    int reconcile_every_ms;
    const char *reconcile_type;    /* "order" */
    const char *reconcile_final;   /* its final event types, comma-separated */
    int stream_max_age_s;    /* the EVENTS stream's limits: older messages go, */
    int stream_max_mb;       /* and the oldest beyond this size */
    int relay_batch;
    int relay_lease_ms;      /* how long a silent relay keeps the others from publishing */
    int shutdown_grace_ms;
    int grpc_threads;
    bool migrate;
    const char *metrics_addr; /* "": no metrics endpoint */
    ordo_grpc_tls_t tls;      /* the gRPC server's TLS; no files: plaintext */
    ordo_bus_auth_t nats;     /* the relay's NATS credentials and TLS */
    const char *client_roles; /* with TLS: common name = role */
    bool insecure;            /* plaintext on a non-loopback address allowed */
} es_config_t;

typedef struct es_stats {
    atomic_llong appends, conflicts, duplicates, tx_retries, batches;
    atomic_llong queue_full;       /* CreateEvent calls refused: the write queue was at its bound */
    atomic_llong expired;          /* CreateEvent calls whose deadline passed before their write began */
    atomic_llong redriven;         /* reconciler: stuck streams whose last event was queued again */
    atomic_llong stuck;            /* reconciler: streams still stuck after its re-drives (left to an operator) */
    atomic_llong lost_republished; /* events JetStream had acknowledged and then lost, published again */
    atomic_llong published, publish_errors, set_aside;
    atomic_llong outbox_deletes;   /* the relay's DELETE statements for published rows */
    ordo_metrics_t latency;        /* the histograms below, for /metrics */
    ordo_metric_t *append_latency; /* a CreateEvent call from the write queue to its answer */
    ordo_metric_t *tx_latency;     /* a write transaction, retries included */
} es_stats_t;

/* metrics.c: registers the latency histograms (before any call is served). */
void es_stats_init(es_stats_t *s);

typedef struct es_writer es_writer_t;
typedef struct es_readers es_readers_t;
typedef struct es_watermark es_watermark_t;
typedef struct es_relay es_relay_t;
typedef struct es_streams es_streams_t;

typedef struct es_ctx {
    const es_config_t *cfg;
    es_stats_t stats;
    ordo_grpc_server_t *server;
    es_writer_t *writer;
    es_readers_t *readers;
    es_watermark_t *watermark;
    es_relay_t *relay;
    es_streams_t *streams;
    ordo_http_server_t *metrics;
    ordo_metrics_endpoint_t metrics_endpoint;   /* what it serves */
} es_ctx_t;

/* ---- metrics.c: GET /metrics on --metrics-addr ---- */
ordo_status es_metrics_start(es_ctx_t *ctx, ordo_http_server_t **out, int *port, ordo_error_t *err);

/* ---- service.c: gRPC handlers ---- */
ordo_status es_service_register(es_ctx_t *ctx, ordo_error_t *err);

/* ---- validate.c: a CreateEvent call checked and made an append ---- */

/* One validated CreateEvent call on its way to the database. */
typedef struct es_append {
    ordo_grpc_call_t *call;
    Eventstore__Event **events;   /* points into the call's request */
    size_t n;
    char (*ids)[37];              /* event ids, generated where the client gave none */
    char **metadata;              /* each event's metadata as a JSON object text */
    int64_t expected;             /* -1: any */
    int64_t *positions;           /* each event's position and created_at (µs), */
    int64_t *created;             /* filled by the INSERT for the relay */
    char **stored;                /* each event's data as stored (the JSONB text readers get), for the relay */
    /* result, reset on every attempt */
    ordo_status st;
    char msg[256];
    int64_t version, position;
    bool duplicate;
    bool deferred;                /* waits for the next batch: shares an event id with an earlier call of
                                     this one, or the guarded insert did not take it */
    bool lookup;                  /* the guarded insert did not take it: its next batch reads first (not reset) */
    int64_t queued_us;            /* when it reached the write queue (monotonic) */
    size_t bytes;                 /* what it holds in memory, about: counted against --write-queue-bytes */
    struct es_append *next;
} es_append_t;

/* Checks @p req; on ORDO_OK *out is a new append for the writer (es_append_free). */
ordo_status es_validate_append(const es_config_t *cfg, ordo_grpc_call_t *call,
                               const Eventstore__CreateEventRequest *req, es_append_t **out,
                               ordo_error_t *err);
/* Frees an append (not its call, which the writer has answered). Accepts NULL. */
void es_append_free(es_append_t *a);

/* ---- writer.c: group-committed appends ---- */
ordo_status es_writer_create(es_ctx_t *ctx, es_writer_t **out, ordo_error_t *err);
/* Queues @p a; the writer answers its call and frees it. ORDO_UNAVAILABLE
 * when the queue is at its bound (--write-queue-calls, --write-queue-bytes):
 * then @p a stays the caller's. */
ordo_status es_writer_submit(es_writer_t *w, es_append_t *a, ordo_error_t *err);
/* The calls admitted and not yet answered, and their bytes (for stats). */
void es_writer_queued(es_writer_t *w, long long *calls, long long *bytes);
/* Answers what is queued, stops the threads, frees. */
void es_writer_destroy(es_writer_t *w);

/* ---- reader.c: GetEvents, admin calls, GetEventsStream ---- */
ordo_status es_readers_create(es_ctx_t *ctx, es_readers_t **out, ordo_error_t *err);
void es_readers_get_events(es_readers_t *r, ordo_grpc_call_t *call);
void es_readers_stats(es_readers_t *r, ordo_grpc_call_t *call);
void es_readers_republish(es_readers_t *r, ordo_grpc_call_t *call);
/* Runs @p fn (with the es_ctx_t and @p call) on a reader thread. */
void es_readers_submit(es_readers_t *r, ordo_job_cb fn, ordo_grpc_call_t *call);

/* ---- parked.c: the admin calls over the PARKED stream, as reader jobs
 * (es_readers_submit: @p vctx the es_ctx_t, @p call the gRPC call) ---- */
void es_parked_list(void *vctx, ordo_pg_t *pg, void *call);
void es_parked_replay(void *vctx, ordo_pg_t *pg, void *call);
void es_readers_destroy(es_readers_t *r);

ordo_status es_streams_create(es_ctx_t *ctx, es_streams_t **out);
/* Starts a thread serving one GetEventsStream call (or refuses it). */
void es_streams_start(es_streams_t *s, ordo_grpc_call_t *call, const Eventstore__GetEventsRequest *req);
/* Ends every stream (status OK) and joins their threads. */
void es_streams_destroy(es_streams_t *s);

/* ---- watermark.c: the readers' safe high-water mark ---- */
ordo_status es_watermark_create(es_ctx_t *ctx, es_watermark_t **out, ordo_error_t *err);
int64_t es_watermark_get(es_watermark_t *wm);
/* Whether the watermark's last look at the database succeeded. */
bool es_watermark_database_ok(es_watermark_t *wm);
/* Waits up to @p timeout_ms for the mark to pass @p above; returns the mark. */
int64_t es_watermark_wait(es_watermark_t *wm, int64_t above, int timeout_ms);
/* A writer here committed these positions (ascending): the mark may move
 * over them without asking the database. */
void es_watermark_committed(es_watermark_t *wm, const int64_t *positions, size_t n);
/* The highest position this process committed (readers wait for the mark to reach it). */
int64_t es_watermark_local_commit(es_watermark_t *wm);
void es_watermark_destroy(es_watermark_t *wm);

/* ---- lease.c: which instance's relay publishes ---- */
typedef struct es_lease {
    char holder[128];           /* this instance: host:pid:random */
    int lease_ms;
    bool held, warned;
    int64_t renew_at, valid_until;   /* monotonic ms */
} es_lease_t;
void es_lease_init(es_lease_t *l, const char *holder, int lease_ms);
/* Takes or renews the lease when due (one statement); true while this
 * instance holds it and may publish. *gained: it was not held before. */
bool es_lease_hold(es_lease_t *l, ordo_pg_t *pg, bool *gained);
/* Lets the lease go at once (at shutdown), if held. */
void es_lease_release(es_lease_t *l, ordo_pg_t *pg);

/* ---- reconcile.c: the saga reconciler (run by the relay that leads) ---- */
typedef struct es_reconciler es_reconciler_t;
es_reconciler_t *es_reconciler_create(const es_config_t *cfg);
/* A round when one is due: re-drives the stuck streams it finds (counted in
 * @p stats), reading with @p pg and publishing on @p bus; returns how many. */
int es_reconciler_round(es_reconciler_t *rc, es_stats_t *stats, ordo_pg_t *pg, ordo_bus_t *bus, int64_t safe_position);
void es_reconciler_destroy(es_reconciler_t *rc);
/* Publishes the stored event at @p position with a message id of its own
 * (past JetStream's duplicate window) and waits for the acknowledgement;
 * ORDO_NOT_FOUND when no event has that position. */
ordo_status es_publish_fresh(ordo_pg_t *pg, ordo_bus_t *bus, int64_t position, ordo_error_t *err);

/* ---- relay.c: outbox → JetStream ---- */
ordo_status es_relay_create(es_ctx_t *ctx, es_relay_t **out, ordo_error_t *err);
/* Rows were added below the relay's cursor (Republish): read the outbox from the start. */
void es_relay_rescan(es_relay_t *r);
/* A committed event, handed over by a writer so that the relay need not read
 * it back from the outbox (a copy is made; @p r may be NULL). Best effort:
 * when the hand-over queue is full, the relay reads the outbox instead. */
void es_relay_offer(es_relay_t *r, const Eventstore__Event *ev);
/* Positions committed (below the readers' mark) that the relay has not
 * published yet: 0 unless this instance leads. */
int64_t es_relay_backlog(es_relay_t *r);
bool es_relay_connected(es_relay_t *r);
/* This instance holds the relay lease (publishes the outbox). */
bool es_relay_leading(es_relay_t *r);
/* Runs @p fn with the relay's NATS connection, which stays while it runs
 * (ORDO_UNAVAILABLE when there is none): admin calls read JetStream with it. */
typedef ordo_status (*es_bus_fn)(ordo_bus_t *bus, void *arg, ordo_error_t *err);
ordo_status es_relay_with_bus(es_relay_t *r, es_bus_fn fn, void *arg, ordo_error_t *err);
/* The durable consumers' lag and parked messages (ordo_bus_lags over the
 * relay's connection; ORDO_UNAVAILABLE while there is none). */
ordo_status es_relay_lags(es_relay_t *r, ordo_bus_lag_t **out, size_t *n, ordo_error_t *err);
/* Publishes what is pending (bounded wait), stops, frees. */
void es_relay_destroy(es_relay_t *r);

/* ---- events.c: rows ↔ messages ---- */

/* The columns every event query selects, in this order. */
#define ES_EVENT_COLUMNS                                                              \
    "e.position, e.event_id::text, e.event_type, e.aggregate_id, e.aggregate_type, "  \
    "e.event_data::text, e.stream, e.version, "                                       \
    "(extract(epoch FROM e.created_at) * 1000000)::int8, e.metadata::text"

/* Fills @p ev (already initialised) from row @p row of @p res (ES_EVENT_COLUMNS).
 * Strings point into @p res, which must outlive @p ev; metadata is allocated. */
void es_event_from_row(Eventstore__Event *ev, const PGresult *res, int row);
/* Frees what es_event_from_row allocated for metadata. */
void es_event_free_metadata(Eventstore__Event *ev);

/* Session settings for connections that write: bound every transaction so the
 * readers' gap rule holds (docs/eventstore.md, "Gaps"). */
void es_writer_session_sql(const es_config_t *cfg, char *out, size_t cap);

/* Standard retry policy of the event store's transactions. */
extern const ordo_retry_policy_t es_retry_policy;

#endif
