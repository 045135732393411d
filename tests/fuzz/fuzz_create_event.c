/* Fuzz target: a CreateEventRequest as it comes off the wire: protobuf-c's
 * decode, then the event store's validation (eventstore/validate.c) of what
 * decoded. */
#include <stdint.h>
#include <string.h>

#include "es.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const es_config_t cfg = {.max_message_bytes = 1 << 20, .max_event_bytes = 512 << 10,
                                    .max_batch_events = 1000};
    Eventstore__CreateEventRequest *req = eventstore__create_event_request__unpack(NULL, size, data);
    es_append_t *a = NULL;
    ordo_error_t err;

    if (req == NULL)
        return 0;
    if (es_validate_append(&cfg, NULL, req, &a, &err) == ORDO_OK)
        es_append_free(a);
    eventstore__create_event_request__free_unpacked(req, NULL);
    return 0;
}
