#include "ordo/bus.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/log.h"

struct ordo_bus {
    natsConnection *nc;
    jsCtx *js;
    atomic_uint reconnects;   /* counted by cnats' reconnected callback */
};

static void on_reconnected(natsConnection *nc, void *closure)
{
    ordo_bus_t *bus = closure;
    (void)nc;
    atomic_fetch_add(&bus->reconnects, 1);
}

ordo_status ordo_status_of_nats(natsStatus s, jsErrCode jerr, const char *what, ordo_error_t *err)
{
    ordo_status st;
    switch (s) {
    case NATS_OK: return ORDO_OK;
    case NATS_NO_SERVER:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_RESPONDERS:
    case NATS_STALE_CONNECTION:
    case NATS_INSUFFICIENT_BUFFER:
    case NATS_IO_ERROR:
        st = ORDO_UNAVAILABLE;
        break;
    case NATS_TIMEOUT:
        st = ORDO_TIMEOUT;
        break;
    case NATS_MAX_PAYLOAD:
        st = ORDO_TOO_LARGE;
        break;
    case NATS_NOT_FOUND:
        st = ORDO_NOT_FOUND;
        break;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
        st = ORDO_INVALID;
        break;
    default:
        st = ORDO_INTERNAL;
    }
    return ordo_error_set(err, st, "%s: %s (jetstream error %d)", what, natsStatus_GetText(s), (int)jerr);
}

/* The first line of the secret file @p path (malloc'd: wipe and free it
 * with ordo_secret_free); NULL (with *@p err naming @p what and the file, not
 * the content) when it cannot be read or is empty. */
static char *read_secret(const char *path, const char *what, ordo_error_t *err)
{
    char *secret = NULL;

    if (ordo_file_read(path, 4096, &secret, NULL) == ORDO_OK) {
        secret[strcspn(secret, "\r\n")] = '\0';
        if (secret[0] != '\0')
            return secret;
        free(secret);
    }
    ordo_error_set(err, ORDO_INVALID, "NATS %s file %s cannot be read or is empty", what, path);
    return NULL;
}

/* Credentials and TLS of @p auth into @p opts. */
static natsStatus set_auth(natsOptions *opts, const ordo_bus_auth_t *auth, ordo_error_t *err)
{
    char *secret, inbox[160];
    natsStatus s = NATS_OK;

    if (auth == NULL)
        return NATS_OK;
    if (ordo_opt_given(auth->user)) {
        if (!ordo_opt_given(auth->password_file)) {
            ordo_error_set(err, ORDO_INVALID, "NATS user %s needs --nats-password-file", auth->user);
            return NATS_INVALID_ARG;
        }
        if ((secret = read_secret(auth->password_file, "password", err)) == NULL)
            return NATS_INVALID_ARG;
        s = natsOptions_SetUserInfo(opts, auth->user, secret);
        ordo_secret_free(secret);
        /* replies to this user come under its own prefix, which its permissions may allow alone */
        snprintf(inbox, sizeof inbox, "_INBOX_%s", auth->user);
        if (s == NATS_OK)
            s = natsOptions_SetCustomInboxPrefix(opts, inbox);
    } else if (ordo_opt_given(auth->token_file)) {
        if ((secret = read_secret(auth->token_file, "token", err)) == NULL)
            return NATS_INVALID_ARG;
        s = natsOptions_SetToken(opts, secret);
        ordo_secret_free(secret);
    } else if (ordo_opt_given(auth->creds_file)) {
        s = natsOptions_SetUserCredentialsFromFiles(opts, auth->creds_file, NULL);
    }
    if (s == NATS_OK && ordo_opt_given(auth->ca_file) && (s = natsOptions_SetSecure(opts, true)) == NATS_OK)
        s = natsOptions_LoadCATrustedCertificates(opts, auth->ca_file);
    if (s == NATS_OK && ordo_opt_given(auth->cert_file))
        s = natsOptions_LoadCertificatesChain(opts, auth->cert_file, auth->key_file);
    if (s != NATS_OK)
        ordo_error_set(err, ORDO_INVALID, "NATS credentials or TLS files refused: %s", natsStatus_GetText(s));
    return s;
}

ordo_status ordo_bus_connect(const ordo_bus_config_t *cfg, ordo_bus_t **out, ordo_error_t *err)
{
    natsOptions *opts = NULL;
    ordo_bus_t *bus;
    natsStatus s;

    *out = NULL;
    bus = calloc(1, sizeof *bus);
    if (bus == NULL)
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, cfg->url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, cfg->name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, cfg->connect_timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 250);
    /* A one-byte reconnect buffer: publishing while disconnected fails at
     * once rather than queueing behind messages lost with the old socket. */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(opts, 1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(opts, on_reconnected, bus);
    if (s == NATS_OK && (s = set_auth(opts, cfg->auth, err)) != NATS_OK) {
        natsOptions_Destroy(opts);
        ordo_bus_destroy(bus);
        return ORDO_INVALID;
    }
    if (s == NATS_OK)
        s = natsConnection_Connect(&bus->nc, opts);
    if (s == NATS_OK)
        s = natsConnection_JetStream(&bus->js, bus->nc, cfg->js_options);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        ordo_bus_destroy(bus);
        return ordo_status_of_nats(s, 0, "cannot connect to NATS", err);
    }
    *out = bus;
    return ORDO_OK;
}

