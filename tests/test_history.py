#!/usr/bin/python3
"""An order's history over HTTP (docs/orderflow.md, "HTTP API"): GET /api/orders/{id}/events lists its events from the store, and
GET /api/orders/{id}?at=POSITION|TIME folds them as the read model does, with
the order's own authorization. The whole system secured (HTTPS, API keys,
TLS between the services), real processes over loopback."""
import datetime
import uuid

from harness import FlowCluster, run_tests


def events(c, oid, headers=None):
    return c.http("GET", f"/api/orders/{oid}/events", headers=headers)


def as_of(c, oid, at, headers=None):
    return c.http("GET", f"/api/orders/{oid}?at={at}", headers=headers)


def place(c, customer, code, price):
    st, _, doc = c.order(customer, code, price, 1)
    assert st == 201, (st, doc)
    return c.final_status(doc["order_id"])["order_id"]


def test_audit_trail(c, t):
    oid = place(c, "c-1", "SOLD-OUT", 5)
    st, _, doc = events(c, oid)
    t.eq(st, 200, "GET /api/orders/{id}/events answers 200")
    evs = doc["events"]
    t.eq([e["type"] for e in evs], ["order-created", "order-payment-debited", "order-rejected",
                                    "order-payment-refunded"], "the refunded order's events, in order")
    t.eq([e["version"] for e in evs], [1, 2, 3, 4], "versions 1..n")
    t.ok(all(a["position"] < b["position"] for a, b in zip(evs, evs[1:])), "positions increasing")
    t.ok(all(e["causation_id"] == prev["event_id"] for prev, e in zip(evs, evs[1:])),
         "each follow-up names the event that caused it (causation_id)")
    t.ok(all(e["correlation_id"] == oid for e in evs[1:]), "and the order it belongs to (correlation_id)")
    first = evs[0]
    when = datetime.datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    t.eq(int(when.timestamp() * 1_000_000), first["created_at"], "time is created_at in RFC 3339 (UTC, µs)")
    t.ok(first["data"]["customer_id"] == "c-1" and first["data"]["order_items"][0]["code"] == "SOLD-OUT",
         "data is the event's document, as JSON")


def test_time_travel(c, t):
    oid = place(c, "c-1", "SOLD-OUT", 5)
    evs = events(c, oid)[2]["events"]
    want = ["Pending", "Paid", "Rejected", "Refunded"]
    for e, status in zip(evs, want):
        st, _, doc = as_of(c, oid, e["position"])
        t.ok(st == 200 and (doc["status"], doc["version"], doc["as_of_position"], doc["updated_at"]) ==
             (status, e["version"], e["position"], e["created_at"]),
             f"?at={e['position']}: {status} at version {e['version']} ({st} {doc})")
    # the fold at the last event is the read model, field by field
    _, _, now = c.http("GET", f"/api/orders/{oid}")
    _, _, then = as_of(c, oid, evs[-1]["position"] + 1000)
    then.pop("as_of_position")
    t.eq(then, now, "the fold of every event equals the read model's order")
    # by time: RFC 3339, with any offset
    st, _, doc = as_of(c, oid, evs[1]["time"])
    t.ok(st == 200 and doc["version"] == 2, f"?at=<time of the debit>: version 2 ({doc.get('status')})")
    t2 = datetime.datetime.fromisoformat(evs[1]["time"].replace("Z", "+00:00")).astimezone(
        datetime.timezone(datetime.timedelta(hours=2)))
    st, _, doc = as_of(c, oid, t2.isoformat().replace("+", "%2B"))
    t.ok(st == 200 and doc["version"] == 2, f"the same time written at +02:00 ({t2.isoformat()})")
    st, _, doc = as_of(c, oid, t2.isoformat())
    t.ok(st == 200 and doc["version"] == 2, "and with its '+' left unencoded (a query string makes it a space)")
    st, _, doc = as_of(c, oid, "2001-01-01T00:00:00Z")
    t.eq(st, 404, f"before the order existed: 404 ({doc})")
    for bad in ("yesterday", "0", "-5", "2026-13-01T00:00:00Z", "2026-12-04T10:00:00", "12abc"):
        st, _, doc = as_of(c, oid, bad)
        t.ok(st == 400 and "at must be" in doc["error"]["message"], f"?at={bad}: 400 with what at must be")


def test_authorization(c, t):
    customer = {"Authorization": "Bearer " + open(c.cert_path("customer.key")).read().strip()}
    mine = place(c, "c-key", "PIZZA", 5)
    other = place(c, "c-other", "PIZZA", 5)
    st, _, doc = events(c, mine, customer)
    t.ok(st == 200 and len(doc["events"]) == 3, "a customer reads its own order's events")
    st, _, doc = as_of(c, mine, 1, customer)
    t.eq(st, 404, "and ?at=1 (before its order) is 404")
    st, _, _ = events(c, other, customer)
    t.eq(st, 404, "another customer's order's events do not exist for it (404)")
    st, _, _ = as_of(c, other, 10 ** 9, customer)
    t.eq(st, 404, "nor that order as it was")
    st, _, _ = events(c, mine, {"Authorization": None})
    t.eq(st, 401, "no key: 401")


def test_bad_requests(c, t):
    st, _, doc = events(c, "not-a-uuid")
    t.eq(st, 400, f"a malformed id: 400 ({doc['error']['message']})")
    st, _, doc = events(c, str(uuid.uuid4()))
    t.eq(st, 404, "an order that does not exist: 404")
    st, _, doc = c.http("POST", f"/api/orders/{uuid.uuid4()}/events", {})
    t.eq(st, 405, "POST on the events: 405")
    st, _, doc = c.http("GET", f"/api/orders/{uuid.uuid4()}/nothing")
    t.eq(st, 404, "an unknown route under an order: 404")
    st, _, doc = c.http("GET", f"/api/orders/{uuid.uuid4()}x/events")
    t.eq(st, 400, "an id one character too long: 400")


if __name__ == "__main__":
    run_tests([test_audit_trail, test_time_travel, test_authorization, test_bad_requests],
              lambda: FlowCluster(tls=True))
