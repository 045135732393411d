/**
 * @file consumer.h
 * A durable JetStream pull consumer on the EVENTS stream that hands each
 * event to a handler and acknowledges it only after the handler says its
 * effect is committed.
 *
 * Several processes that name the same durable share its messages (each
 * message goes to one of them): that is how orderquery instances form a
 * queue group. The consumer is created explicitly (js_AddConsumer) and bound
 * to, so it survives restarts and unsubscribing never deletes it.
 */
#ifndef ORDO_CONSUMER_H
#define ORDO_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "ordo/bus.h"
#include "ordo/envelope.h"
#include "ordo/metrics.h"
#include "ordo/status.h"

typedef enum ordo_msg_action {
    ORDO_MSG_ACK,        /**< the effect is committed (or there is none) */
    ORDO_MSG_RETRY,      /**< failed for now: redeliver after a delay (at most max_deliver times in all) */
    ORDO_MSG_TERM,       /**< poison, can never succeed: parked (copied with the reason to the PARKED
                              stream, logged), then acknowledged; kept while it cannot be parked */
    ORDO_MSG_WAIT,       /**< a dependency (database, event store) is unreachable: the consumer keeps the
                              message and hands it to the handler again with backoff until it is reachable,
                              without spending a delivery (an outage of any length loses nothing) */
} ordo_msg_action;

/** The action for a handler whose effect ended with @p st: ACK for ORDO_OK,
 *  TERM for ORDO_INVALID, WAIT for ORDO_UNAVAILABLE, ORDO_TIMEOUT and a
 *  dependency refusing this service's identity (ORDO_UNAUTHENTICATED,
 *  ORDO_FORBIDDEN), RETRY otherwise. */
ordo_msg_action ordo_msg_action_of(ordo_status st);

/** What is done with a message the handler answered @p action on its
 *  @p delivered-th delivery: a RETRY on the last of @p max_deliver
 *  deliveries is poison (TERM: parked); WAIT spends no delivery, so it
 *  never is; anything else stands. */
ordo_msg_action ordo_msg_settle_action(ordo_msg_action action, uint64_t delivered, int max_deliver);

/**
 * Handles one event. Runs on one of the consumer's @c concurrency lane
 * threads (@p lane = 0..concurrency-1); may block on I/O. All events of one
 * aggregate go to the same lane, in stream order. The consumer goes on
 * fetching while the lanes work, up to @c batch messages in hand.
 */
typedef ordo_msg_action (*ordo_event_cb)(void *ctx, int lane, const ordo_bus_event_t *ev);

/**
 * Optional: handles every message queued for a lane at once (e.g. in one
 * transaction), setting actions[i] for events[i]. When given, it is called
 * instead of the per-event handler.
 */
typedef void (*ordo_batch_cb)(void *ctx, int lane, const ordo_bus_event_t *events, int n, ordo_msg_action *actions);

/** Where a consumer counts what it does (each may be NULL; not owned:
 *  ordo/svcmetrics.h makes them). */
typedef struct ordo_consumer_counters {
    ordo_metric_t *handled;       /**< acknowledged after the handler */
    ordo_metric_t *held;          /**< held: a dependency unreachable (once per delivery) */
    ordo_metric_t *redelivered;   /**< delivered more than once */
    ordo_metric_t *parked;
    ordo_metric_t *latency;       /**< the handler's time per message */
} ordo_consumer_counters_t;

typedef struct ordo_consumer_config {
    const char *nats_url;
    const ordo_bus_auth_t *nats_auth;   /**< NULL: none (not owned) */
    const char *durable;          /**< consumer name, shared by the instances of one service */
    const char *filter_subject;   /**< e.g. "events.order.>" */
    int max_deliver;              /**< deliveries before a failing message is parked (counted here:
                                       JetStream's own MaxDeliver is unlimited, so nothing is dropped) */
    int ack_wait_ms;              /**< redelivery when neither acked nor nacked */
    int retry_delay_ms;           /**< redelivery delay after ORDO_MSG_RETRY */
    int batch;                    /**< most messages fetched and not yet settled */
    int max_ack_pending;
    int concurrency;              /**< lanes handling messages in parallel (>= 1) */
    ordo_batch_cb batch_handler;  /**< NULL: the per-event handler */
    const ordo_consumer_counters_t *counters;   /**< NULL: nothing counted */
} ordo_consumer_config_t;

/** The defaults ordo_consumer_config_init() sets. */
enum {
    ORDO_CONSUMER_MAX_DELIVER = 10,
    ORDO_CONSUMER_ACK_WAIT_MS = 30000,
    ORDO_CONSUMER_RETRY_DELAY_MS = 1000,
    ORDO_CONSUMER_BATCH = 256,
    ORDO_CONSUMER_MAX_ACK_PENDING = 4096,
};

/** Fills @p cfg with the defaults above, one lane, the per-event handler and
 *  no connection, durable or subject: set those by name afterwards. */
void ordo_consumer_config_init(ordo_consumer_config_t *cfg);

typedef struct ordo_consumer ordo_consumer_t;

/**
 * Starts a thread that connects (retrying while NATS is down), creates or
 * binds the durable and feeds @p handler, or cfg->batch_handler when it is
 * set (then @p handler may be NULL). Free with ordo_consumer_destroy().
 */
ordo_status ordo_consumer_start(const ordo_consumer_config_t *cfg, ordo_event_cb handler, void *ctx,
                                ordo_consumer_t **out, ordo_error_t *err);

/** Messages this consumer has parked since it started. */
long long ordo_consumer_parked(ordo_consumer_t *c);

/** Stream messages JetStream still had for the consumer when it sent the last message taken. */
long long ordo_consumer_pending(ordo_consumer_t *c);

/** True while the consumer has a live NATS connection and subscription. */
bool ordo_consumer_connected(ordo_consumer_t *c);

/** Finishes the message in hand, stops the thread, closes, frees. Accepts NULL. */
void ordo_consumer_destroy(ordo_consumer_t *c);

#endif
