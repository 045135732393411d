#!/usr/bin/python3
"""Nothing stays stuck (docs/reliability.md): what JetStream acknowledged
and then lost in a crash is published again by the relay, and an order left
without a final status is re-driven by the event store's reconciler, both
without a hand on them. Real processes: PostgreSQL, nats-server, every
service, over loopback."""
import glob
import json
import os
import signal
import time
import uuid

from harness import ORDOCTL, FlowCluster, read_from, run, run_tests, wait_for

FINAL = ("Approved", "PaymentFailed", "Refunded")
# the reconciler looks every half second at orders whose last event is 3 s old
RECONCILE = {"reconcile_after_s": 3, "reconcile_every_ms": 500}


def _settled(c):
    rows = [json.loads(x) for x in run([ORDOCTL, "consumers", "--nats-url", c.nats_url]).stdout.splitlines()]
    return all(r["pending"] == 0 and r["ack_pending"] == 0 for r in rows)


def _status(c, order_id):
    st, _, doc = c.http("GET", f"/api/orders/{order_id}")
    return doc.get("status") if st == 200 else None


def _crash_nats_losing_tail(c, keep_fraction):
    """SIGKILL nats-server, cut the tail of the EVENTS stream's last message block
    (what an OS crash before JetStream synced its files can do) and start it again
    on the same port and storage."""
    c.nats_proc.send_signal(signal.SIGKILL)
    c.nats_proc.wait(timeout=10)
    c.nats_proc = None
    blocks = sorted(glob.glob(os.path.join(c.dir, "js", "jetstream", "$G", "streams", "EVENTS", "msgs", "*.blk")),
                    key=lambda p: int(os.path.basename(p).split(".")[0]))
    last = blocks[-1]
    size = os.path.getsize(last)
    os.truncate(last, int(size * keep_fraction))
    for idx in glob.glob(os.path.join(os.path.dirname(last), "*.idx")):
        os.remove(idx)   # the server rebuilds its index from what is left
    c.start_nats()
    return size - int(size * keep_fraction)


def test_nats_crash_loses_acknowledged_events(c, t):
    """Orders are accepted and their events acknowledged by JetStream while the
    services are paused; nats-server then dies (SIGKILL) and loses the newest part
    of its storage. Once it is back, every order reaches its final status with no
    hand on it: the relay sees the stream behind what it had acknowledged and
    publishes the missing range again."""
    wait_for(lambda: _settled(c), 60, "every durable to settle first")
    es_seen = os.path.getsize(os.path.join(c.dir, "eventstore.log"))
    held = [svc.proc for name, svc in c.services.items() if name != "orderapi"]
    for p in held:
        p.send_signal(signal.SIGSTOP)
    try:
        ids = []
        for i in range(12):
            code, price = [("PIZZA", 5), ("SOLD-OUT", 5), ("CAVIAR", 600)][i % 3]
            st, _, doc = c.order("c-crash", code, price, 1)
            if st != 201:
                t.eq(st, 201, f"order {i} accepted")
                continue
            ids.append(doc["order_id"])
        wait_for(lambda: c.stats().outbox_backlog == 0, 20, "their events to be acknowledged by JetStream")
        before = c.bus_dump()
        cut = _crash_nats_losing_tail(c, 0.5)
        after = c.bus_dump()
        t.ok(len(after) < len(before),
             f"the crash lost acknowledged messages ({len(before)} before, {len(after)} after; {cut} bytes cut)")
    finally:
        for p in held:
            p.send_signal(signal.SIGCONT)
    finals = [c.final_status(i, timeout=60)["status"] for i in ids]
    t.ok(all(f in FINAL for f in finals), f"every order reached its final status ({finals})")
    log = read_from(os.path.join(c.dir, "eventstore.log"), es_seen)
    t.ok("JetStream lost events it had acknowledged: publishing them again" in log,
         "the relay noticed the loss and published the range again (logged)")
    t.ok(c.stats().lost_republished > 0, f"and counted it (lost_republished {c.stats().lost_republished})")


