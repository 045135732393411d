#include "batch.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool es_batch_live(const es_append_t *a)
{
    return a->st == ORDO_OK && !a->duplicate && !a->deferred;
}

void es_append_set_result(es_append_t *a, ordo_status st, const char *fmt, ...)
{
    va_list ap;
    a->st = st;
    va_start(ap, fmt);
    vsnprintf(a->msg, sizeof a->msg, fmt, ap);
    va_end(ap);
}

es_head_t *es_batch_find_head(es_batch_t *b, const char *aggregate_id)
{
    for (size_t i = 0; i < b->n_heads; i++)
        if (strcmp(b->heads[i].aggregate_id, aggregate_id) == 0)
            return &b->heads[i];
    return NULL;
}

void es_batch_collect_heads(es_batch_t *b, ordo_buf_t *aggs)
{
    b->n_heads = 0;
    ordo_buf_pg_array_begin(aggs);
    for (size_t i = 0; i < b->n; i++) {
        es_append_t *a = b->items[i];
        if (es_batch_find_head(b, a->events[0]->aggregate_id) != NULL)
            continue;
        b->heads[b->n_heads++] = (es_head_t){.aggregate_id = a->events[0]->aggregate_id,
                                             .aggregate_type = a->events[0]->aggregate_type};
        ordo_buf_pg_array_text(aggs, a->events[0]->aggregate_id);
    }
    ordo_buf_pg_array_end(aggs);
}

/* Checks each live call's expected version in queue order against the locked heads. */
void es_batch_check_versions(es_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        es_append_t *a = b->items[i];
        es_head_t *h;
        if (!es_batch_live(a))
            continue;
        h = es_batch_find_head(b, a->events[0]->aggregate_id);
        if (strcmp(h->aggregate_type, a->events[0]->aggregate_type) != 0)
            es_append_set_result(a, ORDO_INVALID, "aggregate %.100s is of type %s, not %s", h->aggregate_id,
                                 h->aggregate_type, a->events[0]->aggregate_type);
        else if (a->expected >= 0 && a->expected != h->version)
            es_append_set_result(a, ORDO_CONFLICT,
                                 "wrong expected version %lld: aggregate %.100s is at version %lld",
                                 (long long)a->expected, h->aggregate_id, (long long)h->version);
        else {
            h->version += (int64_t)a->n;
            h->touched = true;
            a->version = h->version;
        }
    }
}

/* Calls sharing an event id with an earlier live call wait for the next batch. */
void es_batch_defer_overlaps(es_batch_t *b)
{
    for (size_t i = 1; i < b->n; i++) {
        es_append_t *a = b->items[i];
        for (size_t j = 0; j < i && es_batch_live(a); j++) {
            if (!es_batch_live(b->items[j]))
                continue;
            for (size_t k = 0; k < a->n && !a->deferred; k++)
                for (size_t m = 0; m < b->items[j]->n; m++)
                    if (strcmp(a->ids[k], b->items[j]->ids[m]) == 0) {
                        a->deferred = true;
                        break;
                    }
        }
    }
}

/* The guarded insert's heads, if it can take the batch: every call names
 * its expected version, no two share an aggregate, and none was left by it
 * before. Each head is then where its call expects it. */
bool es_batch_guess_heads(es_batch_t *b)
{
    b->n_heads = 0;
    if (b->lookup)
        return false;
    for (size_t i = 0; i < b->n; i++) {
        es_append_t *a = b->items[i];
        if (a->expected < 0 || a->lookup || es_batch_find_head(b, a->events[0]->aggregate_id) != NULL)
            return false;
        a->version = a->expected + (int64_t)a->n;
        b->heads[b->n_heads++] = (es_head_t){.aggregate_id = a->events[0]->aggregate_id,
                                             .aggregate_type = a->events[0]->aggregate_type,
                                             .version = a->version, .expected = a->expected, .call = a,
                                             .exists = a->expected > 0, .touched = true};
    }
    return true;
}

void es_batch_reset(es_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        es_append_t *a = b->items[i];
        a->st = ORDO_OK;
        a->msg[0] = '\0';
        a->duplicate = a->deferred = false;
        a->version = a->position = 0;
    }
}
