/*
 * The payment rule (documented in docs/orderflow.md): an order whose amount
 * is at most --limit is debited; a larger one fails. A rejected order is
 * refunded. Every decision is a follow-up event with a deterministic id, so
 * a redelivered message never pays or refunds twice.
 */
#include "payment.h"

#include <stdlib.h>
#include <string.h>

#include "ordo/log.h"
#include "ordo/order.h"
#include "ordo/saga.h"

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
    if (debit) {
        data = ordo_order_event_json(&order);
    } else {
        ordo_order_outcome_t failed = {.order_id = ev->aggregate_id, .customer_id = order.customer_id,
                                       .amount_cents = order.amount_cents,
                                       .reason = "amount over the customer's limit per order"};
        data = ordo_order_outcome_json(&failed);
    }
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
    ordo_msg_action action;
    ordo_error_t err;
    char *data;
    ordo_status st = ordo_order_refund_json(ev->aggregate_id, ev->data, (size_t)ev->data_len, &data, &err);

    if (st == ORDO_INVALID) {
        ORDO_ERROR("malformed order-rejected", "order_id=%s err=\"%s\"", ev->aggregate_id, err.msg);
        return ORDO_MSG_TERM;
    }
    action = data == NULL ? ORDO_MSG_RETRY
                          : ordo_saga_followup(p->store, ev, "refund", ORDO_EV_PAYMENT_REFUNDED, data,
                                               p->cfg->timeout_ms);
    free(data);
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
