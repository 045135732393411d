#!/usr/bin/python3
"""Trace context end to end (docs/operations.md, "Following one order"): a
W3C traceparent sent with POST /api/orders is continued by the order-created
event and by every follow-up (the same trace id, a span of its own, the
cause named by causation_id), stored in each event's metadata with the
service that appended it, carried in the bus headers and in log lines about
the order; `ordoctl trace ORDER_ID` prints the causal chain with its times.
Real processes over loopback."""
import json
import re
import subprocess
import uuid

from harness import ORDOCTL, FlowCluster, run_tests, wait_for

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def events_of(c, oid):
    st, _, doc = c.http("GET", f"/api/orders/{oid}/events")
    assert st == 200, (st, doc)
    return doc["events"]


def test_a_trace_through_the_saga(c, t):
    st, _, doc = c.http("POST", "/api/orders", {"customer_id": "c-t", "restaurant_id": "r-1", "order_items": [
        {"code": "SOLD-OUT", "name": "Gone", "unit_price": 5, "quantity": 1}]},
        {"traceparent": PARENT, "tracestate": "ordo=t1"})
    t.eq(st, 201, "an order with a traceparent is accepted")
    oid = doc["order_id"]
    c.final_status(oid)
    evs = events_of(c, oid)
    spans = [TP.match(e["traceparent"] or "") for e in evs]
    t.ok(all(spans), f"every event carries a well-formed traceparent ({[e['traceparent'] for e in evs]})")
    t.ok(all(m.group(1) == TRACE_ID for m in spans if m), "all in the client's trace")
    ids = [m.group(2) for m in spans if m]
    t.ok(len(set(ids)) == len(ids) and "00f067aa0ba902b7" not in ids, "each event is a span of its own")
    t.eq([e["service"] for e in evs], ["orderapi", "paymentsvc", "restaurantsvc", "paymentsvc"],
         "each event names the service that appended it")
    bus = {m["headers"].get("Ordo-Event-Id") or m["headers"].get("Nats-Msg-Id"): m["headers"] for m in c.bus_dump()
           if m["headers"].get("Ordo-Aggregate-Id") == oid}
    t.ok(all(bus.get(e["event_id"], {}).get("traceparent") == e["traceparent"] for e in evs),
         "the bus headers carry each event's traceparent")
    t.eq(bus.get(evs[0]["event_id"], {}).get("tracestate"), "ordo=t1", "and the client's tracestate")
    r = subprocess.run([ORDOCTL, "trace", oid, "--addr", c.addr], capture_output=True, text=True, timeout=30)
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    chain = [(x["type"], x["caused_by"]) for x in lines[:-1]]
    t.eq(chain, [("order-created", None), ("order-payment-debited", "order-created"),
                 ("order-rejected", "order-payment-debited"), ("order-payment-refunded", "order-rejected")],
         "ordoctl trace prints the causal chain")
    t.ok(all(x["since_cause_ms"] >= 0 for x in lines[1:-1]) and lines[-1]["final"] == "order-payment-refunded"
         and lines[-1]["total_ms"] >= sum(x["since_cause_ms"] for x in lines[1:-1]) - 0.01
         and lines[-1]["trace_id"] == TRACE_ID,
         f"with the time since each cause and to the final status ({lines[-1]})")


def test_a_trace_is_started_when_none_is_sent(c, t):
    st, _, doc = c.order("c-t", "PIZZA", 5, 1)
    oid = doc["order_id"]
    c.final_status(oid)
    found = {TP.match(e["traceparent"]).group(1) for e in events_of(c, oid)}
    t.ok(len(found) == 1 and TRACE_ID not in found, f"no traceparent: orderapi starts one trace for the order ({found})")
    st, _, doc = c.http("POST", "/api/orders", {"customer_id": "c-t", "restaurant_id": "r-1", "order_items": [
        {"code": "PIZZA", "name": "Pizza", "unit_price": 5, "quantity": 1}]}, {"traceparent": "00-xyz-01"})
    t.eq(st, 201, "a malformed traceparent is ignored, not refused")
    c.final_status(doc["order_id"])
    first = events_of(c, doc["order_id"])[0]["traceparent"]
    t.ok(TP.match(first) is not None and "xyz" not in first, f"and a new trace started ({first})")


def test_log_lines_carry_the_trace_id(c, t):
    bad = str(uuid.uuid4())
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = subprocess.run([ORDOCTL, "append", "--addr", c.addr, "--aggregate-id", bad, "--aggregate-type", "order",
                        "--type", "order-created", "--data", '{"not":"an order"}', "--expected", "0",
                        "--metadata", f"traceparent={tp}"], capture_output=True, text=True)
    t.eq(r.returncode, 0, "a poisoned order-created with a traceparent")
    log = lambda: open(c.services["paymentsvc"].log_path).read()
    line = wait_for(lambda: next((x for x in log().splitlines() if "message parked" in x and bad in x), None), 30,
                    "paymentsvc to park it")
    t.ok("trace_id=0af7651916cd43dd8448eb211c80319c" in line, f"the log line about it names its trace ({line[:200]})")


def test_grpc_call_metadata(c, t):
    """Any gRPC client (here grpcio) may send the trace as call metadata:
    the store keeps it with each event that carries none of its own."""
    tp = "00-11111111111111111111111111111111-2222222222222222-01"
    own = "00-33333333333333333333333333333333-4444444444444444-01"
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    req = c.pb.CreateEventRequest(event=c.event(a, "thing-happened"))
    c.store.CreateEvent(req, timeout=10, metadata=[("traceparent", tp)])
    ev = c.event(b, "thing-happened")
    ev.metadata["traceparent"] = own
    c.store.CreateEvent(c.pb.CreateEventRequest(event=ev), timeout=10, metadata=[("traceparent", tp)])
    got = {e.aggregate_id: dict(e.metadata) for e in c.store.GetEvents(c.pb.GetEventsRequest(aggregate_type="order",
                                                                                            limit=1000)).events
           if e.aggregate_id in (a, b)}
    t.eq(got[a].get("traceparent"), tp, "the call's traceparent is stored with an event that has none")
    t.eq(got[b].get("traceparent"), own, "an event's own traceparent wins")
    c.store.CreateEvent(c.pb.CreateEventRequest(event=c.event(str(uuid.uuid4()))), timeout=10,
                        metadata=[("traceparent", "not-a-trace")])
    t.ok(True, "a malformed one in the call is ignored (the append succeeds)")


if __name__ == "__main__":
    run_tests([test_a_trace_through_the_saga, test_a_trace_is_started_when_none_is_sent,
               test_log_lines_carry_the_trace_id, test_grpc_call_metadata], FlowCluster)
