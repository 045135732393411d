/**
 * @file workers.h
 * A pool of threads, each owning one database connection, running queued
 * jobs in order of arrival. Used for blocking work handed over by a
 * non-blocking caller (a gRPC handler).
 */
#ifndef ORDO_WORKERS_H
#define ORDO_WORKERS_H

#include "ordo/pg.h"

typedef struct ordo_workers ordo_workers_t;

/** Runs on a worker thread with that thread's connection (reconnect with ordo_pg_ensure). */
typedef void (*ordo_job_cb)(void *ctx, ordo_pg_t *pg, void *arg);

/** Starts @p n threads connecting to @p url (with @p setup_sql, may be NULL). */
ordo_status ordo_workers_create(int n, const char *url, const char *setup_sql, void *ctx,
                                ordo_workers_t **out, ordo_error_t *err);

/** Queues fn(ctx, pg, arg). ORDO_NO_MEMORY if it cannot be queued (fn not called). */
ordo_status ordo_workers_submit(ordo_workers_t *w, ordo_job_cb fn, void *arg);

/** Runs what is queued, stops the threads, closes their connections, frees. Accepts NULL. */
void ordo_workers_destroy(ordo_workers_t *w);

#endif
