#!/usr/bin/python3
"""The order flow end to end: HTTP orders through the saga (payment,
restaurant, refund) into the read model, over real processes."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

from harness import BUILD, FlowCluster, read_from, run_tests, wait_for, run, ORDOCTL


# orderquery's shared durable, and one per event type the saga services handle
DURABLES = ["orderquery", "paymentsvc-order-created", "paymentsvc-order-rejected", "restaurantsvc"]


def events_of(c, order_id):
    return [r[0] for r in c.sql("SELECT event_type FROM events WHERE aggregate_id = %s ORDER BY version", order_id)]


def test_saga_paths(c, t):
    st, _, ok = c.order("c-ok", "PIZZA", 12.5, 2)
    t.eq(st, 201, "POST /api/orders answers 201")
    t.eq((ok["status"], ok["amount"]), ("Pending", 25.0), "Pending, amount computed from the items")
    _, _, fail = c.order("c-rich", "CAVIAR", 400, 2)
    _, _, rej = c.order("c-x", "SOLD-OUT", 9.99, 1)
    t.eq(c.final_status(ok["order_id"])["status"], "Approved", "paid and approved")
    t.eq(c.final_status(fail["order_id"])["status"], "PaymentFailed", "over the payment limit: PaymentFailed")
    t.eq(c.final_status(rej["order_id"])["status"], "Refunded", "unavailable item: rejected, then refunded")
    t.eq(events_of(c, rej["order_id"]),
         ["order-created", "order-payment-debited", "order-rejected", "order-payment-refunded"],
         "the compensation path's events, in order")
    t.eq(events_of(c, fail["order_id"]), ["order-created", "order-payment-failed"], "a failed payment ends the saga")
    _, _, doc = c.http("GET", f"/api/orders/{ok['order_id']}")
    t.eq((doc["version"], doc["order_items"][0]["code"], doc["order_items"][0]["quantity"]), (3, "PIZZA", 2),
         "GET /api/orders/{id} shows version and items")
    st, _, page = c.http("GET", "/api/orders?customer_id=c-ok")
    t.ok(st == 200 and [o["order_id"] for o in page["orders"]] == [ok["order_id"]], "list by customer")
    st, _, page = c.http("GET", "/api/orders?status=Refunded")
    t.ok(st == 200 and rej["order_id"] in [o["order_id"] for o in page["orders"]], "list by status")


def test_routine_steps_are_not_logged(c, t):
    """At the default level (info) an order's routine steps leave no line in
    the services' logs (the event store keeps every step; at a thousand
    orders a second one line per step was ~4,000 lines/s): its id appears in
    none of them once it is final."""
    _, _, o = c.order("c-quiet", "SOLD-OUT", 3, 1)   # every service takes a step: created, debited, rejected, refunded
    t.eq(c.final_status(o["order_id"])["status"], "Refunded", "the order went through every service")
    wait_for(lambda: _all_handled(c), 30, "every durable to settle")
    named = [n for n, svc in c.services.items() if o["order_id"] in open(svc.log_path).read()]
    t.eq(named, [], "no service's log names the order")


def test_idempotency_key(c, t):
    s1, h1, a = c.order("c-idem", "PIZZA", 10, 1, key="key-123")
    s2, h2, b = c.order("c-idem", "PIZZA", 10, 1, key="key-123")
    t.eq((s1, s2), (201, 201), "a retried POST with the same Idempotency-Key answers 201 again")
    t.eq(a["order_id"], b["order_id"], "with the same order")
    t.eq(h2.get("Idempotent-Replayed"), "true", "marked as replayed")
    t.eq(events_of(c, a["order_id"]).count("order-created"), 1, "and one order-created event")
    s3, _, err = c.order("c-idem", "PIZZA", 99, 1, key="key-123")
    t.eq((s3, err["error"]["code"]), (409, "conflict"), "the same key for a different order is refused")
    s4, _, other = c.order("c-other", "PIZZA", 10, 1, key="key-123")
    t.ok(s4 == 201 and other["order_id"] != a["order_id"], "keys are per customer")


def _lags(c):
    return {l.name: l for l in c.stats().consumers}


def test_consumer_lag_in_stats(c, t):
    wait_for(lambda: _all_handled(c), 30, "every durable to catch up")
    lags = _lags(c)
    t.eq(sorted(lags), DURABLES, "GetStats lists the durable consumers")
    t.ok(all(l.pending == 0 and l.ack_pending == 0 and l.delivered > 0 for l in lags.values()),
         "each caught up: nothing pending, nothing unacknowledged")
    c.services["paymentsvc"].stop()
    st, _, doc = c.order("c-lag", "PIZZA", 3, 1)
    wait_for(lambda: _lags(c)["paymentsvc-order-created"].pending == 1, 10, "paymentsvc's lag to show")
    t.ok(True, "with paymentsvc stopped, its lag shows the order waiting (pending 1)")
    t.eq(_lags(c)["orderquery"].pending, 0, "while orderquery has taken it")
    t.eq(_lags(c)["paymentsvc-order-rejected"].pending, 0,
         "the refund durable is not handed the order-created event (each durable filters its event type)")
    c.start_payment()
    t.eq(c.final_status(doc["order_id"])["status"], "Approved", "paymentsvc back: the order goes through")
    wait_for(lambda: _lags(c)["paymentsvc-order-created"].pending == 0, 10, "paymentsvc's lag to clear")
    t.ok(True, "and its lag is back to 0")


def test_redelivery_changes_nothing(c, t):
    ids = [c.order(f"c-re-{i}", code, 5, 1)[2]["order_id"] for i, code in enumerate(["PIZZA", "SOLD-OUT", "PIZZA"])]
    for i in ids:
        c.final_status(i)
    before_events = c.sql("SELECT count(*) FROM events")[0][0]
    before_model = c.read_model()
    # Every service's durable is deleted and recreated: each event is delivered again to all of them.
    for name in ["paymentsvc", "restaurantsvc", "orderquery-1", "orderquery-2"]:
        c.services[name].stop()
    for durable in DURABLES:
        run([ORDOCTL, "consumer-reset", "--durable", durable, "--nats-url", c.nats_url])
    c.start_query(1)
    c.start_query(2)
    c.start_payment()
    c.start_restaurant()
    wait_for(lambda: _all_handled(c), 30, "every event to be redelivered and handled")
    t.eq(c.sql("SELECT count(*) FROM events")[0][0], before_events, "no event was appended twice (no double payment or refund)")
    t.eq(c.read_model(), before_model, "the read model is unchanged")


def _all_handled(c):
    """Every durable has been handed every message it filters and has none unacknowledged."""
    rows = [json.loads(line) for line in run([ORDOCTL, "consumers", "--nats-url", c.nats_url]).stdout.splitlines()]
    names = {r["name"] for r in rows}
    return (set(DURABLES) <= names and
            all(r["pending"] == 0 and r["ack_pending"] == 0 and r["delivered"] > 0 for r in rows))


def _settled(c):
    """No durable has a message waiting or unacknowledged (whether or not it has had any)."""
    rows = [json.loads(x) for x in run([ORDOCTL, "consumers", "--nats-url", c.nats_url]).stdout.splitlines()]
    return all(r["pending"] == 0 and r["ack_pending"] == 0 for r in rows)


def test_malformed_order_event(c, t):
    """An order-created that is not an order (appended straight to the store)
    is refused by every service that reads it, and nothing around it is lost:
    orderquery's batch that holds it falls back to one event at a time."""
    bad, eid = str(uuid.uuid4()), str(uuid.uuid4())
    c.append(c.event(bad, "order-created", {"not": "an order"}, event_id=eid), expected=0)
    _, _, good = c.order("c-after-bad", "PIZZA", 4, 1)
    t.eq(c.final_status(good["order_id"])["status"], "Approved", "an order right after it goes through")
    wait_for(lambda: _all_handled(c), 30, "every durable to settle the malformed event")
    t.ok(True, "every durable settled it: nothing pending, nothing unacknowledged")
    t.eq(c.sql("SELECT count(*) FROM orders WHERE order_id = %s", bad)[0][0], 0, "the read model has no row for it")
    logs = {name: open(svc.log_path).read() for name, svc in c.services.items()}
    t.ok(any("message parked" in line and eid in line
             for name, log in logs.items() if name.startswith("orderquery") for line in log.splitlines()),
         "orderquery parked it (logged with its event id)")
    t.ok(any("malformed order-created" in line and bad in line for line in logs["paymentsvc"].splitlines()),
         "paymentsvc refused it (logged with the order id)")
    t.eq(events_of(c, bad), ["order-created"], "and appended nothing for it")
    # parked, visible, replayable: not acknowledged silently, not dropped
    parked = [p for p in _parked(c) if p["event_id"] == eid]
    t.eq(sorted(p["durable"] for p in parked), ["orderquery", "paymentsvc-order-created"],
         "ordoctl parked list shows it parked by both durables that read it")
    t.ok(all("refused by the service" in p["reason"] and p["subject"] == "events.order.order-created" and
             p["data"] == {"not": "an order"} for p in parked), f"with the reason, subject and body ({parked})")
    lags = {r["name"]: r["parked"] for r in map(json.loads, run([ORDOCTL, "consumers", "--nats-url",
                                                                  c.nats_url]).stdout.splitlines())}
    t.ok(lags.get("orderquery", 0) >= 1 and lags.get("paymentsvc-order-created", 0) >= 1,
         f"ordoctl consumers counts them per durable ({lags})")
    stats = json.loads(run([ORDOCTL, "stats", "--addr", c.addr]).stdout)
    t.eq({x["name"]: x["parked"] for x in stats["consumers"]}, lags, "and so does ordoctl stats")
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    gauges = {line.split("\"")[1]: int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("ordo_consumer_parked_messages{")}
    t.eq(gauges, lags, "and the event store's /metrics (ordo_consumer_parked_messages per durable)")
    pay = c.services["paymentsvc"].metrics()
    t.ok(pay.get('ordo_consumer_parked_total{durable="paymentsvc-order-created"}', 0) >= 1 and
         pay.get('ordo_consumer_handled_total{durable="paymentsvc-order-created"}', 0) >= 1,
         "and paymentsvc's own /metrics counts what it parked and handled, per durable")
    oq = [c.services[n].metrics() for n in ("orderquery-1", "orderquery-2") if c.services[n].proc]
    t.ok(sum(m.get('ordo_consumer_parked_total{durable="orderquery"}', 0) for m in oq) >= 1,
         "as does orderquery's (one of the two instances parked it)")
    t.ok(all(m.get("process_resident_memory_bytes", 0) > 0 and m.get("process_open_fds", 0) > 0
             and "ordo_consumer_handle_duration_seconds_count" in m for m in [pay] + oq),
         "with the handler's latency and the process's figures")
    seq = next(p["seq"] for p in parked if p["durable"] == "paymentsvc-order-created")
    out = json.loads(run([ORDOCTL, "parked", "replay", "--addr", c.addr, "--seq", str(seq)]).stdout)
    t.eq(out, {"replayed": 1}, "ordoctl parked replay --seq delivers it again")
    again = wait_for(lambda: [p for p in _parked(c) if p["event_id"] == eid and p["seq"] != seq
                              and p["durable"] == "paymentsvc-order-created"], 20,
                     "paymentsvc to refuse the replayed message again")
    t.ok(again and seq not in [p["seq"] for p in _parked(c)],
         "to paymentsvc, which parked it anew (it is still not an order); the old copy is gone")
    t.eq(sorted(p["durable"] for p in _parked(c) if p["event_id"] == eid), ["orderquery", "paymentsvc-order-created"],
         "the other durables took the replay unread (orderquery parked nothing more)")


