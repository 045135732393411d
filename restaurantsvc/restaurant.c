/*
 * The restaurant rule (docs/orderflow.md): a paid order is approved unless
 * one of its item codes is in --unavailable; then it is rejected (and
 * paymentsvc refunds it). The items come with the debit; for a debit
 * without them (an older event) from the order's order-created in the store.
 */
#include "restaurant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/esclient.h"
#include "ordo/log.h"
#include "ordo/order.h"
#include "ordo/saga.h"

bool rest_code_listed(const char *list, const char *code)
{
    size_t n = strlen(code);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, code, n) == 0)
            return true;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return false;
}

/* Loads the order-created event of @p order_id from the store. */
static ordo_status load_order(rest_ctx_t *r, const char *order_id, ordo_order_t *order, ordo_error_t *err)
{
    Eventstore__GetEventsRequest req = EVENTSTORE__GET_EVENTS_REQUEST__INIT;
    Eventstore__GetEventsResponse *resp = NULL;
    ordo_status st;

    req.aggregate_id = (char *)order_id;
    req.event_type = ORDO_EV_ORDER_CREATED;
    req.limit = 1;
    if ((st = ordo_es_read(r->store, &req, r->cfg->timeout_ms, &resp, err)) != ORDO_OK)
        return st;
    if (resp->n_events == 0)
        st = ordo_error_set(err, ORDO_NOT_FOUND, "order %s has no order-created event", order_id);
    else
        st = ordo_order_from_event(resp->events[0]->event_data, strlen(resp->events[0]->event_data), order, err);
    eventstore__get_events_response__free_unpacked(resp, NULL);
    return st;
}

static const char *unavailable_item(const rest_config_t *cfg, const ordo_order_t *o)
{
    for (size_t i = 0; i < o->n_items; i++)
        if (rest_code_listed(cfg->unavailable, o->items[i].code))
            return o->items[i].code;
    return NULL;
}

void rest_decide(void *ctx, const ordo_bus_event_t *ev, ordo_saga_step_t *out)
{
    rest_ctx_t *r = ctx;
    ordo_order_t order;
    ordo_error_t err;
    ordo_status st;
    const char *missing;
    char reason[160];

    if (strcmp(ev->event_type, ORDO_EV_PAYMENT_DEBITED) != 0)
        return;   /* ACK */
    /* (a debit without the order's items, from before they came with it: read from the store, on this thread) */
    if (ordo_order_from_event(ev->data, (size_t)ev->data_len, &order, &err) != ORDO_OK &&
        (st = load_order(r, ev->aggregate_id, &order, &err)) != ORDO_OK) {
        out->action = ordo_msg_action_of(st);
        if (out->action != ORDO_MSG_WAIT || ev->round == 1)   /* a held message says why once */
            ORDO_WARN("cannot load the order", "order_id=%s err=\"%s\"", ev->aggregate_id, err.msg);
        return;
    }
    missing = unavailable_item(r->cfg, &order);
    if (missing != NULL)
        snprintf(reason, sizeof reason, "item %.64s is not available", missing);
    out->data = ordo_order_outcome_json(&(ordo_order_outcome_t){
        .order_id = ev->aggregate_id, .customer_id = order.customer_id, .restaurant_id = order.restaurant_id,
        .amount_cents = order.amount_cents, .reason = missing != NULL ? reason : NULL});
    out->step = "restaurant";
    out->event_type = missing ? ORDO_EV_ORDER_REJECTED : ORDO_EV_ORDER_APPROVED;
    ordo_order_free(&order);
}
