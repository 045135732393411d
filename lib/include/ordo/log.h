/**
 * @file log.h
 * Structured logging: one line per event, `ts=... level=... svc=... msg="..." key=value ...`.
 *
 * The level and service name are set once by ordo_log_init() before any
 * thread starts and are read-only afterwards. ORDO_LOG checks the level
 * before formatting anything. Thread-safe: each line is one write(2).
 */
#ifndef ORDO_LOG_H
#define ORDO_LOG_H

#include <pthread.h>

typedef enum ordo_log_level {
    ORDO_LOG_DEBUG = 0,
    ORDO_LOG_INFO,
    ORDO_LOG_WARN,
    ORDO_LOG_ERROR,
} ordo_log_level;

/** Sets the process's service name and minimum level. Call once, first. */
void ordo_log_init(const char *service, ordo_log_level level);

/** Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int ordo_log_level_parse(const char *text);
/** The service name given to ordo_log_init(). */
const char *ordo_log_service(void);

/**
 * Names thread @p t "<base>-<index>" (or @p base when @p index < 0), cut to
 * the 15 characters Linux keeps: what top -H, ps -L and perf show.
 */
void ordo_thread_name(pthread_t t, const char *base, int index);

/** True when lines of @p level are written. */
int ordo_log_enabled(ordo_log_level level);

/**
 * @p url as it may be logged, in @p buf (returned): a password in its user
 * part ("nats://u:secret@h" -> "nats://u:***@h"), a token standing alone
 * there ("nats://secret@h" -> "nats:// ***@h" without the space) and the
 * value of any password= parameter (libpq's "?password=secret") replaced by ***.
 * Truncated to @p cap.
 */
const char *ordo_log_url(const char *url, char *buf, size_t cap);

/**
 * Writes one line. @p fmt formats the key=value tail after msg, e.g.
 * ordo_log_write(ORDO_LOG_INFO, "started", "port=%d", port).
 */
void ordo_log_write(ordo_log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ORDO_LOG(level, msg, ...)                                         \
    do {                                                                  \
        if (ordo_log_enabled(level))                                      \
            ordo_log_write((level), (msg), __VA_ARGS__);                  \
    } while (0)

#define ORDO_DEBUG(msg, ...) ORDO_LOG(ORDO_LOG_DEBUG, msg, __VA_ARGS__)
#define ORDO_INFO(msg, ...)  ORDO_LOG(ORDO_LOG_INFO, msg, __VA_ARGS__)
#define ORDO_WARN(msg, ...)  ORDO_LOG(ORDO_LOG_WARN, msg, __VA_ARGS__)
#define ORDO_ERROR(msg, ...) ORDO_LOG(ORDO_LOG_ERROR, msg, __VA_ARGS__)

#endif
