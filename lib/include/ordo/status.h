/**
 * @file status.h
 * The one status type of Ordo, and an error object that carries its detail.
 *
 * Functions that can fail return ordo_status and, when given an ordo_error_t,
 * fill it with a human-readable message. Mapping to gRPC and HTTP codes
 * happens in exactly one place each (ordo_grpc_code_of, ordo_http_code_of).
 */
#ifndef ORDO_STATUS_H
#define ORDO_STATUS_H

#include <stdarg.h>

typedef enum ordo_status {
    ORDO_OK = 0,
    ORDO_INVALID,       /**< bad input: the caller must change the request */
    ORDO_CONFLICT,      /**< a precondition failed (wrong expected version) */
    ORDO_NOT_FOUND,
    ORDO_UNAVAILABLE,   /**< a dependency (database, NATS, peer) is unreachable */
    ORDO_RETRY,         /**< transient: the operation may be retried as a whole */
    ORDO_TOO_LARGE,     /**< over a configured size limit */
    ORDO_TIMEOUT,
    ORDO_UNIMPLEMENTED,
    ORDO_NO_MEMORY,
    ORDO_INTERNAL,
    ORDO_UNAUTHENTICATED, /**< no identity, or one this service does not know */
    ORDO_FORBIDDEN,       /**< a known identity whose role may not do this */
} ordo_status;

/** Detail of a failure. Fixed-size: never allocated, safe to keep on the stack. */
typedef struct ordo_error {
    ordo_status code;
    char msg[512];
} ordo_error_t;

/** A short constant name of the status ("invalid", "conflict", ...). */
const char *ordo_status_text(ordo_status s);

/**
 * Records @p code and a printf-style message in @p err (which may be NULL).
 * @return @p code, so that `return ordo_error_set(err, ORDO_INVALID, ...)` reads well.
 */
ordo_status ordo_error_set(ordo_error_t *err, ordo_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Clears @p err (may be NULL) to ORDO_OK with an empty message. */
void ordo_error_clear(ordo_error_t *err);

#endif
