#include "ordo/status.h"

#include <stdio.h>

const char *ordo_status_text(ordo_status s)
{
    switch (s) {
    case ORDO_OK: return "ok";
    case ORDO_INVALID: return "invalid";
    case ORDO_CONFLICT: return "conflict";
    case ORDO_NOT_FOUND: return "not_found";
    case ORDO_UNAVAILABLE: return "unavailable";
    case ORDO_RETRY: return "retry";
    case ORDO_TOO_LARGE: return "too_large";
    case ORDO_TIMEOUT: return "timeout";
    case ORDO_UNIMPLEMENTED: return "unimplemented";
    case ORDO_NO_MEMORY: return "no_memory";
    case ORDO_INTERNAL: return "internal";
    case ORDO_UNAUTHENTICATED: return "unauthenticated";
    case ORDO_FORBIDDEN: return "permission_denied";
    }
    return "unknown";
}

ordo_status ordo_error_set(ordo_error_t *err, ordo_status code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void ordo_error_clear(ordo_error_t *err)
{
    if (err != NULL) {
        err->code = ORDO_OK;
        err->msg[0] = '\0';
    }
}
