/*
 * ordoctl verify: audits a running Ordo and exits 1 with a readable report
 * when anything disagrees (docs/operations.md, "ordoctl verify"). It reads
 * the store's tables and the read model over --database-url, the EVENTS
 * stream and the durables over --nats-url, and asks the event store
 * (--addr) to publish what is missing when told --repair.
 *
 * Checks, each printed as {"check": ..., "ok": bool, ...}, every problem as
 * {"problem": check, ...}:
 *   bus          every committed event (not waiting in the outbox) is in
 *                EVENTS, by its Ordo-Position (events older than the
 *                stream's first message aged out: counted, not a problem)
 *   read_model   each order's row equals the fold of its events
 *                (ordo_order_state_apply: the projection's own rules)
 *   stuck        no order without a final status older than --stuck-after-s
 *   saga         at most one debit and one refund per order; a refund only
 *                after a rejection that followed a debit; approved orders
 *                were debited
 *   outbox       at most --outbox-max events waiting to be published
 *   consumers    no durable has parked messages
 * --sample N folds N orders chosen at random instead of every order.
 * --repair publishes missing events again (fresh message ids, through the
 * store's admin Republish) and rewrites read-model rows that disagree with
 * their fold, then says what it did.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "eventstore.pb-c.h"
#include "ordo/buf.h"
#include "ordo/order.h"
#include "ordo/pg.h"
#include "ordo/retry.h"

enum { ORDERS_PAGE = 500 };

typedef struct verify {
    const ctl_config_t *cfg;
    ordo_pg_t *pg;
    ordo_bus_t *bus;
    ordo_grpc_client_t *store;   /* the event store, for --repair (made on first use) */
    int problems, repaired;
} verify_t;

static void problem(verify_t *v, json_t *doc)
{
    v->problems++;
    print_json(doc);
}

static void verdict(const char *check, int problems, json_t *detail)
{
    json_t *doc = json_pack("{s:s, s:b}", "check", check, "ok", problems == 0);
    if (detail != NULL)
        json_object_update_new(doc, detail);
    print_json(doc);
}

/* ---------------------------------------------------------------- the bus */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Every Ordo-Position in EVENTS, sorted, in *@p out (the caller frees). */
static ordo_status bus_positions(verify_t *v, int64_t **out, size_t *n, ordo_error_t *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, ordo_bus_js(v->bus), ORDO_BUS_STREAM, NULL, &jerr);
    size_t cap;

    *out = NULL;
    *n = 0;
    if (s != NATS_OK)
        return ordo_status_of_nats(s, jerr, "cannot read the EVENTS stream", err);
    cap = si->State.Msgs + 1;
    if ((*out = malloc(cap * sizeof **out)) == NULL) {
        jsStreamInfo_Destroy(si);
        return ordo_error_set(err, ORDO_NO_MEMORY, "out of memory");
    }
    for (uint64_t seq = si->State.FirstSeq; seq > 0 && seq <= si->State.LastSeq && *n < cap; seq++) {
        natsMsg *m = NULL;
        const char *pos = NULL;
        if (js_GetMsg(&m, ordo_bus_js(v->bus), ORDO_BUS_STREAM, seq, NULL, &jerr) != NATS_OK)
            continue;   /* deleted */
        if (natsMsgHeader_Get(m, "Ordo-Position", &pos) == NATS_OK && pos != NULL)
            (*out)[(*n)++] = strtoll(pos, NULL, 10);
        natsMsg_Destroy(m);
    }
    jsStreamInfo_Destroy(si);
    qsort(*out, *n, sizeof **out, cmp_i64);
    return ORDO_OK;
}

/* Asks the store to publish [from, to] again with fresh message ids. */
static ordo_status republish(verify_t *v, int64_t from, int64_t to, int64_t *published, ordo_error_t *err)
{
    Eventstore__RepublishRequest req = EVENTSTORE__REPUBLISH_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    ordo_status st = v->store != NULL ? ORDO_OK
                                      : ordo_grpc_client_create(v->cfg->addr, ORDO_GRPC_READ_MAX_BYTES, &v->cfg->tls,
                                                                &v->store, err);

    req.from_position = from;
    req.to_position = to;
    req.fresh_ids = true;
    if (st == ORDO_OK)
        st = ordo_grpc_client_unary(v->store, "/eventstore.EventStoreAdmin/Republish", &req.base,
                                    &eventstore__republish_response__descriptor, v->cfg->timeout_ms, &out, err);
    *published = st == ORDO_OK ? ((Eventstore__RepublishResponse *)out)->queued : 0;
    if (out != NULL)
        protobuf_c_message_free_unpacked(out, NULL);
    return st;
}

