#include "ordo/order.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ID = 128, MAX_CODE = 64, MAX_NAME = 128, MAX_QUANTITY = 10000,
       MAX_STORED_ITEMS = 1 << 20 /* a stored order was checked when it was taken: no real cap */ };
#define MAX_PRICE 1000000.0

static const struct {
    const char *event_type, *status;
} transitions[] = {
    {ORDO_EV_ORDER_CREATED, "Pending"},       {ORDO_EV_PAYMENT_DEBITED, "Paid"},
    {ORDO_EV_PAYMENT_FAILED, "PaymentFailed"}, {ORDO_EV_ORDER_APPROVED, "Approved"},
    {ORDO_EV_ORDER_REJECTED, "Rejected"},      {ORDO_EV_PAYMENT_REFUNDED, "Refunded"},
};

const char *ordo_order_status_after(const char *event_type)
{
    for (size_t i = 0; i < sizeof transitions / sizeof transitions[0]; i++)
        if (strcmp(transitions[i].event_type, event_type) == 0)
            return transitions[i].status;
    return NULL;
}

bool ordo_order_status_final(const char *status)
{
    return status != NULL && (strcmp(status, "Approved") == 0 || strcmp(status, "PaymentFailed") == 0 ||
                              strcmp(status, "Refunded") == 0);
}

bool ordo_order_status_valid(const char *status)
{
    for (size_t i = 0; i < sizeof transitions / sizeof transitions[0]; i++)
        if (strcmp(transitions[i].status, status) == 0)
            return true;
    return false;
}

bool ordo_order_followup_id(const char *cause_id, const char *step, char out[ORDO_UUID_LEN])
{
    return ordo_uuid_v5(cause_id, step, out);
}

double ordo_cents_to_units(int64_t cents)
{
    return (double)cents / 100.0;
}

void ordo_order_free(ordo_order_t *o)
{
    for (size_t i = 0; i < o->n_items; i++) {
        free(o->items[i].code);
        free(o->items[i].name);
    }
    free(o->items);
    free(o->customer_id);
    free(o->restaurant_id);
    memset(o, 0, sizeof *o);
}

/* A required string field of 1..max bytes. */
static ordo_status get_string(json_t *obj, const char *key, const char *path, size_t max, char **out, ordo_error_t *err)
{
    json_t *v = json_object_get(obj, key);
    size_t len;

    if (v == NULL || json_is_null(v))
        return ordo_error_set(err, ORDO_INVALID, "%s%s is required", path, key);
    if (!json_is_string(v))
        return ordo_error_set(err, ORDO_INVALID, "%s%s must be a string", path, key);
    len = json_string_length(v);
    if (len == 0 || len > max)
        return ordo_error_set(err, ORDO_INVALID, "%s%s must be 1 to %zu characters", path, key, max);
    if (memchr(json_string_value(v), '\0', len) != NULL)
        return ordo_error_set(err, ORDO_INVALID, "%s%s must not contain NUL", path, key);
    *out = strdup(json_string_value(v));
    return *out ? ORDO_OK : ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
}

static ordo_status get_item(json_t *it, size_t i, ordo_order_item_t *item, ordo_error_t *err)
{
    char path[48];
    json_t *price, *qty;
    ordo_status st;
    double p;

    snprintf(path, sizeof path, "order_items[%zu].", i);
    if (!json_is_object(it))
        return ordo_error_set(err, ORDO_INVALID, "order_items[%zu] must be an object", i);
    if ((st = get_string(it, "code", path, MAX_CODE, &item->code, err)) != ORDO_OK ||
        (st = get_string(it, "name", path, MAX_NAME, &item->name, err)) != ORDO_OK)
        return st;
    price = json_object_get(it, "unit_price");
    if (price == NULL || !json_is_number(price))
        return ordo_error_set(err, ORDO_INVALID, "%sunit_price must be a number", path);
    p = json_number_value(price);
    if (!(p > 0) || p > MAX_PRICE)
        return ordo_error_set(err, ORDO_INVALID, "%sunit_price must be more than 0 and at most %.0f", path, MAX_PRICE);
    item->unit_price_cents = llround(p * 100.0);
    if (item->unit_price_cents <= 0)
        return ordo_error_set(err, ORDO_INVALID, "%sunit_price must be at least 0.01", path);
    qty = json_object_get(it, "quantity");
    if (qty == NULL || !json_is_integer(qty))
        return ordo_error_set(err, ORDO_INVALID, "%squantity must be an integer", path);
    if (json_integer_value(qty) < 1 || json_integer_value(qty) > MAX_QUANTITY)
        return ordo_error_set(err, ORDO_INVALID, "%squantity must be 1 to %d", path, MAX_QUANTITY);
    item->quantity = (int)json_integer_value(qty);
    return ORDO_OK;
}

static ordo_status parse_order(json_t *doc, int max_items, ordo_order_t *o, ordo_error_t *err)
{
    json_t *items;
    ordo_status st;

    if (!json_is_object(doc))
        return ordo_error_set(err, ORDO_INVALID, "the body must be a JSON object");
    if ((st = get_string(doc, "customer_id", "", MAX_ID, &o->customer_id, err)) != ORDO_OK ||
        (st = get_string(doc, "restaurant_id", "", MAX_ID, &o->restaurant_id, err)) != ORDO_OK)
        return st;
    items = json_object_get(doc, "order_items");
    if (items == NULL || !json_is_array(items))
        return ordo_error_set(err, ORDO_INVALID, "order_items must be an array");
    if (json_array_size(items) == 0 || json_array_size(items) > (size_t)max_items)
        return ordo_error_set(err, ORDO_INVALID, "order_items must hold 1 to %d items", max_items);
    o->items = calloc(json_array_size(items), sizeof *o->items);
    if (o->items == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < json_array_size(items); i++) {
        o->n_items = i + 1;
        if ((st = get_item(json_array_get(items, i), i, &o->items[i], err)) != ORDO_OK)
            return st;
        o->amount_cents += o->items[i].unit_price_cents * o->items[i].quantity;
    }
    return ORDO_OK;
}

