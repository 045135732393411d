#include "ordo/metrics.h"

#include <string.h>

/* Upper bounds of the histogram buckets, in microseconds (+Inf is the count). */
static const long long bounds_us[ORDO_HIST_BUCKETS] = {500, 1000, 2500, 5000, 10000, 25000, 50000,
                                                       100000, 250000, 500000, 1000000, 5000000};

static ordo_metric_t *add(ordo_metrics_t *r, const char *name, const char *labels, const char *help, bool hist)
{
    ordo_metric_t *m;
    if (r->n >= ORDO_METRICS_MAX)
        return NULL;
    m = &r->m[r->n++];
    memset(m, 0, sizeof *m);
    m->name = name;
    m->labels = labels;
    m->help = help;
    m->histogram = hist;
    return m;
}

ordo_metric_t *ordo_metrics_counter(ordo_metrics_t *r, const char *name, const char *labels, const char *help)
{
    return add(r, name, labels, help, false);
}

ordo_metric_t *ordo_metrics_histogram(ordo_metrics_t *r, const char *name, const char *help)
{
    return add(r, name, "", help, true);
}

void ordo_metric_inc(ordo_metric_t *m)
{
    if (m != NULL)
        atomic_fetch_add(&m->value, 1);
}

void ordo_metric_observe_us(ordo_metric_t *m, long long us)
{
    if (m == NULL)
        return;
    atomic_fetch_add(&m->value, 1);
    atomic_fetch_add(&m->sum_us, us);
    for (int i = 0; i < ORDO_HIST_BUCKETS; i++)
        if (us <= bounds_us[i])
            atomic_fetch_add(&m->buckets[i], 1);
}

void ordo_metrics_render(ordo_metrics_t *r, ordo_buf_t *out)
{
    for (int i = 0; i < r->n; i++) {
        ordo_metric_t *m = &r->m[i];
        bool first = i == 0 || strcmp(r->m[i - 1].name, m->name) != 0;
        if (first)
            ordo_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                            m->histogram ? "histogram" : "counter");
        if (!m->histogram) {
            ordo_buf_printf(out, "%s%s%s%s %lld\n", m->name, m->labels[0] ? "{" : "", m->labels,
                            m->labels[0] ? "}" : "", (long long)atomic_load(&m->value));
            continue;
        }
        for (int b = 0; b < ORDO_HIST_BUCKETS; b++)
            ordo_buf_printf(out, "%s_bucket{le=\"%g\"} %lld\n", m->name, (double)bounds_us[b] / 1e6,
                            (long long)atomic_load(&m->buckets[b]));
        ordo_buf_printf(out, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %g\n%s_count %lld\n", m->name,
                        (long long)atomic_load(&m->value), m->name, (double)atomic_load(&m->sum_us) / 1e6, m->name,
                        (long long)atomic_load(&m->value));
    }
}