static void check_bus(verify_t *v)
{
    static const char sql[] = "SELECT e.position FROM events e WHERE NOT EXISTS"
                              " (SELECT 1 FROM outbox o WHERE o.position = e.position) ORDER BY e.position";
    int64_t *on_bus = NULL, run_from = 0, run_to = 0, aged = 0, missing = 0, published = 0;
    size_t n_bus = 0;
    PGresult *res = NULL;
    ordo_error_t err;
    int before = v->problems;

    if (bus_positions(v, &on_bus, &n_bus, &err) != ORDO_OK ||
        ordo_pg_query_idempotent(v->pg, sql, 0, NULL, &res, &err) != ORDO_OK) {
        problem(v, json_pack("{s:s, s:s}", "problem", "bus", "error", err.msg));
        free(on_bus);
        PQclear(res);
        return;
    }
    for (int i = 0; i <= PQntuples(res); i++) {
        int64_t p = i < PQntuples(res) ? strtoll(PQgetvalue(res, i, 0), NULL, 10) : 0;
        bool absent = i < PQntuples(res) && bsearch(&p, on_bus, n_bus, sizeof *on_bus, cmp_i64) == NULL;
        if (absent && n_bus > 0 && p < on_bus[0]) {
            aged++;   /* older than the stream's oldest message: its limits let it go */
            absent = false;
        }
        if (absent) {
            missing++;
            if (run_from != 0 && p == run_to + 1 && p - run_from < 10000) {
                run_to = p;
                continue;
            }
        }
        if (run_from != 0) {   /* a run of missing positions ends: report it (and repair it) */
            json_t *doc = json_pack("{s:s, s:I, s:I, s:s}", "problem", "bus", "from", (json_int_t)run_from, "to",
                                    (json_int_t)run_to, "what", "committed events missing from the EVENTS stream");
            int64_t done = 0;
            if (v->cfg->repair && republish(v, run_from, run_to, &done, &err) == ORDO_OK) {
                json_object_set_new(doc, "repaired", json_sprintf("published again: %lld", (long long)done));
                published += done;
                v->repaired += (int)done;
            } else if (v->cfg->repair) {
                json_object_set_new(doc, "repair_failed", json_string(err.msg));
            }
            problem(v, doc);
            run_from = 0;
        }
        if (absent)
            run_from = run_to = p;
    }
    verdict("bus", v->problems - before,
            json_pack("{s:i, s:I, s:I, s:I}", "events", PQntuples(res), "on_bus", (json_int_t)n_bus, "missing",
                      (json_int_t)missing, "aged_out", (json_int_t)aged));
    if (published > 0)
        print_json(json_pack("{s:s, s:I}", "repaired", "bus", "published", (json_int_t)published));
    free(on_bus);
    PQclear(res);
}

/* ---------------------------------------------------------- orders, folded */

/* What the saga rules need of one order's events. */
typedef struct saga_facts {
    int debits, refunds, rejections, approvals;
    bool refund_before_rejection, rejection_before_debit, approval_before_debit;
} saga_facts_t;

static void note_step(saga_facts_t *f, const char *type)
{
    if (strcmp(type, ORDO_EV_PAYMENT_DEBITED) == 0) {
        f->debits++;
    } else if (strcmp(type, ORDO_EV_PAYMENT_REFUNDED) == 0) {
        f->refunds++;
        f->refund_before_rejection |= f->rejections == 0;
    } else if (strcmp(type, ORDO_EV_ORDER_REJECTED) == 0) {
        f->rejections++;
        f->rejection_before_debit |= f->debits == 0;
    } else if (strcmp(type, ORDO_EV_ORDER_APPROVED) == 0) {
        f->approvals++;
        f->approval_before_debit |= f->debits == 0;
    }
}

