#!/usr/bin/python3
"""The live change feed (docs/orderflow.md, "Live changes"): GET /api/orders/changes
streams what the read model learns as Server-Sent Events: every order's states in
version order, resumption from Last-Event-ID (exact when the history holds it, a
reset notice when it does not), a customer's key sees its own orders only, a
client that reads too slowly is dropped with a reason while the others go on,
the number of streams is capped, and orderapi stops promptly with streams open.
The whole system secured (HTTPS, API keys, TLS between the services), real
processes over loopback."""
import concurrent.futures
import http.client
import json
import signal
import socket
import ssl
import threading
import time
import uuid

from harness import FlowCluster, run_tests, wait_for

FINAL = ("Approved", "PaymentFailed", "Refunded")


class Sse:
    """One GET /api/orders/changes over HTTPS, read event by event."""

    def __init__(self, c, headers=None, query="", rcvbuf=None):
        port = c.services["orderapi"].port
        sock = socket.socket()
        if rcvbuf:   # a client with a small window: the server soon sees it as slow
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        ctx = ssl.create_default_context(cafile=c.cert_path("ca.pem"))
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        self.conn.sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        h = {"Authorization": f"Bearer {c.api_key}"}
        h.update(headers or {})
        self.conn.request("GET", "/api/orders/changes" + query, headers={k: v for k, v in h.items() if v})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.headers)
        self.pings = 0
        self.retry = None
        if self.status != 200:
            self.body = json.loads(self.resp.read().decode())

    def next(self, timeout=10):
        """The next event as {"id", "event", "data"}; None at the end of the stream."""
        self.conn.sock.settimeout(timeout)
        ev = {}
        while True:
            line = self.resp.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line == "":
                if ev:
                    if "data" in ev:
                        ev["data"] = json.loads(ev["data"])
                    return ev
                continue
            if line.startswith(":"):
                self.pings += line.startswith(": ping")
                continue
            field, _, value = line.partition(": ")
            if field == "retry":
                self.retry = int(value)
            else:
                ev[field] = value

    def until(self, cond, timeout=30):
        """Reads events until cond(events so far) holds; returns them."""
        seen, deadline = [], time.time() + timeout
        while not cond(seen):
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"stream: condition not met in {timeout} s; got {len(seen)} events")
            ev = self.next(left)
            if ev is None:
                raise AssertionError("stream ended early")
            seen.append(ev)
        return seen

    def follow(self):
        """Reads in a thread from now on, into self.events; self.ended once the stream ends."""
        self.events, self.ended = [], threading.Event()

        def read():
            try:
                while (ev := self.next(120)) is not None:
                    self.events.append(ev)
            except (OSError, ValueError, http.client.HTTPException):
                pass
            self.ended.set()
        threading.Thread(target=read, daemon=True).start()

    def close(self):
        self.conn.close()


def finals(events, oids):
    done = {e["data"]["order_id"] for e in events if e.get("event") == "order" and e["data"]["status"] in FINAL}
    return set(oids) <= done


def place(c, customer, code, price, headers=None):
    body = {"customer_id": customer, "restaurant_id": "r-1",
            "order_items": [{"code": code, "name": code.title(), "unit_price": price, "quantity": 1}]}
    st, _, doc = c.http("POST", "/api/orders", body, headers)
    assert st == 201, (st, doc)
    return doc["order_id"]


def test_live(c, t):
    s = Sse(c)
    t.eq((s.status, s.headers.get("Content-Type"), s.headers.get("Cache-Control")),
         (200, "text/event-stream", "no-store"), "200 text/event-stream, not cached")
    approved, refunded = place(c, "c-1", "PIZZA", 5), place(c, "c-1", "SOLD-OUT", 5)
    events = s.until(lambda evs: finals(evs, [approved, refunded]))
    t.eq(s.retry, 3000, "the stream tells the client to reconnect after 3 s")
    mine = {o: [e for e in events if e["data"]["order_id"] == o] for o in (approved, refunded)}
    for oid, want in ((approved, "Approved"), (refunded, "Refunded")):
        versions = [e["data"]["version"] for e in mine[oid]]
        t.ok(versions == sorted(set(versions)), f"{oid[:8]}: each version once, in order ({versions})")
        t.eq(mine[oid][-1]["data"]["status"], want, f"{oid[:8]}: reaches {want} without a reload")
    e = mine[approved][-1]
    t.eq(e["id"], f"{e['data']['applied_at']}-{e['data']['version']}-{approved}", "id is APPLIED_AT-VERSION-ORDER_ID")
    t.ok({"order_id", "customer_id", "restaurant_id", "status", "amount", "version", "created_at", "updated_at",
          "applied_at"} == set(e["data"]), f"data is the order without its items ({sorted(e['data'])})")
    _, _, now = c.http("GET", f"/api/orders/{approved}")
    t.eq({k: now[k] for k in ("status", "version", "amount", "updated_at")},
         {k: e["data"][k] for k in ("status", "version", "amount", "updated_at")}, "the last event is the read model's row")
    c.live = (s, events)