ordo_status ordo_order_from_request(const char *body, size_t len, int max_items, ordo_order_t *out,
                                    ordo_error_t *err)
{
    json_error_t jerr;
    json_t *doc;
    ordo_status st;

    memset(out, 0, sizeof *out);
    doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL)
        return ordo_error_set(err, ORDO_INVALID, "malformed JSON at line %d column %d: %s", jerr.line, jerr.column,
                              jerr.text);
    st = parse_order(doc, max_items, out, err);
    json_decref(doc);
    if (st != ORDO_OK)
        ordo_order_free(out);
    return st;
}

ordo_status ordo_order_from_event(const char *data, size_t len, ordo_order_t *out, ordo_error_t *err)
{
    json_error_t jerr;
    json_t *doc, *id;
    ordo_status st;

    memset(out, 0, sizeof *out);
    doc = json_loadb(data, len, 0, &jerr);
    if (doc == NULL)
        return ordo_error_set(err, ORDO_INVALID, "order-created data is not JSON: %s", jerr.text);
    st = parse_order(doc, MAX_STORED_ITEMS, out, err);
    id = json_object_get(doc, "order_id");
    if (st == ORDO_OK && (!json_is_string(id) || !ordo_uuid_valid(json_string_value(id))))
        st = ordo_error_set(err, ORDO_INVALID, "order-created data has no order_id");
    if (st == ORDO_OK)
        snprintf(out->order_id, sizeof out->order_id, "%s", json_string_value(id));
    json_decref(doc);
    if (st != ORDO_OK)
        ordo_order_free(out);
    return st;
}

/* A document as every order event is written: compact, amounts to 15 digits. */
static char *dump(json_t *doc)
{
    char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(doc);
    return text;
}

char *ordo_order_event_json(const ordo_order_t *o)
{
    json_t *items = json_array(), *doc;

    for (size_t i = 0; i < o->n_items; i++)
        json_array_append_new(items, json_pack("{s:s, s:s, s:f, s:i}", "code", o->items[i].code,
                                               "name", o->items[i].name,
                                               "unit_price", ordo_cents_to_units(o->items[i].unit_price_cents),
                                               "quantity", o->items[i].quantity));
    doc = json_pack("{s:s, s:s, s:s, s:o, s:f, s:I}", "order_id", o->order_id, "customer_id", o->customer_id,
                    "restaurant_id", o->restaurant_id, "order_items", items,
                    "amount", ordo_cents_to_units(o->amount_cents), "amount_cents", (json_int_t)o->amount_cents);
    return dump(doc);
}

char *ordo_order_outcome_json(const ordo_order_outcome_t *o)
{
    json_t *doc = json_pack("{s:s, s:s, s:s*, s:f, s:I, s:s*}", "order_id", o->order_id, "customer_id",
                            o->customer_id, "restaurant_id", o->restaurant_id, "amount",
                            ordo_cents_to_units(o->amount_cents), "amount_cents", (json_int_t)o->amount_cents,
                            "reason", o->reason);
    return dump(doc);
}

ordo_status ordo_order_refund_json(const char *order_id, const char *data, size_t len, char **out,
                                   ordo_error_t *err)
{
    json_t *doc = json_loadb(data, len, 0, NULL);
    json_t *cust = json_object_get(doc, "customer_id"), *cents = json_object_get(doc, "amount_cents");
    ordo_status st = ORDO_OK;

    *out = NULL;
    if (!json_is_string(cust) || !json_is_integer(cents))
        st = ordo_error_set(err, ORDO_INVALID, "order-rejected data has no customer_id or amount_cents");
    else {
        ordo_order_outcome_t refund = {.order_id = order_id, .customer_id = json_string_value(cust),
                                       .amount_cents = json_integer_value(cents), .reason = "order rejected"};
        if ((*out = ordo_order_outcome_json(&refund)) == NULL)
            st = ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    json_decref(doc);
    return st;
}

void ordo_order_state_init(ordo_order_state_t *s)
{
    memset(s, 0, sizeof *s);
    s->status = "";
}

ordo_status ordo_order_state_apply(ordo_order_state_t *s, const char *event_type, const char *data, size_t len,
                                   int64_t version, int64_t created_at, ordo_error_t *err)
{
    const char *status;
    ordo_status st;

    if (version != s->version + 1)
        return ordo_error_set(err, ORDO_CONFLICT, "event version %lld after %lld", (long long)version,
                              (long long)s->version);
    if (s->version == 0) {
        if (strcmp(event_type, ORDO_EV_ORDER_CREATED) != 0)
            return ordo_error_set(err, ORDO_INVALID, "the order's first event is %s, not %s", event_type,
                                  ORDO_EV_ORDER_CREATED);
        if ((st = ordo_order_from_event(data, len, &s->order, err)) != ORDO_OK)
            return st;
        s->created_at = created_at;
    }
    status = ordo_order_status_after(event_type);
    if (status != NULL && (s->version == 0 || strcmp(event_type, ORDO_EV_ORDER_CREATED) != 0))
        s->status = status;
    s->version = version;
    s->updated_at = created_at;
    return ORDO_OK;
}

void ordo_order_state_free(ordo_order_state_t *s)
{
    ordo_order_free(&s->order);
    ordo_order_state_init(s);
}
