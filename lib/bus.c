#include "ordo/bus.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ordo/log.h"
#include "ordo/uuid.h"

struct ordo_bus {
    natsConnection *nc;
    jsCtx *js;
    char inbox_prefix[160];   /* replies to this connection come under it */
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

ordo_status ordo_bus_status(ordo_bus_t *bus, natsStatus s, jsErrCode jerr, const char *what, ordo_error_t *err)
{
    const char *said = NULL;

    if (s != NATS_OK && bus != NULL && bus->nc != NULL &&
        natsConnection_GetLastError(bus->nc, &said) == NATS_NOT_PERMITTED)
        return ordo_error_set(err, ORDO_FORBIDDEN, "%s: NATS does not permit it to this user (%.200s)", what,
                              said != NULL ? said : "");
    return ordo_status_of_nats(s, jerr, what, err);
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

/* Where replies to a connection with @p auth come: a user's under its own
 * prefix, which its permissions may allow alone. */
static void inbox_prefix(const ordo_bus_auth_t *auth, char *out, size_t cap)
{
    if (auth != NULL && ordo_opt_given(auth->user))
        snprintf(out, cap, "_INBOX_%s", auth->user);
    else
        snprintf(out, cap, "_INBOX");
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
        inbox_prefix(auth, inbox, sizeof inbox);
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
    inbox_prefix(cfg->auth, bus->inbox_prefix, sizeof bus->inbox_prefix);
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

natsConnection *ordo_bus_nc(ordo_bus_t *bus)
{
    return bus->nc;
}

void ordo_bus_inbox(ordo_bus_t *bus, char *out, size_t cap)
{
    char id[ORDO_UUID_LEN];
    ordo_uuid_v4(id);
    snprintf(out, cap, "%s.%s", bus->inbox_prefix, id);
}

jsCtx *ordo_bus_js(ordo_bus_t *bus)
{
    return bus->js;
}

unsigned ordo_bus_reconnects(ordo_bus_t *bus)
{
    return atomic_load(&bus->reconnects);
}

/* What a stream should be: its configuration in @p cfg (pointing into @p subject). */
static void stream_config(jsStreamConfig *cfg, const char *name, const char **subject, int64_t max_age_s,
                          int64_t max_bytes, jsDiscardPolicy discard)
{
    jsStreamConfig_Init(cfg);
    cfg->Name = name;
    cfg->Subjects = subject;
    cfg->SubjectsLen = 1;
    cfg->Storage = js_FileStorage;
    cfg->Duplicates = (int64_t)120 * 1000 * 1000 * 1000;   /* 2 min, in ns */
    cfg->MaxAge = max_age_s * 1000 * 1000 * 1000;
    cfg->MaxBytes = max_bytes;
    cfg->Discard = discard;
}

/* Creates the stream @p want when missing; with @p update, changes the
 * limits of one that has others. */
static ordo_status ensure_stream(ordo_bus_t *bus, jsStreamConfig *want, bool update, ordo_error_t *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, bus->js, want->Name, NULL, &jerr);

    if (s == NATS_OK) {
        bool same = si->Config->MaxAge == want->MaxAge && si->Config->MaxBytes == want->MaxBytes;
        jsStreamInfo_Destroy(si);
        if (same || !update)
            return ORDO_OK;
        if ((s = js_UpdateStream(&si, bus->js, want, NULL, &jerr)) == NATS_OK) {
            ORDO_INFO("JetStream stream limits changed", "stream=%s max_age_s=%lld max_bytes=%lld", want->Name,
                      (long long)(want->MaxAge / 1000000000), (long long)want->MaxBytes);
            jsStreamInfo_Destroy(si);
        } else   /* the stream works as it is (e.g. a server too small to reserve the bytes) */
            ORDO_WARN("cannot change the stream's limits; keeping its own", "stream=%s err=\"%s\" jerr=%d", want->Name,
                      natsStatus_GetText(s), (int)jerr);
        return ORDO_OK;
    }
    if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
        return ordo_status_of_nats(s, jerr, "cannot look up a stream", err);
    s = js_AddStream(&si, bus->js, want, NULL, &jerr);
    if (s != NATS_OK && want->MaxBytes > 0 && (jerr == JSStorageResourcesExceededErr || jerr == JSInsufficientResourcesErr ||
                                               jerr == JSAccountResourcesExceededErr)) {
        /* a server whose JetStream storage is smaller than the limit cannot
         * reserve it: the stream is made without a byte limit (its age limit
         * stands) rather than not at all */
        ORDO_WARN("JetStream cannot reserve the stream's byte limit; it is created without one", "stream=%s max_bytes=%lld",
                  want->Name, (long long)want->MaxBytes);
        want->MaxBytes = -1;
        jerr = 0;
        s = js_AddStream(&si, bus->js, want, NULL, &jerr);
    }
    if (s == NATS_OK) {
        ORDO_INFO("JetStream stream created", "stream=%s subjects=%s max_age_s=%lld max_bytes=%lld", want->Name,
                  want->Subjects[0], (long long)(want->MaxAge / 1000000000), (long long)want->MaxBytes);
        jsStreamInfo_Destroy(si);
    }
    /* another process may have created it meanwhile */
    else if (jerr == JSStreamNameExistErr)
        s = NATS_OK;
    return ordo_status_of_nats(s, jerr, "cannot create a stream", err);
}

ordo_status ordo_bus_ensure_streams(ordo_bus_t *bus, const ordo_stream_limits_t *limits, ordo_error_t *err)
{
    const char *events_subject[] = {ORDO_BUS_SUBJECTS}, *parked_subject[] = {ORDO_PARKED_SUBJECTS};
    jsStreamConfig events, parked;
    ordo_status st;

    stream_config(&events, ORDO_BUS_STREAM, events_subject, limits ? limits->max_age_s : ORDO_EVENTS_MAX_AGE_S,
                  limits ? limits->max_bytes : ORDO_EVENTS_MAX_BYTES, js_DiscardOld);
    stream_config(&parked, ORDO_PARKED_STREAM, parked_subject, ORDO_PARKED_MAX_AGE_S, ORDO_PARKED_MAX_BYTES,
                  js_DiscardNew);
    if ((st = ensure_stream(bus, &events, limits != NULL, err)) != ORDO_OK)
        return st;
    return ensure_stream(bus, &parked, false, err);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const ordo_bus_lag_t *)a)->name, ((const ordo_bus_lag_t *)b)->name);
}

/* Each durable's messages in PARKED (its subject parked.<durable>); left 0
 * when PARKED cannot be read. */
static void add_parked(ordo_bus_t *bus, ordo_bus_lag_t *lags, size_t n)
{
    jsOptions o;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;

    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = ORDO_PARKED_SUBJECTS;
    if (n == 0 || js_GetStreamInfo(&si, bus->js, ORDO_PARKED_STREAM, &o, &jerr) != NATS_OK)
        return;
    for (int k = 0; si->State.Subjects != NULL && k < si->State.Subjects->Count; k++) {
        const char *subject = si->State.Subjects->List[k].Subject;
        for (size_t i = 0; i < n; i++)
            if (strncmp(subject, ORDO_PARKED_PREFIX, strlen(ORDO_PARKED_PREFIX)) == 0 &&
                strcmp(subject + strlen(ORDO_PARKED_PREFIX), lags[i].name) == 0)
                lags[i].parked = (int64_t)si->State.Subjects->List[k].Msgs;
    }
    jsStreamInfo_Destroy(si);
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
    add_parked(bus, *out, *n);
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
