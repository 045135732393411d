#!/usr/bin/python3
"""ordoctl verify (docs/operations.md): on a healthy system it says
consistent and exits 0; each invariant broken on purpose — a read-model row
deleted, a message dropped from the EVENTS stream, a second debit appended —
is named, with the order or positions, and exit status 1; --repair fixes
what can be fixed safely (the row rewritten from the fold, the message
published again) and the next verify is clean. Real processes: PostgreSQL,
nats-server, every service, over loopback."""
import json
import subprocess
import time

from harness import ORDOCTL, FlowCluster, run_tests, wait_for

FINAL = ("Approved", "PaymentFailed", "Refunded")


def verify(c, *extra):
    r = subprocess.run([ORDOCTL, "verify", "--database-url", c.database_url, "--addr", c.addr, "--nats-url",
                        c.nats_url] + list(extra), capture_output=True, text=True, timeout=120)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    return r.returncode, lines


def problems(lines, check):
    return [x for x in lines if x.get("problem") == check]


def place_all_paths(c):
    ids = []
    for code, price in (("PIZZA", 5), ("CAVIAR", 600), ("SOLD-OUT", 5)):
        st, _, doc = c.order("c-v", code, price, 1)
        assert st == 201, (st, doc)
        ids.append(doc["order_id"])
    for oid in ids:
        c.final_status(oid)
    return ids


def settled(c):
    rows = [json.loads(x) for x in subprocess.run([ORDOCTL, "consumers", "--nats-url", c.nats_url],
                                                  capture_output=True, text=True).stdout.splitlines()]
    return all(r["pending"] == 0 and r["ack_pending"] == 0 for r in rows) and \
        c.sql("SELECT count(*) FROM outbox")[0][0] == 0


def test_consistent(c, t):
    place_all_paths(c)
    wait_for(lambda: settled(c), 30, "the bus and the outbox to settle")
    rc, lines = verify(c)
    checks = {x["check"]: x["ok"] for x in lines if "check" in x}
    t.eq(set(checks), {"bus", "read_model", "stuck", "saga", "outbox", "consumers"}, "every check ran")
    t.ok(rc == 0 and all(checks.values()) and lines[-1]["verify"] == "consistent",
         f"a healthy system is consistent, exit 0 ({lines[-1]})")
    rc, lines = verify(c, "--sample", "2")
    orders = [x for x in lines if x.get("check") == "read_model"][0]["orders"]
    t.ok(rc == 0 and orders == 2, f"--sample 2 folds two orders ({orders})")


def test_read_model_row_deleted(c, t):
    oid = place_all_paths(c)[0]
    c.sql("DELETE FROM order_items WHERE order_id = %s", oid)
    c.sql("DELETE FROM orders WHERE order_id = %s", oid)
    rc, lines = verify(c)
    found = problems(lines, "read_model")
    t.ok(rc == 1 and [p["order_id"] for p in found] == [oid] and "no row" in found[0]["what"],
         f"verify names the order whose row is gone, exit 1 ({found})")
    rc, lines = verify(c, "--repair")
    t.ok(problems(lines, "read_model") and problems(lines, "read_model")[0].get("repaired"),
         "--repair rewrites it from the fold and says so")
    rc, lines = verify(c)
    t.eq(rc, 0, "and the next verify is clean")
    st, _, doc = c.http("GET", f"/api/orders/{oid}")
    t.ok(st == 200 and doc["status"] == "Approved" and doc["order_items"][0]["code"] == "PIZZA",
         "the order reads back over HTTP as before")


def test_message_dropped_from_the_stream(c, t):
    oid = place_all_paths(c)[0]
    wait_for(lambda: settled(c), 30, "the bus to settle")
    msgs = [m for m in c.bus_dump() if m["headers"].get("Ordo-Aggregate-Id") == oid
            and m["headers"].get("Ordo-Event-Type") == "order-approved"]
    position = int(msgs[0]["headers"]["Ordo-Position"])
    reply = json.loads(c.nats_request("$JS.API.STREAM.MSG.DELETE.EVENTS", json.dumps({"seq": msgs[0]["seq"]}).encode()))
    t.ok(reply.get("success"), f"the order's approval (position {position}) is gone from the stream")
    rc, lines = verify(c)
    found = problems(lines, "bus")
    t.ok(rc == 1 and [(p["from"], p["to"]) for p in found] == [(position, position)],
         f"verify names the missing position, exit 1 ({found})")
    rc, lines = verify(c, "--repair")
    found = problems(lines, "bus")
    t.ok(found and found[0].get("repaired") == "published again: 1",
         f"--repair publishes it again (within JetStream's duplicate window: a fresh message id) ({found})")
    rc, lines = verify(c)
    t.eq(rc, 0, "and the next verify finds it on the bus")


def test_second_debit(c, t):
    oid = place_all_paths(c)[0]
    version = c.sql("SELECT max(version) FROM events WHERE aggregate_id = %s", oid)[0][0]
    r = subprocess.run([ORDOCTL, "append", "--addr", c.addr, "--aggregate-id", oid, "--aggregate-type", "order",
                        "--type", "order-payment-debited", "--data", '{"order_id":"%s"}' % oid,
                        "--expected", str(version)], capture_output=True, text=True)
    t.eq(r.returncode, 0, "a second debit appended behind the saga's back")
    time.sleep(1)
    rc, lines = verify(c)
    found = [p for p in problems(lines, "saga") if p["order_id"] == oid]
    t.ok(rc == 1 and found and found[0]["what"] == "debited more than once",
         f"verify names the order debited twice, exit 1 ({found})")


if __name__ == "__main__":
    run_tests([test_consistent, test_read_model_row_deleted, test_message_dropped_from_the_stream,
               test_second_debit], FlowCluster)
