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

struct ordo_workers {
    const char *url, *setup_sql;
    void *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    bool stopping;
    pthread_t *threads;
    int n_threads;
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
    ordo_workers_t *w = arg;
    ordo_pg_t pg;
    ordo_error_t err;
    job_t *j;

    if (ordo_pg_open(&pg, w->url, NULL, w->setup_sql, &err) != ORDO_OK)
        ORDO_WARN("worker cannot reach the database yet", "err=\"%s\"", err.msg);
    while ((j = take(w)) != NULL) {
        j->fn(w->ctx, &pg, j->arg);
        free(j);
    }
    ordo_pg_close(&pg);
    return NULL;
}

ordo_status ordo_workers_create(int n, const char *url, const char *setup_sql, void *ctx,
                                ordo_workers_t **out, ordo_error_t *err)
{
    ordo_workers_t *w = calloc(1, sizeof *w);

    *out = NULL;
    if (w == NULL || (w->threads = calloc((size_t)n, sizeof *w->threads)) == NULL) {
        free(w);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    w->url = url;
    w->setup_sql = setup_sql;
    w->ctx = ctx;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&w->threads[i], NULL, worker_thread, w) != 0) {
            ordo_workers_destroy(w);
            return ordo_error_set(err, ORDO_INTERNAL, "cannot start worker threads");
        }
        ordo_thread_name(w->threads[i], "pg-reader", i);
        w->n_threads++;
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
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
