#!/usr/bin/python3
"""An event JetStream refuses for good (here: over the server's max_payload) is
logged, counted and set aside in outbox_rejected; the relay goes on with the
rest and an operator can re-queue it with Republish."""
from harness import Cluster, run_tests, wait_for


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


if __name__ == "__main__":
    run_tests([test_oversized_event_is_set_aside], lambda: Cluster(nats_config="max_payload: 4096\n"))