static const char *saga_broken(const saga_facts_t *f)
{
    if (f->debits > 1)
        return "debited more than once";
    if (f->refunds > 1)
        return "refunded more than once";
    if (f->refund_before_rejection)
        return "refunded without a rejection before";
    if (f->refunds > 0 && f->rejection_before_debit)
        return "refunded after a rejection that did not follow a debit";
    if (f->approvals > 0 && f->approval_before_debit)
        return "approved without a debit";
    return NULL;
}

static void fold_row(const ordo_order_state_t *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s|%lld|%lld|%lld|%lld", s->status, (long long)s->order.amount_cents, (long long)s->version,
             (long long)s->created_at, (long long)s->updated_at);
}

/* Rewrites the order's read-model row and items from its fold, in one transaction. */
static ordo_status rewrite_row(verify_t *v, const ordo_order_state_t *s, ordo_error_t *err)
{
    char amount[24], version[24], created[24], updated[24];
    const char *row[7] = {s->order.order_id, s->order.customer_id, s->order.restaurant_id, s->status,
                          amount, version, created};
    ordo_status st;

    snprintf(amount, sizeof amount, "%lld", (long long)s->order.amount_cents);
    snprintf(version, sizeof version, "%lld", (long long)s->version);
    snprintf(created, sizeof created, "%lld", (long long)s->created_at);
    snprintf(updated, sizeof updated, "%lld", (long long)s->updated_at);
    if ((st = ordo_pg_query_idempotent(v->pg, "BEGIN", 0, NULL, NULL, err)) != ORDO_OK)
        return st;
    const char *one[1] = {s->order.order_id};
    st = ordo_pg_query(v->pg, "DELETE FROM order_items WHERE order_id = $1", 1, one, NULL, err);
    if (st == ORDO_OK)
        st = ordo_pg_query(v->pg, "DELETE FROM orders WHERE order_id = $1", 1, one, NULL, err);
    if (st == ORDO_OK) {
        const char *params[8] = {row[0], row[1], row[2], row[3], row[4], row[5], row[6], updated};
        st = ordo_pg_query(v->pg,
                           "INSERT INTO orders (order_id, customer_id, restaurant_id, status, amount_cents, version,"
                           " created_at, updated_at, applied_at) VALUES ($1, $2, $3, $4, $5::int8, $6::int8, $7::int8,"
                           " $8::int8, (extract(epoch FROM clock_timestamp()) * 1000000)::int8)",
                           8, params, NULL, err);
    }
    for (size_t i = 0; st == ORDO_OK && i < s->order.n_items; i++) {
        char line[24], price[24], qty[12];
        snprintf(line, sizeof line, "%zu", i + 1);
        snprintf(price, sizeof price, "%lld", (long long)s->order.items[i].unit_price_cents);
        snprintf(qty, sizeof qty, "%d", s->order.items[i].quantity);
        const char *params[6] = {s->order.order_id, line, s->order.items[i].code, s->order.items[i].name, price, qty};
        st = ordo_pg_query(v->pg,
                           "INSERT INTO order_items (order_id, line, code, name, unit_price_cents, quantity)"
                           " VALUES ($1, $2::int, $3, $4, $5::int8, $6::int)",
                           6, params, NULL, err);
    }
    ordo_error_t ignored;
    ordo_pg_query(v->pg, st == ORDO_OK ? "COMMIT" : "ROLLBACK", 0, NULL, NULL, st == ORDO_OK ? err : &ignored);
    return st;
}

typedef struct order_checks {
    int orders, read_model, stuck, saga, repaired;
} order_checks_t;

/* The read model's row of @p id among @p rows (order_id, then the row as
 * fold_row writes it), "" when it has none. */
static const char *stored_row(const PGresult *rows, const char *id)
{
    for (int i = 0; i < PQntuples(rows); i++)
        if (strcmp(PQgetvalue(rows, i, 0), id) == 0)
            return PQgetvalue(rows, i, 1);
    return "";
}

/* Folds one order's events (rows [from, to) of @p res), checks it, and
 * compares it with its read-model row (@p rows: the page's rows). */
