/*
 * API keys are random strings given to their holders once; orderapi keeps
 * only their SHA-256, so the key file can be read by an operator without
 * giving the keys away. A presented key is hashed and looked up.
 */
#include "keys.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One line of the file into @p key; false when it is not "sha256:<hex> scope". */
static bool parse_line(char *line, api_key_t *key)
{
    char *hex = line + 7, *scope;

    if (strncmp(line, "sha256:", 7) != 0 || strlen(hex) < 2 * API_KEY_HASH + 2 || hex[2 * API_KEY_HASH] != ' ')
        return false;
    for (int i = 0; i < API_KEY_HASH; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        key->hash[i] = (unsigned char)(hi << 4 | lo);
    }
    scope = hex + 2 * API_KEY_HASH + 1;
    memset(key->customer, 0, sizeof key->customer);
    key->staff = strcmp(scope, "staff") == 0;
    if (key->staff)
        return true;
    if (strncmp(scope, "customer:", 9) != 0 || scope[9] == '\0' || strlen(scope + 9) > API_CUSTOMER_MAX)
        return false;
    memcpy(key->customer, scope + 9, strlen(scope + 9));
    return true;
}

ordo_status api_keys_load(const char *path, api_keys_t *out, ordo_error_t *err)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int lineno = 0;
    ordo_status st = ORDO_OK;

    memset(out, 0, sizeof *out);
    if (f == NULL)
        return ordo_error_set(err, ORDO_INVALID, "--api-keys-file %s cannot be read", path);
    while (st == ORDO_OK && fgets(line, sizeof line, f) != NULL) {
        api_key_t key, *grown;
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        if (!parse_line(line, &key)) {
            st = ordo_error_set(err, ORDO_INVALID,
                                "--api-keys-file %s line %d: not \"sha256:<64 hex digits> staff|customer:<id>\"", path,
                                lineno);
        } else if ((grown = realloc(out->keys, (out->n + 1) * sizeof *grown)) == NULL) {
            st = ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
        } else {
            out->keys = grown;
            out->keys[out->n++] = key;
        }
    }
    fclose(f);
    if (st == ORDO_OK && out->n == 0)
        st = ordo_error_set(err, ORDO_INVALID, "--api-keys-file %s holds no key", path);
    if (st != ORDO_OK)
        api_keys_free(out);
    return st;
}

void api_keys_free(api_keys_t *k)
{
    free(k->keys);
    memset(k, 0, sizeof *k);
}

const api_key_t *api_keys_find(const api_keys_t *k, const char *authorization)
{
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    const char *key;

    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    key = authorization + 7;
    while (*key == ' ')
        key++;
    if (*key == '\0' || EVP_Digest(key, strlen(key), hash, &len, EVP_sha256(), NULL) != 1 || len != API_KEY_HASH)
        return NULL;
    for (size_t i = 0; i < k->n; i++)
        if (memcmp(k->keys[i].hash, hash, API_KEY_HASH) == 0)
            return &k->keys[i];
    return NULL;
}
