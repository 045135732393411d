/**
 * @file order.h
 * The order domain shared by the order-flow services: event names, the
 * documents every order event carries (written and read only here),
 * statuses, and deterministic follow-up event ids.
 */
#ifndef ORDO_ORDER_H
#define ORDO_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ordo/status.h"
#include "ordo/uuid.h"

#define ORDO_ORDER_AGGREGATE "order"
#define ORDO_EV_ORDER_CREATED "order-created"
#define ORDO_EV_PAYMENT_DEBITED "order-payment-debited"
#define ORDO_EV_PAYMENT_FAILED "order-payment-failed"
#define ORDO_EV_ORDER_APPROVED "order-approved"
#define ORDO_EV_ORDER_REJECTED "order-rejected"
#define ORDO_EV_PAYMENT_REFUNDED "order-payment-refunded"

typedef struct ordo_order_item {
    char *code;
    char *name;
    int64_t unit_price_cents;
    int quantity;
} ordo_order_item_t;

/** An order as order-created carries it. Strings are owned (ordo_order_free). */
typedef struct ordo_order {
    char order_id[ORDO_UUID_LEN];
    char *customer_id;
    char *restaurant_id;
    ordo_order_item_t *items;
    size_t n_items;
    int64_t amount_cents;
} ordo_order_t;

/**
 * Parses and checks a POST /api/orders body ({customer_id, restaurant_id,
 * order_items[{code, name, unit_price, quantity}]}); fills everything but
 * order_id and computes amount_cents. ORDO_INVALID names the field at fault.
 */
ordo_status ordo_order_from_request(const char *body, size_t len, int max_items, ordo_order_t *out,
                                    ordo_error_t *err);

/** Parses an order-created event's data (the document ordo_order_event_json writes). */
ordo_status ordo_order_from_event(const char *data, size_t len, ordo_order_t *out, ordo_error_t *err);

/** The order-created document (malloc'd, NUL-terminated; NULL on no memory). */
char *ordo_order_event_json(const ordo_order_t *o);

/**
 * What a saga step decided about an order: the document of
 * order-payment-failed, order-payment-refunded, order-approved and
 * order-rejected. Every string is borrowed.
 */
typedef struct ordo_order_outcome {
    const char *order_id;
    const char *customer_id;
    const char *restaurant_id;  /**< NULL: not in the document (the payment events) */
    int64_t amount_cents;
    const char *reason;         /**< NULL: none (a debit, an approval) */
} ordo_order_outcome_t;

/** The outcome's document: {order_id, customer_id[, restaurant_id], amount,
 *  amount_cents[, reason]} (malloc'd, NUL-terminated; NULL on no memory). */
char *ordo_order_outcome_json(const ordo_order_outcome_t *o);

/**
 * The refund's document for a rejection: the order, customer and amount of
 * the order-rejected document @p data, with the reason "order rejected".
 * On ORDO_OK *@p out is malloc'd; ORDO_INVALID when the rejection lacks its
 * customer_id or amount_cents; ORDO_NO_MEMORY.
 */
ordo_status ordo_order_refund_json(const char *order_id, const char *data, size_t len, char **out,
                                   ordo_error_t *err);

/** Frees what the parse functions allocated. Accepts a zeroed order. */
void ordo_order_free(ordo_order_t *o);

/** The read-model status an order has after @p event_type; NULL for other events. */
const char *ordo_order_status_after(const char *event_type);

/** True for the six status names. */
bool ordo_order_status_valid(const char *status);

/** True for the statuses an order ends in: Approved, PaymentFailed, Refunded. */
bool ordo_order_status_final(const char *status);

/**
 * The id of the follow-up event that @p step ("payment", "restaurant",
 * "refund") derives from the causing event @p cause_id: a UUID v5, the same
 * on every redelivery, so the store answers a re-append as a duplicate.
 */
bool ordo_order_followup_id(const char *cause_id, const char *step, char out[ORDO_UUID_LEN]);

/** amount_cents as a JSON-friendly number (12.5 for 1250). */
double ordo_cents_to_units(int64_t cents);

/**
 * An order as its events made it: the fold the read model keeps. The
 * projection (orderquery) and the time travel of orderapi (GET
 * /api/orders/{id}?at=) both apply events with ordo_order_from_event (the
 * first) and ordo_order_status_after (every other: an event that does not
 * change the status still advances the version and the time).
 */
typedef struct ordo_order_state {
    ordo_order_t order;     /**< from order-created (owned: ordo_order_state_free) */
    const char *status;     /**< "" before order-created; static */
    int64_t version;        /**< the last event's version (0: none yet) */
    int64_t created_at;     /**< order-created's time, unix µs */
    int64_t updated_at;     /**< the last event's time */
} ordo_order_state_t;

/** A state with no event applied. */
void ordo_order_state_init(ordo_order_state_t *s);

/** Applies the order's next event (@p version must be s->version + 1, the
 *  first one order-created): ORDO_CONFLICT out of order, ORDO_INVALID for a
 *  first event that is no order-created or one that is no order. */
ordo_status ordo_order_state_apply(ordo_order_state_t *s, const char *event_type, const char *data, size_t len,
                                   int64_t version, int64_t created_at, ordo_error_t *err);

void ordo_order_state_free(ordo_order_state_t *s);

#endif
