#include "ordo/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

ordo_metric_t *ordo_metrics_histogram_labelled(ordo_metrics_t *r, const char *name, const char *labels,
                                               const char *help)
{
    return add(r, name, labels, help, true);
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

void ordo_metrics_render_header(ordo_buf_t *out, const char *name, const char *type, const char *help)
{
    ordo_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ordo_metric_render_histogram(const ordo_metric_t *m, const char *name, const char *labels, ordo_buf_t *out)
{
    const char *sep = labels[0] ? "," : "";
    long long count = (long long)atomic_load(&m->value);

    for (int b = 0; b < ORDO_HIST_BUCKETS; b++)
        ordo_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %lld\n", name, labels, sep, (double)bounds_us[b] / 1e6,
                        (long long)atomic_load(&m->buckets[b]));
    ordo_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %lld\n", name, labels, sep, count);
    ordo_buf_printf(out, "%s_sum%s%s%s %g\n%s_count%s%s%s %lld\n", name, labels[0] ? "{" : "", labels,
                    labels[0] ? "}" : "", (double)atomic_load(&m->sum_us) / 1e6, name, labels[0] ? "{" : "", labels,
                    labels[0] ? "}" : "", count);
}

void ordo_metrics_render(ordo_metrics_t *r, ordo_buf_t *out)
{
    for (int i = 0; i < r->n; i++) {
        ordo_metric_t *m = &r->m[i];
        if (i == 0 || strcmp(r->m[i - 1].name, m->name) != 0)
            ordo_metrics_render_header(out, m->name, m->histogram ? "histogram" : "counter", m->help);
        if (m->histogram)
            ordo_metric_render_histogram(m, m->name, m->labels, out);
        else
            ordo_buf_printf(out, "%s%s%s%s %lld\n", m->name, m->labels[0] ? "{" : "", m->labels,
                            m->labels[0] ? "}" : "", (long long)atomic_load(&m->value));
    }
}

/* The process: resident memory, CPU, open files, threads, start time. */
void ordo_process_metrics_render(ordo_buf_t *out)
{
    char stat[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long long utime = 0, stime = 0, start = 0;
    long threads = 0, rss_pages = 0, hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    double boot = 0;
    int fds = 0;

    if (f != NULL && fgets(stat, sizeof stat, f) != NULL) {
        const char *p = strrchr(stat, ')');   /* past the command name, which may hold spaces */
        if (p != NULL)
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %ld %*d %llu %*u %ld",
                   &utime, &stime, &threads, &start, &rss_pages);
    }
    if (f != NULL)
        fclose(f);
    if ((f = fopen("/proc/stat", "r")) != NULL) {
        char line[256];
        while (fgets(line, sizeof line, f) != NULL)
            if (sscanf(line, "btime %lf", &boot) == 1)
                break;
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        fds += e->d_name[0] != '.';
    if (d != NULL) {
        closedir(d);
        fds--;   /* the directory's own */
    }
    ordo_buf_printf(out,
                    "# HELP process_cpu_seconds_total user and system CPU time\n# TYPE process_cpu_seconds_total counter\n"
                    "process_cpu_seconds_total %.2f\n"
                    "# HELP process_resident_memory_bytes resident memory\n# TYPE process_resident_memory_bytes gauge\n"
                    "process_resident_memory_bytes %ld\n"
                    "# HELP process_open_fds open file descriptors\n# TYPE process_open_fds gauge\nprocess_open_fds %d\n"
                    "# HELP process_threads threads\n# TYPE process_threads gauge\nprocess_threads %ld\n"
                    "# HELP process_start_time_seconds start time, seconds since the epoch\n"
                    "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                    (double)(utime + stime) / (double)hz, rss_pages * page, fds, threads,
                    boot + (double)start / (double)hz);
}
