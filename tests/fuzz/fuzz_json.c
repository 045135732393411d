/* Fuzz target: the event_data checker (lib/json.c) and the UTF-8 check. */
#include <stdint.h>

#include "ordo/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ordo_error_t err;
    (void)ordo_json_check((const char *)data, size, &err);
    (void)ordo_utf8_valid((const char *)data, size);
    return 0;
}
