/*
 * The payment rule (documented in docs/orderflow.md): an order whose amount
 * is at most --limit is debited; a larger one fails. A rejected order is
 * refunded. Every decision is a follow-up event with a deterministic id, so
 * a redelivered message never pays or refunds twice.
 */
#include "payment.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/log.h"
#include "ordo/order.h"
#include "ordo/saga.h"

static char *followup_data(const char *order_id, const char *customer_id, int64_t cents, const char *reason)
{
    json_t *doc = json_pack("{s:s, s:s, s:f, s:I}", "order_id", order_id, "customer_id", customer_id,
                            "amount", ordo_cents_to_units(cents), "amount_cents", (json_int_t)cents);
    char *text;
    if (doc != NULL && reason != NULL)
        json_object_set_new(doc, "reason", json_string(reason));
    text = doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(doc);
    return text;
}

static ordo_msg_action on_created(pay_ctx_t *p, const ordo_bus_event_t *ev)
{
    ordo_order_t order;
    ordo_error_t err;
    ordo_msg_action action;
    bool debit;
    char *data;

    if (ordo_order_from_event(ev->data, (size_t)ev->data_len, &order, &err) != ORDO_OK) {
        ORDO_ERROR("malformed order-created", "order_id=%s err=\"%s\"", ev->aggregate_id, err.msg);
        return ORDO_MSG_TERM;
    }
    debit = order.amount_cents <= (int64_t)p->cfg->limit * 100;
    /* A debit carries the whole order, so the restaurant needs no read of the store. */
    data = debit ? ordo_order_event_json(&order)
                 : followup_data(ev->aggregate_id, order.customer_id, order.amount_cents,
                                 "amount over the customer's limit per order");
    action = data == NULL ? ORDO_MSG_RETRY
                          : ordo_saga_followup(p->store, ev, "payment",
                                               debit ? ORDO_EV_PAYMENT_DEBITED : ORDO_EV_PAYMENT_FAILED, data,
                                               p->cfg->timeout_ms);
    free(data);
    ordo_order_free(&order);
    return action;
}

static ordo_msg_action on_rejected(pay_ctx_t *p, const ordo_bus_event_t *ev)
{
    json_t *doc = json_loadb(ev->data, (size_t)ev->data_len, 0, NULL);
    json_t *cust = json_object_get(doc, "customer_id"), *cents = json_object_get(doc, "amount_cents");
    ordo_msg_action action;
    char *data;

    if (!json_is_string(cust) || !json_is_integer(cents)) {
        ORDO_ERROR("malformed order-rejected", "order_id=%s", ev->aggregate_id);
        json_decref(doc);
        return ORDO_MSG_TERM;
    }
    data = followup_data(ev->aggregate_id, json_string_value(cust), json_integer_value(cents), "order rejected");
    action = data == NULL ? ORDO_MSG_RETRY
                          : ordo_saga_followup(p->store, ev, "refund", ORDO_EV_PAYMENT_REFUNDED, data,
                                               p->cfg->timeout_ms);
    free(data);
    json_decref(doc);
    return action;
}

ordo_msg_action pay_handle(void *ctx, int lane, const ordo_bus_event_t *ev)
{
    pay_ctx_t *p = ctx;
    (void)lane;
    if (strcmp(ev->event_type, ORDO_EV_ORDER_CREATED) == 0)
        return on_created(p, ev);
    if (strcmp(ev->event_type, ORDO_EV_ORDER_REJECTED) == 0)
        return on_rejected(p, ev);
    return ORDO_MSG_ACK;   /* not a payment matter */
}