def test_resume(c, t):
    s, events = c.live
    later = place(c, "c-1", "PIZZA", 7)
    events += s.until(lambda evs: finals(evs, [later]))
    s.close()
    ids = [e["id"] for e in events]
    start = len(ids) // 3
    r = Sse(c, {"Last-Event-ID": ids[start]})
    got = r.until(lambda evs: len(evs) >= len(ids) - start - 1)
    t.eq([e["id"] for e in got], ids[start + 1:], "Last-Event-ID resumes right after that event, nothing lost or repeated")
    r.close()
    r = Sse(c, {"Last-Event-ID": f"1-1-{uuid.uuid4()}"})
    first = r.next()
    t.ok(first["event"] == "reset" and first["data"]["reason"] == "too_old",
         f"an id older than the history: a reset notice first ({first})")
    oid = place(c, "c-1", "PIZZA", 3)
    r.until(lambda evs: finals(evs, [oid]))
    t.ok(True, "then the stream goes on live")
    r.close()
    bad = Sse(c, {"Last-Event-ID": "yesterday"})
    t.eq((bad.status, bad.body["error"]["code"]), (400, "invalid"), "a malformed Last-Event-ID: 400")
    bad.close()


def test_authorization(c, t):
    key = open(c.cert_path("customer.key")).read().strip()
    mine = Sse(c, {"Authorization": f"Bearer {key}"})
    t.eq(mine.status, 200, "a customer's key follows changes")
    staff = Sse(c, query="?customer_id=c-other")
    t.eq(staff.status, 200, "staff may follow one customer")
    first, other, own = place(c, "c-1", "PIZZA", 4), place(c, "c-other", "PIZZA", 4), place(c, "c-key", "PIZZA", 4)
    got = mine.until(lambda evs: finals(evs, [own]))
    t.ok({e["data"]["customer_id"] for e in got} == {"c-key"}, "a customer's key sees its own customer's orders only")
    got = staff.until(lambda evs: finals(evs, [other]))
    t.ok({e["data"]["customer_id"] for e in got} == {"c-other"}, "a staff stream with customer_id that customer's only")
    mine.close()
    staff.close()
    s = Sse(c, {"Authorization": f"Bearer {key}"}, "?customer_id=c-other")
    t.eq(s.status, 403, "a customer's key asking for another customer's: 403")
    s = Sse(c, {"Authorization": None})
    t.eq(s.status, 401, "no key: 401")
    st, hdrs, _ = c.http("POST", "/api/orders/changes", {})
    t.eq((st, hdrs.get("Allow")), (405, "GET"), "POST: 405, Allow: GET")


def test_slow_client_dropped(c, t):
    c.services["orderapi"].stop()
    c.start_api(changes_history=128, changes_max_streams=3, http_idle_s=60)
    wait_for(lambda: "ordo_changes_feed_up 1" in c.http("GET", "/metrics")[2], 10, "the feed to start")
    slow = Sse(c, rcvbuf=4096)
    fast = Sse(c)
    fast.follow()
    t.eq((slow.status, fast.status), (200, 200), "two streams open")
    third = Sse(c)
    fourth = Sse(c)
    t.eq(fourth.status, 503, "past --changes-max-streams: 503")
    third.close()
    # 500 orders of a customer with a long id (~600-byte changes, 1 to 4 of them an order):
    # far more than the slow client's buffers (~100 kB) and the history of 128 hold
    customer = "c-" + "x" * 120
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        oids = list(pool.map(lambda i: place(c, customer, "PIZZA", 1 + i % 5), range(500)))
    wait_for(lambda: finals(fast.events, oids), 90, "the fast client to see every order final")
    t.ok(True, f"the client that keeps up sees all 500 orders reach a final status ({len(fast.events)} events)")
    drop, n, until = None, 0, time.time() + 60
    while time.time() < until:   # (bounded: a stream that is not dropped goes on with its pings)
        ev = slow.next(30)
        if ev is None or ev.get("event") == "dropped":
            drop = ev
            break
        n += 1
    t.ok(drop is not None and drop["data"]["reason"] == "slow_client",
         f"the slow client, after the {n} events its buffers held, is told why it is dropped ({drop})")
    t.ok(slow.next(10) is None, "and its stream ends")
    m = c.services["orderapi"]
    text = c.http("GET", "/metrics", headers={"Authorization": None})[2]
    t.ok("ordo_changes_dropped_streams_total 1" in text, "counted: ordo_changes_dropped_streams_total 1")
    t.ok("ordo_changes_streams 1" in text, "ordo_changes_streams: the one left open")
    # orderapi stops at once with a stream open (libmicrohttpd must not stop with a sleeping connection)
    start = time.time()
    rc = m.stop(signal.SIGTERM, 10)
    t.ok(rc == 0 and time.time() - start < 5, f"SIGTERM with a stream open: exit {rc} in {time.time() - start:.1f} s")
    t.ok(fast.ended.wait(5), "and the stream ends")
    c.start_api()


if __name__ == "__main__":
    run_tests([test_live, test_resume, test_authorization, test_slow_client_dropped],
              lambda: FlowCluster(tls=True))
