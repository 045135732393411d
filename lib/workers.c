#include "ordo/workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "ordo/log.h"

typedef struct job {
    ordo_job_cb fn;
    void *arg;
    struct job *next;
} job_t;

/* One thread and its connection (created with the pool, so that running
 * out of memory fails the create, not a job). */
typedef struct worker {
    struct ordo_workers *pool;
    ordo_pg_t *pg;
    pthread_t thread;
} worker_t;

struct ordo_workers {
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    bool stopping;
    worker_t *workers;
    int n_workers;              /* with a connection */
    int n_threads;              /* of those, started */
};

static job_t *take(ordo_workers_t *w)
{
    job_t *j;
    pthread_mutex_lock(&w->mu);
    while (w->head == NULL && !w->stopping)
        pthread_cond_wait(&w->cv, &w->mu);
    j = w->head;
    if (j != NULL && (w->head = j->next) == NULL)
        w->tail = NULL;
    pthread_mutex_unlock(&w->mu);
    return j;
}

static void *worker_thread(void *arg)
{
    worker_t *me = arg;
    ordo_error_t err;
    job_t *j;

    if (ordo_pg_ensure(me->pg, &err) != ORDO_OK)
        ORDO_WARN("worker cannot reach the database yet", "err=\"%s\"", err.msg);
    while ((j = take(me->pool)) != NULL) {
        j->fn(me->pool->ctx, me->pg, j->arg);
        free(j);
    }
    return NULL;
}

ordo_status ordo_workers_create(int n, const char *url, const char *setup_sql, void *ctx,
                                ordo_workers_t **out, ordo_error_t *err)
{
    ordo_workers_t *w = calloc(1, sizeof *w);

    *out = NULL;
    if (w == NULL || (w->workers = calloc((size_t)n, sizeof *w->workers)) == NULL) {
        free(w);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    w->ctx = ctx;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (; w->n_workers < n; w->n_workers++) {
        w->workers[w->n_workers].pool = w;
        if (ordo_pg_create(url, NULL, setup_sql, &w->workers[w->n_workers].pg, err) != ORDO_OK) {
            ordo_workers_destroy(w);
            return ORDO_NO_MEMORY;
        }
    }
    for (; w->n_threads < n; w->n_threads++) {
        if (pthread_create(&w->workers[w->n_threads].thread, NULL, worker_thread, &w->workers[w->n_threads]) != 0) {
            ordo_workers_destroy(w);
            return ordo_error_set(err, ORDO_INTERNAL, "cannot start worker threads");
        }
        ordo_thread_name(w->workers[w->n_threads].thread, "pg-reader", w->n_threads);
    }
    *out = w;
    return ORDO_OK;
}

ordo_status ordo_workers_submit(ordo_workers_t *w, ordo_job_cb fn, void *arg)
{
    job_t *j = malloc(sizeof *j);
    if (j == NULL)
        return ORDO_NO_MEMORY;
    *j = (job_t){fn, arg, NULL};
    pthread_mutex_lock(&w->mu);
    if (w->tail != NULL)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return ORDO_OK;
}

void ordo_workers_destroy(ordo_workers_t *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n_threads; i++)
        pthread_join(w->workers[i].thread, NULL);
    for (int i = 0; i < w->n_workers; i++)
        ordo_pg_destroy(w->workers[i].pg);
    free(w->workers);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