void ordo_bus_destroy(ordo_bus_t *bus)
{
    if (bus == NULL)
        return;
    if (bus->js != NULL)
        jsCtx_Destroy(bus->js);
    if (bus->nc != NULL) {
        natsConnection_Close(bus->nc);
        natsConnection_Destroy(bus->nc);
    }
    free(bus);
}

bool ordo_bus_connected(ordo_bus_t *bus)
{
    return bus != NULL && natsConnection_Status(bus->nc) == NATS_CONN_STATUS_CONNECTED;
}

jsCtx *ordo_bus_js(ordo_bus_t *bus)
{
    return bus->js;
}

unsigned ordo_bus_reconnects(ordo_bus_t *bus)
{
    return atomic_load(&bus->reconnects);
}

ordo_status ordo_bus_ensure_events_stream(ordo_bus_t *bus, ordo_error_t *err)
{
    jsStreamInfo *si = NULL;
    jsStreamConfig cfg;
    const char *subjects[] = {ORDO_BUS_SUBJECTS};
    jsErrCode jerr = 0;
    natsStatus s;

    s = js_GetStreamInfo(&si, bus->js, ORDO_BUS_STREAM, NULL, &jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return ORDO_OK;
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        return ordo_status_of_nats(s, jerr, "cannot look up the EVENTS stream", err);
    jsStreamConfig_Init(&cfg);
    cfg.Name = ORDO_BUS_STREAM;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = (int64_t)120 * 1000 * 1000 * 1000;   /* 2 min, in ns */
    s = js_AddStream(&si, bus->js, &cfg, NULL, &jerr);
    if (s == NATS_OK) {
        ORDO_INFO("JetStream stream created", "stream=%s subjects=%s", ORDO_BUS_STREAM, ORDO_BUS_SUBJECTS);
        jsStreamInfo_Destroy(si);
    }
    /* another process may have created it meanwhile */
    else if (jerr == JSStreamNameExistErr)
        s = NATS_OK;
    return ordo_status_of_nats(s, jerr, "cannot create the EVENTS stream", err);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const ordo_bus_lag_t *)a)->name, ((const ordo_bus_lag_t *)b)->name);
}

ordo_status ordo_bus_lags(ordo_bus_t *bus, ordo_bus_lag_t **out, size_t *n, ordo_error_t *err)
{
    jsConsumerInfoList *list = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Consumers(&list, bus->js, ORDO_BUS_STREAM, NULL, &jerr);

    *out = NULL;
    *n = 0;
    if (s != NATS_OK)
        return ordo_status_of_nats(s, jerr, "cannot list the consumers", err);
    if (list->Count > 0 && (*out = calloc((size_t)list->Count, sizeof **out)) == NULL) {
        jsConsumerInfoList_Destroy(list);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    for (int i = 0; i < list->Count; i++) {
        const jsConsumerInfo *ci = list->List[i];
        ordo_bus_lag_t *l = &(*out)[i];
        snprintf(l->name, sizeof l->name, "%s", ci->Name);
        l->pending = (int64_t)ci->NumPending;
        l->ack_pending = ci->NumAckPending;
        l->redelivered = ci->NumRedelivered;
        l->delivered = (int64_t)ci->Delivered.Stream;
    }
    *n = (size_t)list->Count;
    jsConsumerInfoList_Destroy(list);
    if (*n > 1)
        qsort(*out, *n, sizeof **out, by_name);
    return ORDO_OK;
}

static void append_token(char *out, size_t *n, size_t cap, const char *token)
{
    for (const char *p = token; *p && *n + 1 < cap; p++) {
        unsigned char ch = (unsigned char)*p;
        out[(*n)++] = (ch <= 0x20 || ch == '*' || ch == '>' || ch == 0x7f) ? '_' : (char)ch;
    }
}

bool ordo_bus_subject(char *out, size_t cap, const char *aggregate_type, const char *event_type)
{
    size_t n = 0;
    if (strlen(aggregate_type) + strlen(event_type) + sizeof "events.." > cap)
        return false;
    memcpy(out, "events.", 7);
    n = 7;
    append_token(out, &n, cap, aggregate_type);
    out[n++] = '.';
    append_token(out, &n, cap, event_type);
    out[n] = '\0';
    return true;
}