def _parked(c):
    """What ordoctl parked list prints, one dict per parked message."""
    return [json.loads(line) for line in run([ORDOCTL, "parked", "list", "--addr", c.addr]).stdout.splitlines()
            if line.startswith('{"seq"')]


def test_rebuild_while_orders_flow(c, t):
    """A rebuild while orders keep coming (it empties the read model and replays in chunks,
    the live projection applying meanwhile) ends with every order final and a read model
    equal to a rebuild made at rest."""
    ids, errors, stop = [], [], threading.Event()

    def submit():
        i = 0
        while not stop.is_set() and i < 400:
            st, _, doc = c.order(f"c-rb-{i % 5}", "SOLD-OUT" if i % 6 == 0 else "PIZZA", 4 + i % 3, 1)
            (ids.append(doc["order_id"]) if st == 201 else errors.append(st))
            i += 1
            time.sleep(0.01)

    th = threading.Thread(target=submit)
    th.start()
    time.sleep(1.0)
    rebuild = [c.services["orderquery-2"].proc.args[0], "--rebuild", "--database-url", c.database_url,
               "--eventstore-addr", f"127.0.0.1:{c.es_port}", "--nats-url", c.nats_url]
    during = run(rebuild).stdout
    stop.set()
    th.join(timeout=60)
    t.eq(errors, [], f"orders are accepted while the read model is rebuilt ({len(ids)} orders; {during.strip()})")
    final = lambda: c.sql("SELECT count(*) FROM orders WHERE order_id = ANY(%s) AND status IN"
                          " ('Approved','PaymentFailed','Refunded')", ids)[0][0] == len(ids)
    wait_for(final, 60, "every order to reach its final status after the rebuild")
    t.ok(True, "every order submitted around the rebuild reached its final status")
    live = c.read_model()
    run(rebuild)
    t.eq(c.read_model(), live, "and the read model equals a rebuild made at rest")


