#include "ordo/saga.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/esclient.h"
#include "ordo/log.h"
#include "ordo/retry.h"
#include "ordo/trace.h"
#include "ordo/uuid.h"

/*
 * A lane's messages are decided one by one (pure rules, on the lane's
 * thread), then their follow-ups are appended together: asynchronous calls,
 * all in flight at once, and the lane waits once for all of them. The
 * follow-ups of one aggregate go in turns (a second waits for the first to
 * end), so an order's steps reach the store in stream order, as before.
 */

/* One follow-up of the batch, while its append is in flight. */
typedef struct followup {
    struct saga_batch *batch;
    int index;                           /* into the batch's events and actions */
    char id[ORDO_UUID_LEN];              /* UUIDv5(cause id, step) */
    char traceparent[ORDO_TRACEPARENT_LEN];
    char trace_id[33];
    bool turn;                           /* starts in this round */
    bool started, done;                  /* done: written under the batch's mu once started */
} followup_t;

typedef struct saga_batch {
    const ordo_bus_event_t *events;
    const ordo_saga_step_t *steps;
    ordo_msg_action *actions;
    followup_t *f;
    pthread_mutex_t mu;
    pthread_cond_t ended;                /* in_flight went down */
    int in_flight;                       /* guarded by mu */
} saga_batch_t;

/* What the message's settlement is once its follow-up's append ended with @p st (logged). */
static ordo_msg_action followup_action(const ordo_bus_event_t *cause, const char *event_type, const followup_t *f,
                                       ordo_status st, const ordo_es_result_t *res, const ordo_error_t *err)
{
    switch (st) {
    case ORDO_OK:   /* routine: the event store keeps every step (debug level repeats it here) */
        ORDO_DEBUG(res->duplicate ? "follow-up already appended" : "follow-up appended",
                   "order_id=%s event=%s event_id=%s version=%lld causation_id=%s trace_id=%s", cause->aggregate_id,
                   event_type, f->id, (long long)res->version, cause->event_id, f->trace_id);
        return ORDO_MSG_ACK;
    case ORDO_CONFLICT:
        ORDO_WARN("the order moved on before this step: nothing to do", "order_id=%s event=%s trace_id=%s err=\"%s\"",
                  cause->aggregate_id, event_type, f->trace_id, err->msg);
        return ORDO_MSG_ACK;
    case ORDO_INVALID:
        ORDO_ERROR("the store refused the follow-up", "order_id=%s event=%s trace_id=%s err=\"%s\"",
                   cause->aggregate_id, event_type, f->trace_id, err->msg);
        return ORDO_MSG_TERM;
    default:
        if (ordo_msg_action_of(st) == ORDO_MSG_WAIT) {   /* the consumer holds the message and hands it again */
            if (cause->round == 1)
                ORDO_WARN("the event store is unreachable; waiting for it",
                          "order_id=%s event=%s trace_id=%s err=\"%s\"", cause->aggregate_id, event_type, f->trace_id,
                          err->msg);
            return ORDO_MSG_WAIT;
        }
        ORDO_WARN("cannot append the follow-up now; will retry", "order_id=%s event=%s trace_id=%s err=\"%s\"",
                  cause->aggregate_id, event_type, f->trace_id, err->msg);
        return ORDO_MSG_RETRY;
    }
}

/* The append's end, on the client's completion thread. */
static void followup_ended(void *arg, ordo_status st, const ordo_es_result_t *res, const ordo_error_t *err)
{
    followup_t *f = arg;
    saga_batch_t *b = f->batch;

    b->actions[f->index] = followup_action(&b->events[f->index], b->steps[f->index].event_type, f, st, res, err);
    pthread_mutex_lock(&b->mu);
    f->done = true;
    if (--b->in_flight == 0)
        pthread_cond_signal(&b->ended);
    pthread_mutex_unlock(&b->mu);
}

