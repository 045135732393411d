/**
 * @file json.h
 * JSON checks shared by the services.
 */
#ifndef ORDO_JSON_H
#define ORDO_JSON_H

#include <stddef.h>

#include "ordo/status.h"

/**
 * ORDO_OK when @p data (@p len bytes, not NUL-terminated) is one JSON value
 * that PostgreSQL's jsonb takes, with no key twice in an object;
 * ORDO_INVALID with the line, column and reason otherwise. Builds no
 * document (see lib/json.c for the rules).
 */
ordo_status ordo_json_check(const char *data, size_t len, ordo_error_t *err);

#include <stdbool.h>

/** True when @p s (@p len bytes) is well-formed UTF-8 without NUL bytes. */
bool ordo_utf8_valid(const char *s, size_t len);

#endif