def test_two_instances_under_load(c, t):
    """Both orderquery instances share the durable, so one order's events can sit in both
    instances' batches at once; their lane transactions must not deadlock (PostgreSQL would
    break the cycle only after deadlock_timeout, a one-second stall). The load comes from the
    C end-to-end driver, 32 connections for 4 seconds: slower clients rarely overlap batches."""
    log = os.path.join(c.dir, "pg", "log")
    before = open(log).read().count("deadlock detected")
    r = subprocess.run([os.path.join(BUILD, "bench", "e2e_load"), "--api-addr", c.api[len("http://"):],
                        "--database-url", c.database_url, "--threads", "32", "--seconds", "4", "--wait-s", "60"],
                       capture_output=True, text=True, timeout=120)
    t.ok(r.returncode == 0, f"every order accepted under load reached a final status: {r.stdout.strip()}"
                            + (f" stderr: {r.stderr[-2000:]}" if r.returncode else ""))
    summary = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    accepted = summary[0]["accepted"] if summary else 0
    t.ok(accepted >= 100, f"the load was real: {accepted} orders accepted in 4 s (at least 100)")
    t.eq(summary[0]["final"] if summary else -1, accepted, "as many final statuses as accepted orders")
    t.eq(open(log).read().count("deadlock detected") - before, 0,
         "no deadlock between the two instances' projection transactions (PostgreSQL log)")


