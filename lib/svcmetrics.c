/*
 * /metrics of a service that consumes the bus (paymentsvc, restaurantsvc,
 * orderquery): per durable, the messages handled, held (a dependency
 * down), redelivered and parked, what JetStream said was still pending
 * after the last fetch; the time the handler takes; and the process's own
 * figures. Prometheus text format, counters in _total, seconds.
 */
#include "ordo/svcmetrics.h"

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Registers one counter per durable, the durables of one name together
 * (the text format wants a name's lines in one group). */
static void counters(ordo_service_metrics_t *m, int n, const char *name, const char *help, size_t field)
{
    for (int i = 0; i < n; i++) {
        ordo_metric_t **slot = (ordo_metric_t **)((char *)&m->counters[i] + field);
        *slot = ordo_metrics_counter(&m->registry, name, m->labels[i], help);
    }
}

void ordo_service_metrics_init(ordo_service_metrics_t *m, ordo_consumer_config_t *cfgs, int n)
{
    memset(m, 0, sizeof *m);
    m->n = n < ORDO_SERVICE_MAX_CONSUMERS ? n : ORDO_SERVICE_MAX_CONSUMERS;
    for (int i = 0; i < m->n; i++)
        snprintf(m->labels[i], sizeof m->labels[i], "durable=\"%s\"", cfgs[i].durable);
    counters(m, m->n, "ordo_consumer_handled_total", "messages handled and acknowledged",
             offsetof(ordo_consumer_counters_t, handled));
    counters(m, m->n, "ordo_consumer_held_total",
             "messages held because a dependency was unreachable (tried again without spending a delivery)",
             offsetof(ordo_consumer_counters_t, held));
    counters(m, m->n, "ordo_consumer_redelivered_total", "messages delivered more than once",
             offsetof(ordo_consumer_counters_t, redelivered));
    counters(m, m->n, "ordo_consumer_parked_total", "messages parked (given up on: stream PARKED)",
             offsetof(ordo_consumer_counters_t, parked));
    m->latency = ordo_metrics_histogram(&m->registry, "ordo_consumer_handle_duration_seconds",
                                        "time the handler takes for a message (a batch's time for each of its messages)");
    for (int i = 0; i < m->n; i++) {
        m->counters[i].latency = m->latency;
        cfgs[i].counters = &m->counters[i];
    }
}

void ordo_service_metrics_watch(ordo_service_metrics_t *m, int i, ordo_consumer_t *c)
{
    if (i >= 0 && i < m->n)
        m->consumers[i] = c;
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

void ordo_service_metrics_render(ordo_service_metrics_t *m, ordo_buf_t *out)
{
    ordo_metrics_render(&m->registry, out);
    ordo_buf_puts(out, "# HELP ordo_consumer_pending_messages stream messages JetStream had not handed over yet"
                       " (after the last fetch)\n# TYPE ordo_consumer_pending_messages gauge\n");
    for (int i = 0; i < m->n; i++)
        ordo_buf_printf(out, "ordo_consumer_pending_messages{%s} %lld\n", m->labels[i],
                        m->consumers[i] != NULL ? (long long)ordo_consumer_pending(m->consumers[i]) : 0LL);
    ordo_process_metrics_render(out);
}

static void on_request(void *vctx, const ordo_http_request_t *req, ordo_http_response_t *resp)
{
    ordo_buf_t b = ORDO_BUF_INIT;

    if (strcmp(req->path, "/metrics") != 0) {
        ordo_http_fail(resp, &(ordo_error_t){.code = ORDO_NOT_FOUND, .msg = "only /metrics is served here"});
        return;
    }
    ordo_service_metrics_render(vctx, &b);
    resp->status = 200;
    resp->body = b.data != NULL ? b.data : strdup("");
    resp->content_type = "text/plain; version=0.0.4";
}

ordo_status ordo_service_metrics_serve(ordo_service_metrics_t *m, const char *addr, ordo_http_server_t **out, int *port,
                                       ordo_error_t *err)
{
    ordo_http_config_t cfg = {.addr = addr, .threads = 1, .max_body = 1024, .connection_timeout_s = 10,
                              .max_connections = 16, .max_per_address = 8,
                              .enable_hint = "serve /metrics on a loopback address"};
    return ordo_http_start(&cfg, on_request, m, out, port, err);
}
