/* Fuzz target: the bus envelope a consumer reads (lib/envelope.c). The input
 * is "Key: value" lines, then an empty line, then the body: a message with
 * whatever headers a publisher could send, decoded and checked as the
 * consumer does, and copied as parking and replay do. */
#include <nats/nats.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    natsMsg *m = NULL, *parked = NULL, *replay = NULL;
    ordo_bus_event_t ev;
    char *line, *save = NULL, *body = "";

    if (text == NULL)
        return 0;
    nats_Open(-1);   /* cnats' library state (its message pool): once, later calls are no-ops */
    memcpy(text, data, size);
    text[size] = '\0';
    char *sep = strstr(text, "\n\n");
    if (sep != NULL) {
        *sep = '\0';
        body = sep + 2;
    }
    if (natsMsg_Create(&m, "events.order.x", NULL, body, (int)strlen(body)) != NATS_OK) {
        free(text);
        return 0;
    }
    for (line = strtok_r(sep != NULL ? text : "", "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *colon = strchr(line, ':');
        if (colon == NULL || colon == line)
            continue;
        *colon = '\0';
        (void)natsMsgHeader_Add(m, line, colon + 1 + (colon[1] == ' '));
    }
    ordo_envelope_decode(m, &ev);
    (void)ordo_envelope_problem(&ev);
    (void)ordo_envelope_position(m);
    (void)ordo_lane_of(ev.aggregate_id, 7);
    if (ordo_envelope_parked_copy(m, "fuzz", "a reason", 3, &parked) == NATS_OK) {
        if (ordo_envelope_replay_copy(parked, &replay) == NATS_OK)
            natsMsg_Destroy(replay);
        natsMsg_Destroy(parked);
    }
    natsMsg_Destroy(m);
    free(text);
    return 0;
}
