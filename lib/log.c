#define _GNU_SOURCE   /* pthread_setname_np */
#include "ordo/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Written once by ordo_log_init() before threads start; read-only after. */
static struct {
    char service[32];
    ordo_log_level level;
} log_config = {"ordo", ORDO_LOG_INFO};

static const char *level_names[] = {"debug", "info", "warn", "error"};

void ordo_log_init(const char *service, ordo_log_level level)
{
    snprintf(log_config.service, sizeof log_config.service, "%s", service);
    log_config.level = level;
}

int ordo_log_level_parse(const char *text)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(text, level_names[i]) == 0)
            return i;
    return -1;
}

const char *ordo_log_service(void)
{
    return log_config.service;
}

int ordo_log_enabled(ordo_log_level level)
{
    return level >= log_config.level;
}

void ordo_log_write(ordo_log_level level, const char *msg, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ level=%s svc=%s msg=\"%s\"",
                          ts.tv_nsec / 1000000L, level_names[level], log_config.service, msg);
    if (fmt != NULL && fmt[0] != '\0' && n < sizeof line - 2) {
        line[n++] = ' ';
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
        n = m < 0 ? n : n + (size_t)m;
    }
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    /* One write per line keeps lines whole when threads log at once. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void ordo_thread_name(pthread_t t, const char *base, int index)
{
    char name[16];

    if (index < 0)
        snprintf(name, sizeof name, "%s", base);
    else
        snprintf(name, sizeof name, "%s-%d", base, index);
    pthread_setname_np(t, name);   /* a name is a help, not a need: errors ignored */
}
