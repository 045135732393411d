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

/* Appends @p n bytes of @p s to @p out (at *len of cap, NUL-terminated). */
static void put(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + 1 >= cap)
        return;
    if (n > cap - 1 - *len)
        n = cap - 1 - *len;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

/* One URL of a list (@p n bytes at @p url) into @p out, its secrets hidden. */
static void redact_one(const char *url, size_t n, char *out, size_t cap, size_t *len)
{
    const char *p = url, *end = url + n, *scheme = NULL, *host, *at;

    for (const char *q = url; q + 3 <= end && scheme == NULL; q++)
        if (memcmp(q, "://", 3) == 0)
            scheme = q;
    if (scheme != NULL) {
        put(out, cap, len, url, (size_t)(scheme + 3 - url));
        p = scheme + 3;
        for (host = p; host < end && *host != '/' && *host != '?' && *host != '#';)
            host++;
        at = memchr(p, '@', (size_t)(host - p));
        if (at != NULL) {
            const char *colon = memchr(p, ':', (size_t)(at - p));
            if (colon != NULL)
                put(out, cap, len, p, (size_t)(colon + 1 - p));
            put(out, cap, len, "***", 3);
            p = at;
        }
    }
    while (p < end) {   /* the rest, with password= values hidden */
        const char *key = NULL;
        for (const char *q = p; q + 9 <= end && key == NULL; q++)
            if (memcmp(q, "password=", 9) == 0 && (q == url || q[-1] == '?' || q[-1] == '&' || q[-1] == ' '))
                key = q;
        if (key == NULL) {
            put(out, cap, len, p, (size_t)(end - p));
            break;
        }
        put(out, cap, len, p, (size_t)(key + 9 - p));
        put(out, cap, len, "***", 3);
        for (p = key + 9; p < end && *p != '&' && *p != ' ';)
            p++;
    }
}

const char *ordo_log_url(const char *url, char *buf, size_t cap)
{
    size_t len = 0;

    if (cap == 0)
        return buf;
    buf[0] = '\0';
    for (const char *p = url;;) {   /* a list of servers: each one's secrets */
        size_t n = strcspn(p, ",");
        redact_one(p, n, buf, cap, &len);
        if (p[n] == '\0')
            break;
        put(buf, cap, &len, ",", 1);
        p += n + 1;
    }
    return buf;
}