def test_reconciler_redrives_a_stuck_order(c, t):
    """An order's message is gone from the stream before paymentsvc read it
    (paymentsvc was down; the message was dropped, as a stream's limits or an
    operator can drop it): nothing would ever debit the order. The reconciler
    finds it without a final status after 3 s and re-drives it: the saga
    finishes, logged and counted."""
    wait_for(lambda: _settled(c), 60, "every durable to settle first")
    before = c.stats().redriven
    c.services["paymentsvc"].stop()
    st, _, doc = c.order("c-stuck", "PIZZA", 5, 1)
    t.eq(st, 201, "an order is accepted while paymentsvc is down")
    oid = doc["order_id"]
    wait_for(lambda: _status(c, oid) == "Pending", 20, "the read model to show it")
    seqs = [m["seq"] for m in c.bus_dump() if m["headers"].get("Ordo-Aggregate-Id") == oid]
    for seq in seqs:
        reply = json.loads(c.nats_request("$JS.API.STREAM.MSG.DELETE.EVENTS", json.dumps({"seq": seq}).encode()))
        t.ok(reply.get("success"), f"its message {seq} is gone from the stream")
    c.start_payment()
    time.sleep(2)
    t.eq(_status(c, oid), "Pending", "the order is stuck: nothing will debit it")
    done = c.final_status(oid, timeout=30)
    t.eq(done["status"], "Approved", "the reconciler re-drove it and the saga finished")
    t.ok(c.stats().redriven > before, f"counted (redriven {c.stats().redriven})")
    log = open(os.path.join(c.dir, "eventstore.log")).read()
    t.ok(any("re-driving a stuck order" in line and oid in line for line in log.splitlines()), "and logged")


def _redrives(c, aggregate_id):
    rows = c.sql("SELECT redrives FROM redrives WHERE aggregate_id = %s", aggregate_id)
    return rows[0][0] if rows else 0


def _redrive_lines(text, aggregate_id):
    return [line for line in text.splitlines() if "re-driving a stuck order" in line and aggregate_id in line]


def test_reconciler_does_not_start_over_after_a_restart(c, t):
    """A poisoned order (an order-created that is no order) never ends: the
    reconciler re-drives it three times, then leaves it to an operator. The
    chaos soak found every restart of the event store (and every new relay
    leader) starting over: three more re-drives each time, three more
    parked copies. The re-drives are recorded in the database: after a
    restart the new process re-walks the whole log and re-drives nothing."""
    bad = str(uuid.uuid4())
    c.append(c.event(bad, "order-created", {"not": "an order"}), expected=0)
    log_path = os.path.join(c.dir, "eventstore.log")
    wait_for(lambda: len(_redrive_lines(open(log_path).read(), bad)) >= 3, 60, "three re-drives of the poisoned order")
    t.eq(len(_redrive_lines(open(log_path).read(), bad)), 3, "re-driven three times (logged)")
    port, offset = c.es_port, os.path.getsize(log_path)
    c.es_proc.send_signal(signal.SIGKILL)
    c.es_proc.wait(timeout=10)
    c.start_es(port=port)
    t.ok(wait_for(lambda: "relay holds the lease" in read_from(log_path, offset), 60, "the lease"),
         "the restarted store leads the relay (once the killed one's lease expired)")
    # it walks the whole log within a few rounds, and would re-drive the order at once
    time.sleep(RECONCILE["reconcile_after_s"] * 3)
    t.eq(_redrive_lines(read_from(log_path, offset), bad), [], "the restarted store re-drove it no more")
    t.ok(_redrives(c, bad) >= 3, f"its record stays ({_redrives(c, bad)} re-drives)")


if __name__ == "__main__":
    run_tests([test_nats_crash_loses_acknowledged_events, test_reconciler_redrives_a_stuck_order,
               test_reconciler_does_not_start_over_after_a_restart],
              lambda: FlowCluster(**RECONCILE))
