/*
 * The hand-over of committed events from the writers to the relay: in the
 * usual case the relay publishes them from here, in position order, and
 * reads the outbox only when the queue does not cover a range exactly
 * (after a start, a Republish, a failed round, a full queue, a rolled-back
 * position, another instance's writes).
 */
#include <stdlib.h>

#include "ordo/envelope.h"
#include "relay_parts.h"

struct es_handover {
    pthread_mutex_t mu;     /* guards everything below */
    es_offered_t *queued;   /* unordered */
    size_t n, cap;
    bool overflow;          /* some were not queued, or a round failed: not whole until it drains */
};

es_handover_t *es_handover_create(size_t cap)
{
    es_handover_t *h = calloc(1, sizeof *h);

    if (h == NULL || (h->queued = calloc(cap, sizeof *h->queued)) == NULL) {
        free(h);
        return NULL;
    }
    h->cap = cap;
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void es_handover_destroy(es_handover_t *h)
{
    if (h == NULL)
        return;
    es_offered_drop(h->queued, h->n);
    pthread_mutex_destroy(&h->mu);
    free(h->queued);
    free(h);
}

void es_handover_offer(es_handover_t *h, const Eventstore__Event *ev)
{
    natsMsg *msg = NULL;

    if (ordo_envelope_encode(ev, &msg) != NATS_OK)
        msg = NULL;
    pthread_mutex_lock(&h->mu);
    if (msg != NULL && h->n < h->cap) {
        h->queued[h->n++] = (es_offered_t){ev->position, msg};
        msg = NULL;
    } else {
        h->overflow = true;
    }
    pthread_mutex_unlock(&h->mu);
    natsMsg_Destroy(msg);
}

static int by_position(const void *a, const void *b)
{
    int64_t x = ((const es_offered_t *)a)->position, y = ((const es_offered_t *)b)->position;
    return (x > y) - (x < y);
}

size_t es_handover_take(es_handover_t *h, int64_t cursor, int64_t mark, es_offered_t *out, size_t cap,
                        bool *exact)
{
    size_t n = 0, keep = 0;
    bool overflow;

    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++) {
        es_offered_t o = h->queued[i];
        if (o.position <= cursor)
            natsMsg_Destroy(o.msg);
        else if (o.position <= mark && n < cap)
            out[n++] = o;
        else
            h->queued[keep++] = o;
    }
    h->n = keep;
    overflow = h->overflow;
    if (keep == 0)
        h->overflow = false;
    pthread_mutex_unlock(&h->mu);
    qsort(out, n, sizeof *out, by_position);
    *exact = !overflow && n > 0;
    for (size_t i = 0; i < n && *exact; i++)
        *exact = out[i].position == cursor + 1 + (int64_t)i;
    return n;
}

void es_handover_distrust(es_handover_t *h)
{
    pthread_mutex_lock(&h->mu);
    h->overflow = true;
    pthread_mutex_unlock(&h->mu);
}

void es_handover_discard(es_handover_t *h)
{
    pthread_mutex_lock(&h->mu);
    es_offered_drop(h->queued, h->n);
    h->n = 0;
    h->overflow = true;
    pthread_mutex_unlock(&h->mu);
}

void es_offered_drop(es_offered_t *taken, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        natsMsg_Destroy(taken[i].msg);
        taken[i].msg = NULL;
    }
}