def test_projection_connections_cut(c, t):
    """orderquery's projection connections are cut again and again under load
    (a lane's batch goes out as one pipeline with its COMMIT, so a cut can
    lose the COMMIT's answer): every order still ends final and each row ends
    at its order's last version in the store."""
    load = subprocess.Popen([os.path.join(BUILD, "bench", "e2e_load"), "--api-addr", c.api[len("http://"):],
                             "--database-url", c.database_url, "--threads", "16", "--seconds", "4",
                             "--wait-s", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cut = c.cut_connections("orderquery projection", 10, 0.35)
    out, err = load.communicate(timeout=120)
    t.ok(cut >= 10, f"{cut} projection connections cut during the load")
    t.ok(load.returncode == 0, f"every order accepted under load reached a final status: {out.strip()}"
                               + (f" stderr: {err[-2000:]}" if load.returncode else ""))
    wait_for(lambda: _all_handled(c), 30, "every durable to settle")
    behind = c.sql("SELECT count(*) FROM orders o JOIN (SELECT aggregate_id, max(version) AS v FROM events"
                   " WHERE aggregate_type = 'order' GROUP BY aggregate_id) e ON e.aggregate_id = o.order_id"
                   " WHERE o.version <> e.v")[0][0]
    t.eq(behind, 0, "every order's row is at its last version in the store")


def test_kill_one_orderquery(c, t):
    ids, errors = [], []

    def submit(n):
        for i in range(n):
            st, _, doc = c.order(f"c-load-{i % 7}", "SOLD-OUT" if i % 5 == 0 else "PIZZA", 3 + i % 3, 1)
            if st == 201:
                ids.append(doc["order_id"])
            else:
                errors.append(st)

    th = threading.Thread(target=submit, args=(150,))
    th.start()
    time.sleep(0.5)
    c.services["orderquery-1"].stop(signal.SIGKILL)
    th.join(timeout=120)
    t.eq(errors, [], "orders keep being accepted while an orderquery instance dies")
    # orderapi still lists the dead instance; the other answers (round robin skips the dead one)
    pending = lambda: c.sql("SELECT count(*) FROM orders WHERE order_id = ANY(%s) AND status IN"
                            " ('Approved','PaymentFailed','Refunded')", ids)[0][0] == len(ids)
    wait_for(pending, 60, "the surviving orderquery to finish every order")
    t.ok(True, f"all {len(ids)} orders reached a final status with one orderquery left")
    live = c.read_model()
    rebuilt = run([c.services["orderquery-2"].proc.args[0], "--rebuild", "--database-url", c.database_url,
                   "--eventstore-addr", f"127.0.0.1:{c.es_port}", "--nats-url", c.nats_url])
    out = rebuilt.stdout
    t.ok('"orders"' in out, f"orderquery --rebuild ran: {out.strip()}")
    t.eq(c.read_model(), live, "the read model equals a rebuild from the event store")
    # (the rebuild applies a chunk of events per transaction; one that is not an order makes its
    # chunk go one event at a time, and is skipped, as the live projection terminated it)
    malformed = c.sql("SELECT count(*) FROM events WHERE event_type = 'order-created'"
                      " AND NOT (event_data ? 'order_items')")[0][0]
    t.eq(rebuilt.stderr.count("rebuild skips an event that cannot apply"), malformed,
         f"the rebuild skipped each order-created that is not an order ({malformed}), nothing else")
    import grpc
    import order_pb2
    import order_pb2_grpc
    with grpc.insecure_channel(f"127.0.0.1:{c.services['orderquery-2'].port}") as ch:
        r = order_pb2_grpc.OrderQueryStub(ch).Rebuild(order_pb2.RebuildRequest(), timeout=60)
    t.ok(r.orders == len(live[0]) and r.events > 0, f"the Rebuild call over gRPC: {r.events} events, {r.orders} orders")
    t.eq(c.read_model(), live, "and it too reproduces the live read model")


def test_nats_outage(c, t):
    """NATS down: orders are still accepted (the outbox keeps their events);
    once NATS is back, every service reconnects and each order finishes."""
    c.stop_nats()
    ids = []
    for i in range(6):
        st, _, doc = c.order(f"c-nats-{i}", "SOLD-OUT" if i % 3 == 0 else "PIZZA", 4, 1)
        if st == 201:
            ids.append(doc["order_id"])
    t.eq(len(ids), 6, "orders are accepted while NATS is down")
    time.sleep(1)
    t.ok(all(len(events_of(c, i)) == 1 for i in ids), "nothing moves on without the bus")
    c.start_nats()
    finals = [c.final_status(i, timeout=40)["status"] for i in ids]
    t.eq(sorted(finals), sorted(["Refunded" if i % 3 == 0 else "Approved" for i in range(6)]),
         "after NATS is back every order reaches its final status")


def test_nats_loses_its_state(c, t):
    """NATS comes back without its JetStream state (a server whose storage was
    lost): no stream, no durables. The relay creates the stream again, every
    service its durable, and orders placed while NATS was down and after it
    came back all finish."""
    _, _, before = c.order("c-lost", "PIZZA", 4, 1)
    c.final_status(before["order_id"])
    c.stop_nats()
    shutil.rmtree(os.path.join(c.dir, "js"))
    st, _, during = c.order("c-lost", "SOLD-OUT", 4, 1)
    t.eq(st, 201, "an order is accepted while NATS is down")
    c.start_nats()
    _, _, after = c.order("c-lost", "PIZZA", 4, 1)
    t.eq(c.final_status(during["order_id"], timeout=40)["status"], "Refunded",
         "the order placed while NATS was down finishes (rejected and refunded)")
    t.eq(c.final_status(after["order_id"], timeout=40)["status"], "Approved", "the order placed after it finishes")
    wait_for(lambda: _all_handled(c), 30, "every durable to exist again and settle")
    t.ok(True, "every service's durable exists again")


def test_eventstore_down(c, t):
    port = c.es_port
    c.stop_es()
    start = time.time()
    st, _, err = c.order("c-down", "PIZZA", 1, 1)
    t.eq((st, err["error"]["code"]), (503, "unavailable"), "POST answers 503 while the event store is stopped")
    t.ok(time.time() - start < 10, f"within the deadline ({time.time() - start:.1f}s)")
    st, _, health = c.http("GET", "/healthz")
    t.ok(st == 503 and health["eventstore"] is False, "healthz reports the event store down")
    c.start_es(port=port)
    st2 = wait_for(lambda: c.order("c-down", "PIZZA", 1, 1)[0] == 201, 20, "orderapi to recover")
    t.ok(st2, "POST works again once the event store is back")
    st, _, health = c.http("GET", "/healthz")
    t.ok(st == 200 and health["database"] is True, f"healthz is ok again: {health}")


def test_sigterm_under_load_is_prompt(c, t):
    """SIGTERM while orders flow: the event store finishes what it holds and exits 0 at
    once, without waiting for its clients to close their connections, and nothing is lost."""
    ids, stop = [], threading.Event()

    def submit():
        while not stop.is_set():
            st, _, doc = c.order("c-term", "PIZZA", 1, 1)
            if st == 201:
                ids.append(doc["order_id"])
            time.sleep(0.01)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for th in threads:
        th.start()
    time.sleep(1.5)
    port, start = c.es_port, time.time()
    rc = c.stop_es()
    took = time.time() - start
    t.eq(rc, 0, "the event store exits 0 on SIGTERM under load")
    t.ok(took < 1.0, f"within {took:.2f} s (its clients keep their connections open)")
    c.start_es(port=port)
    time.sleep(1.0)
    stop.set()
    for th in threads:
        th.join(timeout=30)
    final = lambda: c.sql("SELECT count(*) FROM orders WHERE order_id = ANY(%s) AND status IN"
                          " ('Approved','PaymentFailed','Refunded')", ids)[0][0] == len(ids)
    wait_for(final, 60, "every accepted order to reach its final status")
    t.ok(len(ids) > 0, f"all {len(ids)} orders accepted around the restart reached their final status")


def test_back_soon_after_a_long_outage(c, t):
    """After the event store was down long enough for gRPC's reconnect backoff to grow
    (12 s of failing POSTs), orderapi takes orders again within about a second of its
    return, and the saga services finish them."""
    port = c.es_port
    c.stop_es()
    end = time.time() + 12
    while time.time() < end:
        c.order("c-long-down", "PIZZA", 1, 1)
        time.sleep(0.3)
    c.start_es(port=port)
    back = time.time()
    wait_for(lambda: c.order("c-long-down", "PIZZA", 1, 1)[0] == 201, 20, "orderapi to take orders again")
    took = time.time() - back
    t.ok(took < 3, f"orderapi took orders again {took:.1f} s after the event store was back (under 3 s)")
    st, _, doc = c.order("c-long-down", "PIZZA", 1, 1)
    start = time.time()
    t.eq(c.final_status(doc["order_id"])["status"], "Approved", "an order placed then goes through the saga")
    t.ok(time.time() - start < 5, f"within {time.time() - start:.1f} s")


def test_database_restart(c, t):
    """PostgreSQL restarts under the running system: while it is down a POST
    answers 503; once it is back, no call fails because of a connection
    that was lost meanwhile, and orders go through again."""
    _, _, before = c.order("c-pg", "PIZZA", 5, 1)
    t.eq(c.final_status(before["order_id"])["status"], "Approved", "an order before the restart")
    c.pg_stop()
    st, _, err = c.order("c-pg", "PIZZA", 5, 1)
    t.eq((st, err["error"]["code"]), (503, "unavailable"), "POST answers 503 while the database is down")
    c.pg_start_again()
    healths = [c.http("GET", "/healthz") for _ in range(8)]
    t.eq([(st, h["database"]) for st, _, h in healths], [(200, True)] * 8,
         "every healthz after the restart reports the database up (lost connections are replaced, not reported)")
    reads = [c.http("GET", f"/api/orders/{before['order_id']}")[0] for _ in range(8)]
    t.eq(reads, [200] * 8, "and every read of the order succeeds")
    after = wait_for(lambda: (lambda r: r[0] == 201 and r[2])(c.order("c-pg", "PIZZA", 5, 1)), 20,
                     "orders to be accepted again")
    t.eq(c.final_status(after["order_id"], timeout=40)["status"], "Approved", "an order after the restart finishes")


def test_outage_spends_no_deliveries(c, t):
    """The database and the event store are down for longer than ten
    redeliveries take (MaxDeliver 10, one second apart): the services hold
    the messages they cannot handle and try them again until their
    dependencies are back, instead of spending a delivery each time and
    terminating the message (which left orders unpaid, or the read model
    behind the store, for good)."""
    queries = [n for n in ("orderquery-1", "orderquery-2") if c.services[n].proc]   # an earlier test killed one
    # nothing of earlier tests still in hand (a paused service holding an older message
    # would not show what this test looks for)
    wait_for(lambda: _settled(c), 60, "every durable to settle before the outage")
    seen = {name: os.path.getsize(svc.log_path) for name, svc in c.services.items()}   # earlier tests' lines
    held = [c.services[n].proc for n in ["paymentsvc"] + queries]
    for p in held:   # paused, so that the orders' events reach them only during the outage
        p.send_signal(signal.SIGSTOP)
    ids = [c.order("c-outage", code, 4, 1)[2]["order_id"] for code in ("PIZZA", "SOLD-OUT", "PIZZA")]
    # on the bus before the store stops (a relay without the lease publishes nothing: the previous
    # test's database restart once made it give the lease up, and these events waited for the restart)
    wait_for(lambda: c.stats().outbox_backlog == 0, 20, "the orders' events to be published")
    port = c.es_port
    c.stop_es()
    c.pg_stop()
    for p in held:
        p.send_signal(signal.SIGCONT)
    time.sleep(15)   # a handler that fails at once spends ten deliveries in about ten seconds
    c.pg_start_again()
    c.start_es(port=port)
    finals = [c.final_status(i, timeout=60)["status"] for i in ids]
    t.eq(finals, ["Approved", "Refunded", "Approved"], "every order finishes once the outage is over")
    wait_for(lambda: _all_handled(c), 30, "every durable to settle")
    logs = {name: read_from(svc.log_path, seen.get(name, 0)) for name, svc in c.services.items()}
    t.eq([n for n, log in logs.items() if "terminated" in log], [], "no service terminated a message")
    said = {n: [x[40:150] for x in logs[n].splitlines() if "level=warn" in x][:2] for n in ["paymentsvc"] + queries}
    # (this failed twice in many runs, orderquery saying nothing at all: its whole window is named then)
    window = {n: (len(logs[n].splitlines()), logs[n].splitlines()[-1][:160] if logs[n] else "") for n in queries}
    t.ok("holding messages" in logs["paymentsvc"] and any("holding messages" in logs[n] for n in queries),
         f"paymentsvc and orderquery said they were holding messages during the outage (their warnings: {said};"
         f" orderquery's lines in the window and its last: {window})")
    why = logs["paymentsvc"].count("the event store is unreachable") + \
        sum(logs[n].count("the read model's database is unreachable") for n in queries)
    t.ok(2 <= why <= 9, f"and why, once per held message or batch, not on every try ({why} lines in 15 s)")


def test_read_only_database(c, t):
    """The database turns read-only for 20 s under load, the way a failover to
    a standby looks (SQLSTATE 25006 on every write), with orders in the middle
    of the saga (their events in hand of paymentsvc and orderquery when it
    happens): the services hold what they cannot write and try again, spending
    no deliveries; once it is writable again every order accepted reaches its
    final status, and no service terminated a message (which left orders Paid
    or Pending for good)."""
    wait_for(lambda: _settled(c), 60, "every durable to settle before the fault")
    seen = {name: os.path.getsize(svc.log_path) for name, svc in c.services.items()}
    want = {"PIZZA": "Approved", "SOLD-OUT": "Refunded", "CAVIAR": "PaymentFailed"}
    prices = {"PIZZA": 5, "SOLD-OUT": 5, "CAVIAR": 600}
    accepted, stop = [], threading.Event()

    def submit():
        """A careful client: one Idempotency-Key per order, retried on 503 with the same key."""
        for k in range(300):
            code = list(want)[k % 3]
            key = f"ro-{uuid.uuid4()}"
            for _ in range(200):
                st, _, doc = c.order("c-ro", code, prices[code], 1, key=key)
                if st == 201:
                    accepted.append((doc["order_id"], code))
                    break
                time.sleep(0.3)
            if stop.is_set():
                return
            time.sleep(0.1)

    def read_only(on):
        conn = c.db()   # autocommit, outside any transaction block (ALTER SYSTEM needs that)
        try:
            cur = conn.cursor()
            cur.execute("SET default_transaction_read_only = off")   # (a new session is read-only too)
            cur.execute("ALTER SYSTEM SET default_transaction_read_only = on" if on else
                        "ALTER SYSTEM RESET default_transaction_read_only")
            cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()
    queries = [n for n in ("orderquery-1", "orderquery-2") if c.services[n].proc]
    held = [c.services[n].proc for n in ["paymentsvc"] + queries]
    for p in held:   # paused, so that orders' events are in their hands when the database turns read-only
        p.send_signal(signal.SIGSTOP)
    th = threading.Thread(target=submit)
    th.start()
    try:
        wait_for(lambda: len(accepted) >= 6, 20, "orders to be accepted")
        wait_for(lambda: c.stats().outbox_backlog == 0, 20, "their events to be published")
        read_only(True)
        try:
            for p in held:
                p.send_signal(signal.SIGCONT)
            time.sleep(20)
        finally:
            for p in held:
                p.send_signal(signal.SIGCONT)
            read_only(False)
        time.sleep(3)
    finally:
        stop.set()
        th.join(timeout=90)
    t.ok(len(accepted) >= 10, f"orders were accepted before, during (retried) and after the fault ({len(accepted)})")
    finals = [(c.final_status(i, timeout=90)["status"], want[code]) for i, code in accepted]
    t.eq([f for f in finals if f[0] != f[1]], [], f"every one of the {len(accepted)} orders reached its final status")
    wait_for(lambda: _settled(c), 60, "every durable to settle")
    logs = {name: read_from(svc.log_path, seen.get(name, 0)) for name, svc in c.services.items()}
    t.eq([n for n, log in logs.items() if "terminated" in log], [], "no service terminated a message")
    holding = [n for n in ["paymentsvc"] + queries if "holding messages" in logs[n]]
    t.ok("paymentsvc" in holding and len(holding) >= 2,
         f"paymentsvc and orderquery held their messages while the database was read-only ({holding})")

def test_a_lane_appends_its_batch_at_once(c, t):
    """paymentsvc paused while 60 orders come in, then resumed: its lanes each
    take a batch of the waiting messages and append the batch's follow-ups
    together (ordo_saga_run); every order reaches its final status through
    the right path, each step appended once."""
    import signal
    pay = c.services["paymentsvc"].proc
    pay.send_signal(signal.SIGSTOP)
    try:
        orders = []
        for i in range(60):
            code, price = ("SOLD-OUT", 9.99) if i % 7 == 0 else ("CAVIAR", 400) if i % 10 == 0 else ("PIZZA", 12.5)
            st, _, doc = c.order(f"c-batch-{i}", code, price, 2 if code == "CAVIAR" else 1)
            orders.append((doc["order_id"], code))
        t.eq(st, 201, "60 orders accepted while paymentsvc was paused")
    finally:
        pay.send_signal(signal.SIGCONT)
    want = {"SOLD-OUT": ("Refunded", ["order-created", "order-payment-debited", "order-rejected", "order-payment-refunded"]),
            "CAVIAR": ("PaymentFailed", ["order-created", "order-payment-failed"]),
            "PIZZA": ("Approved", ["order-created", "order-payment-debited", "order-approved"])}
    wrong = [(oid, code) for oid, code in orders
             if c.final_status(oid)["status"] != want[code][0] or events_of(c, oid) != want[code][1]]
    t.eq(wrong, [], "every batched order reached its final status, each step appended once and in order")


if __name__ == "__main__":
    import sys
    tests = [test_saga_paths, test_a_lane_appends_its_batch_at_once, test_routine_steps_are_not_logged, test_idempotency_key, test_consumer_lag_in_stats, test_redelivery_changes_nothing,
             test_malformed_order_event, test_rebuild_while_orders_flow, test_two_instances_under_load, test_projection_connections_cut,
             test_kill_one_orderquery,
             test_nats_outage, test_nats_loses_its_state, test_eventstore_down, test_sigterm_under_load_is_prompt,
             test_back_soon_after_a_long_outage,
             test_database_restart,
             test_outage_spends_no_deliveries, test_read_only_database]
    if len(sys.argv) > 1:
        tests = [x for x in tests if x.__name__ in sys.argv[1:]]
    run_tests(tests, lambda: FlowCluster(metrics_addr="127.0.0.1:0"))