static void check_order(verify_t *v, const PGresult *res, int from, int to, const PGresult *rows, order_checks_t *c)
{
    const char *id = PQgetvalue(res, from, 0);
    ordo_order_state_t s;
    saga_facts_t facts = {0};
    ordo_error_t err;
    ordo_status st = ORDO_OK;
    char folded[256];
    const char *why, *stored = stored_row(rows, id);

    ordo_order_state_init(&s);
    for (int i = from; i < to && st == ORDO_OK; i++) {
        const char *type = PQgetvalue(res, i, 2), *data = PQgetvalue(res, i, 3);
        st = ordo_order_state_apply(&s, type, data, strlen(data), strtoll(PQgetvalue(res, i, 1), NULL, 10),
                                    strtoll(PQgetvalue(res, i, 4), NULL, 10), &err);
        note_step(&facts, type);
    }
    c->orders++;
    if ((why = saga_broken(&facts)) != NULL) {
        c->saga++;
        problem(v, json_pack("{s:s, s:s, s:s}", "problem", "saga", "order_id", id, "what", why));
    }
    if (st != ORDO_OK) {   /* an order-created that is no order: the services parked it; no row to compare */
        ordo_order_state_free(&s);
        return;
    }
    if (!ordo_order_status_final(s.status) &&
        ordo_wall_us() - s.updated_at > (int64_t)v->cfg->stuck_after_s * 1000000) {
        c->stuck++;
        problem(v, json_pack("{s:s, s:s, s:s, s:I}", "problem", "stuck", "order_id", id, "status", s.status,
                             "age_s", (json_int_t)((ordo_wall_us() - s.updated_at) / 1000000)));
    }
    fold_row(&s, folded, sizeof folded);
    if (strcmp(folded, stored) != 0) {
        json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s}", "problem", "read_model", "order_id", id, "what",
                                stored[0] ? "the read model's row differs from the fold of its events"
                                          : "the read model has no row for it",
                                "read_model", stored, "fold", folded);
        c->read_model++;
        if (v->cfg->repair && rewrite_row(v, &s, &err) == ORDO_OK) {
            json_object_set_new(doc, "repaired", json_string("row rewritten from the fold"));
            c->repaired++;
            v->repaired++;
        } else if (v->cfg->repair) {
            json_object_set_new(doc, "repair_failed", json_string(err.msg));
        }
        problem(v, doc);
    }
    ordo_order_state_free(&s);
}

/* Folds every order (or --sample of them), a page of order ids at a time. */
static void check_orders(verify_t *v)
{
    static const char ids_sql[] =
        "SELECT aggregate_id FROM streams s WHERE aggregate_type = 'order' AND aggregate_id > $1"
        " ORDER BY aggregate_id LIMIT $2::int8";
    static const char sample_sql[] =
        "SELECT aggregate_id FROM streams WHERE aggregate_type = 'order' ORDER BY random() LIMIT $1::int8";
    /* each order's row, as fold_row writes the fold */
    static const char rows_sql[] =
        "SELECT order_id, concat_ws('|', status, amount_cents, version, created_at, updated_at) FROM orders"
        " WHERE order_id = ANY($1::text[])";
    static const char events_sql[] =
        "SELECT aggregate_id, version, event_type, event_data,"
        " (extract(epoch FROM created_at) * 1000000)::int8 FROM events"
        " WHERE aggregate_id = ANY($1::text[]) ORDER BY aggregate_id, version";
    char after[300] = "", limit[24];
    order_checks_t c = {0};
    ordo_error_t err;
    bool more = true;

    snprintf(limit, sizeof limit, "%d", v->cfg->sample > 0 ? v->cfg->sample : ORDERS_PAGE);
    while (more) {
        const char *params[2] = {after, limit}, *sample[1] = {limit};
        PGresult *ids = NULL, *evs = NULL, *rows = NULL;
        ordo_buf_t list = ORDO_BUF_INIT;

        if ((v->cfg->sample > 0 ? ordo_pg_query_idempotent(v->pg, sample_sql, 1, sample, &ids, &err)
                                : ordo_pg_query_idempotent(v->pg, ids_sql, 2, params, &ids, &err)) != ORDO_OK) {
            problem(v, json_pack("{s:s, s:s}", "problem", "read_model", "error", err.msg));
            return;
        }
        ordo_buf_pg_array_begin(&list);
        for (int i = 0; i < PQntuples(ids); i++)
            ordo_buf_pg_array_text(&list, PQgetvalue(ids, i, 0));
        ordo_buf_pg_array_end(&list);
        more = v->cfg->sample == 0 && PQntuples(ids) == ORDERS_PAGE;
        if (PQntuples(ids) > 0)
            snprintf(after, sizeof after, "%s", PQgetvalue(ids, PQntuples(ids) - 1, 0));
        const char *eparams[1] = {ordo_buf_str(&list)};
        if (PQntuples(ids) > 0 && ordo_pg_query_idempotent(v->pg, events_sql, 1, eparams, &evs, &err) == ORDO_OK &&
            ordo_pg_query_idempotent(v->pg, rows_sql, 1, eparams, &rows, &err) == ORDO_OK) {
            for (int from = 0, i = 1; from < PQntuples(evs); i++)
                if (i == PQntuples(evs) || strcmp(PQgetvalue(evs, i, 0), PQgetvalue(evs, from, 0)) != 0) {
                    check_order(v, evs, from, i, rows, &c);
                    from = i;
                }
        } else if (PQntuples(ids) > 0) {
            problem(v, json_pack("{s:s, s:s}", "problem", "read_model", "error", err.msg));
            more = false;
        }
        ordo_buf_free(&list);
        PQclear(ids);
        PQclear(evs);
        PQclear(rows);
    }
    verdict("read_model", c.read_model, json_pack("{s:i, s:i}", "orders", c.orders, "repaired", c.repaired));
    verdict("stuck", c.stuck, json_pack("{s:i}", "older_than_s", v->cfg->stuck_after_s));
    verdict("saga", c.saga, NULL);
}

