/* orderapi's API keys: who may place and read which orders. */
#ifndef KEYS_H
#define KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "ordo/status.h"

enum { API_KEY_HASH = 32, API_CUSTOMER_MAX = 128 };

/* One key, known by its SHA-256 only, and what it may do. */
typedef struct api_key {
    unsigned char hash[API_KEY_HASH];
    bool staff;                            /* every customer's orders */
    char customer[API_CUSTOMER_MAX + 1];   /* otherwise: this customer's alone */
} api_key_t;

typedef struct api_keys {
    api_key_t *keys;
    size_t n;
} api_keys_t;

/*
 * Reads @p path: one key a line, "sha256:<64 hex digits> staff" or
 * "sha256:<64 hex digits> customer:<id>"; blank lines and lines starting with
 * # are skipped. The file holds no key, only hashes. Free with api_keys_free().
 */
ordo_status api_keys_load(const char *path, api_keys_t *out, ordo_error_t *err);

void api_keys_free(api_keys_t *k);

/* The key an "Authorization: Bearer <key>" header presents, or NULL
 * (no header, another scheme, or a key not in the file). */
const api_key_t *api_keys_find(const api_keys_t *k, const char *authorization);

#endif
