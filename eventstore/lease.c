/*
 * The relay's lease: one eventstore per database publishes the outbox.
 *
 * The lease is a row (relay_lease 'outbox') naming its holder and when it
 * expires, both judged by the database's clock, so instances need no clock
 * of their own in common. A holder renews it every third of its length; any
 * instance takes it once it has expired. Locally the holder counts it as
 * held only until a fifth of the length before the database would let it
 * go, measured from before the renewing statement was sent. A holder that
 * stalls past that may still finish a round while a successor starts: the
 * same event then goes out twice, and JetStream drops the copy by its
 * Nats-Msg-Id.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "es.h"
#include "ordo/log.h"
#include "ordo/retry.h"

void es_lease_init(es_lease_t *l, const char *holder, int lease_ms)
{
    memset(l, 0, sizeof *l);
    snprintf(l->holder, sizeof l->holder, "%s", holder);
    l->lease_ms = lease_ms;
}

/* Takes the lease if free or expired, renews it if ours; *held tells which. */
static ordo_status claim(es_lease_t *l, ordo_pg_t *pg, bool *held, ordo_error_t *err)
{
    char length[32];
    const char *params[2] = {l->holder, length};
    PGresult *res;
    ordo_status st;

    snprintf(length, sizeof length, "%d milliseconds", l->lease_ms);
    /* Run once more on a connection found lost (the database restarted since
     * the last renewal): claiming twice is harmless, and giving the lease up
     * stopped publishing for a fifth of its length after every restart. */
    if ((st = ordo_pg_query_idempotent(pg, "INSERT INTO relay_lease (name, holder, expires_at)"
                                           " VALUES ('outbox', $1, now() + $2::interval)"
                                           " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
                                           " expires_at = excluded.expires_at"
                                           " WHERE relay_lease.holder = excluded.holder OR relay_lease.expires_at < now()"
                                           " RETURNING holder",
                                       2, params, &res, err)) != ORDO_OK)
        return st;
    *held = PQntuples(res) == 1;
    PQclear(res);
    return ORDO_OK;
}

bool es_lease_hold(es_lease_t *l, ordo_pg_t *pg, bool *gained)
{
    int64_t now = ordo_mono_ms();
    bool was = l->held && now < l->valid_until, held = false, reached = true;
    ordo_error_t err;

    *gained = false;
    if (now < l->renew_at)
        return was;
    if (claim(l, pg, &held, &err) != ORDO_OK) {
        if (!l->warned)   /* once per outage */
            ORDO_WARN("relay cannot claim the lease; nothing is published meanwhile", "err=\"%s\"", err.msg);
        l->warned = true;
        held = false;
        reached = false;
    } else {
        l->warned = false;
    }
    if (held) {
        l->valid_until = now + l->lease_ms - l->lease_ms / 5;
        l->renew_at = now + l->lease_ms / 3;
    } else {
        l->renew_at = now + l->lease_ms / 5;   /* look again soon: the holder may be gone */
    }
    if (held && !l->held)
        ORDO_INFO("relay holds the lease: this instance publishes the outbox", "holder=%s", l->holder);
    else if (!held && l->held)
        ORDO_INFO(reached ? "relay lease lost: another instance publishes the outbox"
                          : "relay lease given up: the database is unreachable",
                  "holder=%s", l->holder);
    *gained = held && !was;
    l->held = held;
    return held;
}

void es_lease_release(es_lease_t *l, ordo_pg_t *pg)
{
    const char *params[1] = {l->holder};
    ordo_error_t err;

    if (!l->held)
        return;
    l->held = false;
    if (ordo_pg_query_idempotent(pg, "UPDATE relay_lease SET expires_at = now() - interval '1 millisecond'"
                                     " WHERE name = 'outbox' AND holder = $1",
                                 1, params, NULL, &err) != ORDO_OK)
        ORDO_WARN("relay cannot release its lease (it expires on its own)", "err=\"%s\"", err.msg);
}
