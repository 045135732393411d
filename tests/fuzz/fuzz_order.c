/* Fuzz target: a POST /api/orders body → an order (lib/order.c), and the
 * order-created document it becomes, read back. Any input: a status, never a
 * crash; an accepted order survives the round trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/order.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ordo_order_t order, again;
    ordo_error_t err;

    memset(&order, 0, sizeof order);
    if (ordo_order_from_request((const char *)data, size, 100, &order, &err) == ORDO_OK) {
        char *doc;
        memcpy(order.order_id, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", ORDO_UUID_LEN);   /* as orderapi sets it */
        doc = ordo_order_event_json(&order);
        memset(&again, 0, sizeof again);
        if (doc != NULL && ordo_order_from_event(doc, strlen(doc), &again, &err) != ORDO_OK)
            abort();   /* what we write, we must read */
        if (doc != NULL && again.amount_cents != order.amount_cents)
            abort();
        ordo_order_free(&again);
        free(doc);
    }
    ordo_order_free(&order);
    memset(&order, 0, sizeof order);
    (void)ordo_order_from_event((const char *)data, size, &order, &err);
    ordo_order_free(&order);
    return 0;
}
