/**
 * @file uuid.h
 * UUIDs as canonical lower-case text (36 characters + NUL): v4 from getrandom, v5 and parsing via libuuid.
 */
#ifndef ORDO_UUID_H
#define ORDO_UUID_H

#include <stdbool.h>

#define ORDO_UUID_LEN 37

/** True when @p text is a UUID in the canonical 8-4-4-4-12 hex form. */
bool ordo_uuid_valid(const char *text);

/** A new random (v4) UUID. */
void ordo_uuid_v4(char out[ORDO_UUID_LEN]);

/**
 * A name-based (v5, SHA-1) UUID of @p name in namespace @p ns (a valid UUID):
 * the same inputs always give the same id — for deterministic follow-up events.
 * @return false when @p ns is not a UUID.
 */
bool ordo_uuid_v5(const char *ns, const char *name, char out[ORDO_UUID_LEN]);

#endif
