#!/usr/bin/python3
"""An event JetStream refuses for good (here: over the server's max_payload) is
logged, counted and set aside in outbox_rejected; the relay goes on with the
rest and an operator can re-queue it with Republish. A refusal that passes
(JetStream's storage full) sets nothing aside: the events wait in order."""
import time

from harness import Cluster, run_tests, wait_for

NATS_CONFIG = "max_payload: 4096\njetstream {{ max_file_store: {} }}\n"


def test_oversized_event_is_set_aside(c, t):
    small1 = c.append(c.event("sa-1", "small", {"n": 1}))
    big = c.append(c.event("sa-2", "big", {"blob": "x" * 8000}))
    small2 = c.append(c.event("sa-3", "small", {"n": 2}))
    wait_for(lambda: c.stats().outbox_backlog == 0, 15, "the relay to get past the refused event")
    positions = [int(m["headers"]["Ordo-Position"]) for m in c.bus_dump()]
    t.eq(positions, [small1.position, small2.position], "the events around it are published")
    rows = c.sql("SELECT position, error FROM outbox_rejected")
    t.eq([r[0] for r in rows], [big.position], "the refused event is recorded in outbox_rejected")
    t.ok(rows and "payload" in rows[0][1].lower(), f"with the reason ({rows[0][1] if rows else None})")
    t.eq(c.stats().set_aside, 1, "and counted")
    t.ok("event set aside" in c.log_tail(), "and logged")
    t.ok(c.append(c.event("sa-4")).is_success, "the store keeps accepting appends")


def test_storage_full_waits(c, t):
    """JetStream's storage fills up: it answers "insufficient resources", which
    passes once an operator makes room. Nothing is set aside (that would
    deliver later events before these); the events wait in the outbox, the
    relay warns, and once there is room they are published in order."""
    before = c.stats().set_aside
    positions = [c.append(c.event(f"full-{i}", "filler", {"blob": "x" * 1500})).position for i in range(60)]
    wait_for(lambda: c.stats().publish_errors > 0, 15, "JetStream to refuse for lack of storage")
    time.sleep(1)
    s = c.stats()
    t.ok(s.outbox_backlog > 0, f"events wait in the outbox ({s.outbox_backlog} rows)")
    t.eq(s.set_aside, before, "nothing is set aside for a full storage")
    t.eq(c.sql("SELECT count(*) FROM outbox_rejected WHERE position = ANY(%s)", positions)[0][0], 0,
         "outbox_rejected holds none of them")
    log = c.log_tail(1000000)
    t.ok("relay cannot publish" in log and "insufficient" in log, "the relay warns, with JetStream's reason")
    t.eq(log.count("relay cannot publish"), 1, "once, not for every try")
    c.stop_nats()
    c.nats_config = NATS_CONFIG.format("64MB")
    c.start_nats()
    wait_for(lambda: c.stats().outbox_backlog == 0, 30, "the relay to publish the waiting events once there is room")
    published = [int(m["headers"]["Ordo-Position"]) for m in c.bus_dump()]
    t.eq([p for p in published if p in set(positions)], positions, "all 60 are published, in position order")
    t.ok("relay publishing again" in c.log_tail(1000000), "and the relay says it is publishing again")


if __name__ == "__main__":
    run_tests([test_oversized_event_is_set_aside, test_storage_full_waits],
              lambda: Cluster(nats_config=NATS_CONFIG.format("64KB")))
