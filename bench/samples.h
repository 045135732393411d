/* Latency samples of the load generators (es_load, e2e_load): a growing
 * array of seconds, sorted once at the end, read by percentile. */
#ifndef BENCH_SAMPLES_H
#define BENCH_SAMPLES_H

#include <stdlib.h>

/* Appends @p x to *@p v (*@p n of *@p cap used), doubling it when full; a
 * sample that finds no memory is left out. */
static inline void bench_samples_add(double **v, size_t *n, size_t *cap, double x)
{
    if (*n == *cap) {
        size_t grown_cap = *cap ? *cap * 2 : 65536;
        double *grown = realloc(*v, grown_cap * sizeof *grown);
        if (grown == NULL)
            return;
        *v = grown;
        *cap = grown_cap;
    }
    (*v)[(*n)++] = x;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The @p p quantile (0..1) of @p n sorted samples; 0 when there are none. */
static inline double bench_pct(const double *v, size_t n, double p)
{
    return n ? v[(size_t)(p * (double)(n - 1) + 0.5)] : 0;
}

#endif