/* Starts event @p i's follow-up; false (its action set) when it ended at once. */
static bool followup_start(saga_batch_t *b, ordo_grpc_client_t *store, int timeout_ms, int i)
{
    const ordo_bus_event_t *cause = &b->events[i];
    const ordo_saga_step_t *step = &b->steps[i];
    followup_t *f = &b->f[i];
    ordo_trace_t parent, span;
    bool traced = ordo_trace_parse(cause->traceparent, &parent);
    ordo_error_t err;
    ordo_status st;

    f->started = true;
    /* the follow-up is a span of the cause's trace (a cause without one starts a trace) */
    ordo_trace_child(traced ? &parent : NULL, &span);
    ordo_trace_format(&span, f->traceparent);
    snprintf(f->trace_id, sizeof f->trace_id, "%s", span.trace_id);
    if (!ordo_uuid_v5(cause->event_id, step->step, f->id)) {
        ORDO_ERROR("cause has no valid event id", "type=%s aggregate=%s trace_id=%s", cause->event_type,
                   cause->aggregate_id, f->trace_id);
        b->actions[i] = ORDO_MSG_TERM;
        f->done = true;
        return false;
    }
    ordo_es_event_t ev = {.event_id = f->id, .event_type = step->event_type, .aggregate_id = cause->aggregate_id,
                          .aggregate_type = cause->aggregate_type, .data = step->data,
                          .correlation_id = cause->aggregate_id, .causation_id = cause->event_id,
                          .traceparent = f->traceparent, .tracestate = traced ? cause->tracestate : NULL,
                          .service = ordo_log_service()};
    pthread_mutex_lock(&b->mu);
    b->in_flight++;
    pthread_mutex_unlock(&b->mu);
    if ((st = ordo_es_append_async(store, &ev, cause->version, timeout_ms, followup_ended, f, &err)) != ORDO_OK) {
        followup_ended(f, st, NULL, &err);   /* (never started: ended now) */
        return false;
    }
    return true;
}

/* Whether an earlier follow-up of @p i's aggregate has yet to end (then @p i waits its turn). */
static bool behind_its_aggregate(const saga_batch_t *b, int i)
{
    for (int j = 0; j < i; j++)
        if (b->steps[j].event_type != NULL && !b->f[j].done &&
            strcmp(b->events[j].aggregate_id, b->events[i].aggregate_id) == 0)
            return true;
    return false;
}

/* Waits until every started append has ended (each has a deadline; a
 * warning if they take much longer, which would be gRPC's fault). */
static void wait_all(saga_batch_t *b, int timeout_ms)
{
    pthread_mutex_lock(&b->mu);
    while (b->in_flight > 0) {
        struct timespec until = ordo_deadline_ms(timeout_ms + 5000);
        if (pthread_cond_timedwait(&b->ended, &b->mu, &until) != 0 && b->in_flight > 0)
            ORDO_WARN("follow-up appends outlived their deadline", "in_flight=%d", b->in_flight);
    }
    pthread_mutex_unlock(&b->mu);
}

void ordo_saga_run(ordo_grpc_client_t *store, int timeout_ms, ordo_saga_decide_cb decide, void *ctx,
                   const ordo_bus_event_t *events, int n, ordo_msg_action *actions)
{
    ordo_saga_step_t *steps = calloc((size_t)n, sizeof *steps);
    followup_t *f = calloc((size_t)n, sizeof *f);
    saga_batch_t b = {.events = events, .steps = steps, .actions = actions, .f = f};
    int left = 0;

    if (steps == NULL || f == NULL) {
        for (int i = 0; i < n; i++)
            actions[i] = ORDO_MSG_RETRY;
        free(steps);
        free(f);
        return;
    }
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.ended, NULL);
    for (int i = 0; i < n; i++) {
        f[i].batch = &b;
        f[i].index = i;
        steps[i].action = ORDO_MSG_ACK;
        decide(ctx, &events[i], &steps[i]);
        if (steps[i].event_type == NULL || steps[i].data == NULL) {   /* no follow-up (or no memory for it) */
            actions[i] = steps[i].event_type == NULL ? steps[i].action : ORDO_MSG_RETRY;
            steps[i].event_type = NULL;
            f[i].done = true;
        } else {
            left++;
        }
    }
    while (left > 0) {   /* rounds: each aggregate's next follow-up, all at once */
        for (int i = 0; i < n; i++)   /* (chosen before any starts: nothing is in flight to race with) */
            f[i].turn = !f[i].started && !f[i].done && !behind_its_aggregate(&b, i);
        for (int i = 0; i < n; i++)
            if (f[i].turn) {
                followup_start(&b, store, timeout_ms, i);
                left--;
            }
        wait_all(&b, timeout_ms);
    }
    for (int i = 0; i < n; i++)
        free(steps[i].data);
    pthread_cond_destroy(&b.ended);
    pthread_mutex_destroy(&b.mu);
    free(steps);
    free(f);
}
