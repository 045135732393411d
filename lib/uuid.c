#include "ordo/uuid.h"

#include <string.h>
#include <uuid/uuid.h>

bool ordo_uuid_valid(const char *text)
{
    uuid_t u;
    return text != NULL && strlen(text) == 36 && uuid_parse(text, u) == 0;
}

void ordo_uuid_v4(char out[ORDO_UUID_LEN])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

bool ordo_uuid_v5(const char *ns, const char *name, char out[ORDO_UUID_LEN])
{
    uuid_t nsu, u;
    if (!ordo_uuid_valid(ns) || uuid_parse(ns, nsu) != 0)
        return false;
    uuid_generate_sha1(u, nsu, name, strlen(name));
    uuid_unparse_lower(u, out);
    return true;
}