/* ------------------------------------------------------ outbox, consumers */

static void check_outbox(verify_t *v)
{
    PGresult *res = NULL;
    ordo_error_t err;
    long long n;

    if (ordo_pg_query_idempotent(v->pg, "SELECT count(*) FROM outbox", 0, NULL, &res, &err) != ORDO_OK) {
        problem(v, json_pack("{s:s, s:s}", "problem", "outbox", "error", err.msg));
        return;
    }
    n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    if (n > v->cfg->outbox_max)
        problem(v, json_pack("{s:s, s:I, s:i}", "problem", "outbox", "waiting", (json_int_t)n, "max",
                             v->cfg->outbox_max));
    verdict("outbox", n > v->cfg->outbox_max, json_pack("{s:I}", "waiting", (json_int_t)n));
}

static void check_consumers(verify_t *v)
{
    ordo_bus_lag_t *lags = NULL;
    ordo_error_t err;
    size_t n = 0;
    int bad = 0;

    if (ordo_bus_lags(v->bus, &lags, &n, &err) != ORDO_OK) {
        problem(v, json_pack("{s:s, s:s}", "problem", "consumers", "error", err.msg));
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (lags[i].parked > 0) {
            bad++;
            problem(v, json_pack("{s:s, s:s, s:I, s:s}", "problem", "consumers", "durable", lags[i].name, "parked",
                                 (json_int_t)lags[i].parked, "what",
                                 "messages parked: ordoctl parked list shows why, ordoctl parked replay sends them again"));
        }
    verdict("consumers", bad, json_pack("{s:I}", "durables", (json_int_t)n));
    free(lags);
}

int ctl_verify(const ctl_config_t *cfg)
{
    ordo_bus_config_t bcfg = {.url = cfg->nats_url, .name = "ordoctl verify", .connect_timeout_ms = 2000,
                              .auth = &cfg->nats};
    verify_t v = {.cfg = cfg};
    ordo_error_t err;

    if (cfg->database_url[0] == '\0') {
        ordo_error_set(&err, ORDO_INVALID, "verify needs --database-url (or DATABASE_URL): the store's and the read"
                                           " model's database");
        return fail(&err);
    }
    if (ordo_pg_open(cfg->database_url, "ordoctl verify", "SET default_transaction_read_only = off", &v.pg, &err) !=
            ORDO_OK ||
        ordo_bus_connect(&bcfg, &v.bus, &err) != ORDO_OK) {
        ordo_pg_destroy(v.pg);
        return fail(&err);
    }
    check_bus(&v);
    check_orders(&v);
    check_outbox(&v);
    check_consumers(&v);
    print_json(json_pack("{s:s, s:b, s:i, s:i}", "verify", v.problems == 0 ? "consistent" : "problems found", "ok",
                         v.problems == 0, "problems", v.problems, "repaired", v.repaired));
    ordo_grpc_client_destroy(v.store);
    ordo_bus_destroy(v.bus);
    ordo_pg_destroy(v.pg);
    return v.problems == 0 ? 0 : 1;
}
