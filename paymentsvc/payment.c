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

static void on_created(pay_ctx_t *p, const ordo_bus_event_t *ev, ordo_saga_step_t *out)
{
    ordo_order_t order;
    ordo_error_t err;
    bool debit;

    if (ordo_order_from_event(ev->data, (size_t)ev->data_len, &order, &err) != ORDO_OK) {
        ORDO_ERROR("malformed order-created", "order_id=%s err=\"%s\"", ev->aggregate_id, err.msg);
        out->action = ORDO_MSG_TERM;
        return;
    }
    debit = order.amount_cents <= (int64_t)p->cfg->limit * 100;
    /* A debit carries the whole order, so the restaurant needs no read of the store. */
    if (debit) {
        out->data = ordo_order_event_json(&order);
    } else {
        ordo_order_outcome_t failed = {.order_id = ev->aggregate_id, .customer_id = order.customer_id,
                                       .amount_cents = order.amount_cents,
                                       .reason = "amount over the customer's limit per order"};
        out->data = ordo_order_outcome_json(&failed);
    }
    out->step = "payment";
    out->event_type = debit ? ORDO_EV_PAYMENT_DEBITED : ORDO_EV_PAYMENT_FAILED;
    ordo_order_free(&order);
}

static void on_rejected(const ordo_bus_event_t *ev, ordo_saga_step_t *out)
{
    ordo_error_t err;
    ordo_status st = ordo_order_refund_json(ev->aggregate_id, ev->data, (size_t)ev->data_len, &out->data, &err);

    if (st == ORDO_INVALID) {
        ORDO_ERROR("malformed order-rejected", "order_id=%s err=\"%s\"", ev->aggregate_id, err.msg);
        out->action = ORDO_MSG_TERM;
        return;
    }
    out->step = "refund";
    out->event_type = ORDO_EV_PAYMENT_REFUNDED;
}

void pay_decide(void *ctx, const ordo_bus_event_t *ev, ordo_saga_step_t *out)
{
    if (strcmp(ev->event_type, ORDO_EV_ORDER_CREATED) == 0)
        on_created(ctx, ev, out);
    else if (strcmp(ev->event_type, ORDO_EV_ORDER_REJECTED) == 0)
        on_rejected(ev, out);
    /* else not a payment matter: ACK */
}
