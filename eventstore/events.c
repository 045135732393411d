/* Database rows to Event messages. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "es.h"

static void metadata_from_json(Eventstore__Event *ev, const char *text)
{
    json_t *doc;
    const char *key;
    json_t *val;
    size_t n = 0;

    if (strcmp(text, "{}") == 0)     /* the common case: nothing to parse */
        return;
    doc = json_loads(text, 0, NULL);
    if (doc == NULL || !json_is_object(doc) || json_object_size(doc) == 0) {
        json_decref(doc);
        return;
    }
    ev->metadata = calloc(json_object_size(doc), sizeof *ev->metadata);
    if (ev->metadata == NULL) {
        json_decref(doc);
        return;
    }
    json_object_foreach(doc, key, val) {
        Eventstore__Event__MetadataEntry *e;
        if (!json_is_string(val) || (e = malloc(sizeof *e)) == NULL)
            continue;
        eventstore__event__metadata_entry__init(e);
        e->key = strdup(key);
        e->value = strdup(json_string_value(val));
        ev->metadata[n++] = e;
    }
    ev->n_metadata = n;
    json_decref(doc);
}

void es_event_from_row(Eventstore__Event *ev, const PGresult *res, int row)
{
    ev->position = strtoll(PQgetvalue(res, row, 0), NULL, 10);
    ev->event_id = PQgetvalue(res, row, 1);
    ev->event_type = PQgetvalue(res, row, 2);
    ev->aggregate_id = PQgetvalue(res, row, 3);
    ev->aggregate_type = PQgetvalue(res, row, 4);
    ev->event_data = PQgetvalue(res, row, 5);
    ev->stream = PQgetvalue(res, row, 6);
    ev->version = strtoll(PQgetvalue(res, row, 7), NULL, 10);
    ev->created_at = strtoll(PQgetvalue(res, row, 8), NULL, 10);
    metadata_from_json(ev, PQgetvalue(res, row, 9));
}

void es_event_free_metadata(Eventstore__Event *ev)
{
    for (size_t i = 0; i < ev->n_metadata; i++) {
        if (ev->metadata[i] == NULL)
            continue;
        free(ev->metadata[i]->key);
        free(ev->metadata[i]->value);
        free(ev->metadata[i]);
    }
    free(ev->metadata);
    ev->metadata = NULL;
    ev->n_metadata = 0;
}
