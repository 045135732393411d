#!/usr/bin/python3
"""orderapi's HTTP contract and bad input, driven with curl: every bad request
gets its status code and a JSON error, and the service keeps answering."""
import json
import subprocess

from harness import FlowCluster, run_tests, settled_value, wait_for


def curl(c, method, path, body=None, ctype="application/json", headers=()):
    cmd = ["curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}", "-X", method, c.api + path]
    if ctype:
        cmd += ["-H", f"Content-Type: {ctype}"]
    for h in headers:
        cmd += ["-H", h]
    if body is not None:
        cmd += ["--data-binary", "@-"]
    r = subprocess.run(cmd, input=body.encode() if isinstance(body, str) else body, capture_output=True, timeout=20)
    text, _, code = r.stdout.decode().rpartition("\n")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = text
    return int(code), doc


def expect_error(c, t, what, status, method, path, body=None, **kw):
    code, doc = curl(c, method, path, body, **kw)
    good = code == status and isinstance(doc, dict) and "code" in doc.get("error", {}) and doc["error"]["message"]
    t.ok(good, f"{what}: {code} {json.dumps(doc)[:160]}")


GOOD = {"customer_id": "c-1", "restaurant_id": "r-1",
        "order_items": [{"code": "PIZZA", "name": "Pizza", "unit_price": 12.5, "quantity": 2}]}


def with_(**changes):
    doc = json.loads(json.dumps(GOOD))
    for k, v in changes.items():
        if k.startswith("item_"):
            doc["order_items"][0][k[5:]] = v
        else:
            doc[k] = v
    return json.dumps(doc)


def test_good_order(c, t):
    code, doc = curl(c, "POST", "/api/orders", json.dumps(GOOD))
    t.ok(code == 201 and doc["status"] == "Pending" and doc["amount"] == 25.0, f"a good order: {code}")
    final = c.final_status(doc["order_id"])
    code, doc = curl(c, "GET", f"/api/orders/{doc['order_id']}")
    t.ok(code == 200 and doc == final and doc["status"] == "Approved", f"GET by id: {code} {doc.get('status')}")


def test_bad_bodies(c, t):
    P = "/api/orders"
    expect_error(c, t, "malformed JSON", 400, "POST", P, '{"customer_id": ')
    expect_error(c, t, "not an object", 400, "POST", P, '[1,2]')
    expect_error(c, t, "empty body", 400, "POST", P, "")
    expect_error(c, t, "missing customer_id", 400, "POST", P, with_(customer_id=None))
    expect_error(c, t, "customer_id of the wrong type", 400, "POST", P, with_(customer_id=42))
    expect_error(c, t, "order_items not an array", 400, "POST", P, with_(order_items="pizza"))
    expect_error(c, t, "no order items", 400, "POST", P, with_(order_items=[]))
    expect_error(c, t, "quantity zero", 400, "POST", P, with_(item_quantity=0))
    expect_error(c, t, "negative quantity", 400, "POST", P, with_(item_quantity=-3))
    expect_error(c, t, "fractional quantity", 400, "POST", P, with_(item_quantity=1.5))
    expect_error(c, t, "price zero", 400, "POST", P, with_(item_unit_price=0))
    expect_error(c, t, "negative price", 400, "POST", P, with_(item_unit_price=-1))
    expect_error(c, t, "price as a string", 400, "POST", P, with_(item_unit_price="12.5"))
    expect_error(c, t, "item without code", 400, "POST", P, with_(item_code=None))
    many = json.loads(json.dumps(GOOD))
    many["order_items"] = many["order_items"] * 101
    expect_error(c, t, "too many items", 400, "POST", P, json.dumps(many))
    expect_error(c, t, "duplicate keys", 400, "POST", P, '{"customer_id":"a","customer_id":"b"}')
    expect_error(c, t, "body over the limit", 413, "POST", P, json.dumps({"pad": "x" * 70000, **GOOD}))
    expect_error(c, t, "body over the limit, chunked", 413, "POST", P, json.dumps({"pad": "x" * 70000, **GOOD}),
                 headers=("Transfer-Encoding: chunked",))
    expect_error(c, t, "not JSON (text/plain)", 415, "POST", P, json.dumps(GOOD), ctype="text/plain")
    expect_error(c, t, "no content type", 415, "POST", P, json.dumps(GOOD), ctype=None)
    expect_error(c, t, "bad Idempotency-Key", 400, "POST", P, json.dumps(GOOD), headers=("Idempotency-Key: " + "k" * 200,))


def test_paging(c, t):
    ids = []
    for i in range(5):
        code, doc = curl(c, "POST", "/api/orders", json.dumps(dict(GOOD, customer_id="c-pages")))
        ids.append(doc["order_id"])
    for i in ids:
        c.final_status(i)
    seen, after, pages = [], "", 0
    while pages < 10:
        code, doc = curl(c, "GET", f"/api/orders?customer_id=c-pages&limit=2&after={after}")
        if code != 200:
            break
        seen += [o["order_id"] for o in doc["orders"]]
        pages += 1
        if not doc.get("next"):
            break
        after = doc["next"]
    t.eq(sorted(seen), sorted(ids), f"pages of 2 by `after` list each order once ({pages} pages)")
    t.eq(pages, 3, "5 orders in pages of 2: 3 pages, the last without `next`")


def _rows_read(c):
    """Rows read from `orders` so far: by sequential scans, and index entries by its index scans."""
    return c.sql("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
                 " + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = 'orders')"
                 " FROM pg_stat_user_tables WHERE relname = 'orders'")[0][0]


def test_pages_read_only_their_rows(c, t):
    """A page of orders reads about its own rows, not every order of the
    filter: a page by status or of all orders once sorted every matching
    row (the query's collation was not its indexes'), 40-50 ms a page at
    300k orders and growing with the table. Counted from PostgreSQL's
    statistics, which the server publishes within ~10 s of a query."""
    n = 20000
    c.sql("INSERT INTO orders (order_id, customer_id, restaurant_id, status, amount_cents, version,"
          " created_at, updated_at) SELECT gen_random_uuid()::text, 'c-bulk-' || (g %% 500), 'r-1',"
          " (ARRAY['Approved', 'Refunded', 'PaymentFailed'])[1 + g %% 3], 1250, 3, 0, 0"
          " FROM generate_series(1, %s) g", n)
    c.sql("INSERT INTO order_items (order_id, line, code, name, unit_price_cents, quantity)"
          " SELECT order_id, 1, 'PIZZA', 'Bulk', 1250, 1 FROM orders WHERE customer_id LIKE 'c-bulk-%%'")
    c.sql("ANALYZE orders")
    c.sql("ANALYZE order_items")
    try:
        before = settled_value(lambda: _rows_read(c))   # no statistics of earlier statements still to come
        pages, items_ok = 0, True
        for query in ("status=Approved&limit=50", "limit=50", "status=Refunded&limit=20"):
            after = ""
            for _ in range(2):
                code, doc = curl(c, "GET", f"/api/orders?{query}&after={after}")
                pages += 1
                items_ok &= code == 200 and all(len(o["order_items"]) == 1 or not o["customer_id"].startswith("c-bulk-")
                                                for o in doc["orders"])
                after = doc["next"]
        t.ok(items_ok, f"{pages} pages, each order with its own items")
        wait_for(lambda: (_rows_read(c) - before) or None, 15, "the pages' statistics")
        read = settled_value(lambda: _rows_read(c)) - before   # and the rest of them
        t.ok(read <= 30 * 50, f"the {pages} pages read {read} rows of orders (a sorted filter reads {n}+ a page)")
    finally:
        c.sql("DELETE FROM order_items WHERE order_id IN (SELECT order_id FROM orders WHERE customer_id LIKE 'c-bulk-%%')")
        c.sql("DELETE FROM orders WHERE customer_id LIKE 'c-bulk-%%'")


def test_routes(c, t):
    expect_error(c, t, "unknown route", 404, "GET", "/api/nothing")
    expect_error(c, t, "unknown order", 404, "GET", "/api/orders/00000000-0000-4000-8000-000000000000")
    expect_error(c, t, "order id not a UUID", 400, "GET", "/api/orders/not-a-uuid")
    expect_error(c, t, "DELETE an order", 405, "DELETE", "/api/orders/00000000-0000-4000-8000-000000000000")
    expect_error(c, t, "PUT the collection", 405, "PUT", "/api/orders", "{}")
    expect_error(c, t, "unknown status filter", 400, "GET", "/api/orders?status=Lost")
    expect_error(c, t, "limit not a number", 400, "GET", "/api/orders?limit=ten")
    expect_error(c, t, "limit too large", 400, "GET", "/api/orders?limit=100000")
    # HEAD is GET without the body (monitors probe with it); other methods name both in Allow
    for path, status in (("/healthz", 200), ("/api/orders?limit=2", 200), ("/api/orders/00000000-0000-4000-8000-000000000000", 404)):
        r = subprocess.run(["curl", "-s", "-m", "10", "-I", c.api + path], capture_output=True, timeout=20)
        head = r.stdout.decode()
        t.ok(head.startswith(f"HTTP/1.1 {status}") and "content-length:" in head.lower() and head.endswith("\r\n\r\n"),
             f"HEAD {path}: {status}, its length and no body ({head.splitlines()[:1]})")
    r = subprocess.run(["curl", "-s", "-m", "10", "-D", "-", "-o", "/dev/null", "-X", "DELETE", c.api + "/healthz"],
                       capture_output=True, timeout=20)
    t.ok("Allow: GET, HEAD\r\n" in r.stdout.decode(), f"405 names GET and HEAD in Allow: {r.stdout.decode().splitlines()[:1]}")
    code, doc = curl(c, "GET", "/api/orders?limit=2")
    t.ok(code == 200 and isinstance(doc.get("orders"), list) and len(doc["orders"]) <= 2, "a page of orders")
    code, doc = curl(c, "GET", "/healthz")
    t.ok(code == 200 and doc["status"] == "ok", f"healthz after all that: {doc}")
    code, text = curl(c, "GET", "/metrics", ctype=None)
    import re
    created = re.search(r"^ordo_orders_created_total (\d+)$", text, re.M) if code == 200 else None
    t.ok('ordo_http_requests_total{method="POST",route="/api/orders",code="4xx"}' in text and created
         and int(created.group(1)) == 6, "metrics count the requests (6 orders created by this test file)")


def test_slow_clients_at_one_address(c, t):
    """1,100 slow connections from one address (each sending a header line every
    second, never finishing its request: a slowloris) do not take the server:
    orderapi holds at most --http-max-per-address of them, and GET /healthz from
    another address answers 200 within a second all along. (The slow clients come
    from 127.0.0.2, loopback too; the server listens on 127.0.0.1 only.)"""
    import resource
    import socket
    import time
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    port = int(c.api.rsplit(":", 1)[1])
    slow = []
    try:
        for _ in range(1100):
            s = socket.socket()
            s.setblocking(False)
            s.bind(("127.0.0.2", 0))
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            slow.append(s)
        times = []
        for rnd in range(4):
            for s in slow:   # a header line each, never the blank line that ends the request
                try:
                    s.send(b"GET /healthz HTTP/1.1\r\n" if rnd == 0 else b"X-Slow: %d\r\n" % rnd)
                except OSError:
                    pass   # refused or closed by the server
            start = time.time()
            st, _, doc = c.http("GET", "/healthz", timeout=5)
            times.append((st, round(time.time() - start, 2)))
            time.sleep(1)
        t.ok(all(st == 200 and took < 1.0 for st, took in times),
             f"GET /healthz answered 200 within a second while they stayed ({times})")
        alive = 0
        for s in slow:
            try:
                alive += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                alive += 1   # open and silent: held by the server
            except OSError:
                pass
        t.ok(alive <= 64, f"the server held at most --http-max-per-address (64) of them ({alive} open)")
    finally:
        for s in slow:
            s.close()


def test_waiting_requests_hold_no_thread(c, t):
    """Requests wait on the event store and the read model without holding an
    HTTP thread: with --threads 1 and the event store hung (SIGSTOP), six
    POSTs wait while other requests on other connections are answered at
    once; once the store runs again, every POST gets its 201 (a repeated
    Idempotency-Key its replay, the same key for another order 409). Likewise
    GETs of orders with orderquery hung, and an order's history with the store
    hung again. Before, the one thread sat in the
    first request's call and every other waited behind it."""
    import os
    import signal
    import threading
    import time
    import urllib.request
    from harness import BUILD, Service
    args = ["--http-addr", "127.0.0.1:0", "--orderquery-addr", c.query_target(), "--eventstore-addr",
            f"127.0.0.1:{c.es_port}", "--timeout-ms", "8000", "--threads", "1"]
    api = Service(c, "orderapi-one-thread", os.path.join(BUILD, "orderapi", "orderapi"), args, True)
    c.services["orderapi-one-thread"] = api
    base = f"http://127.0.0.1:{api.port}"

    def call(out, i, method, path, body=None, key=None):
        h = {"Content-Type": "application/json"}
        if key:
            h["Idempotency-Key"] = key
        req = urllib.request.Request(base + path, data=body.encode() if body else None, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                out[i] = (r.status, r.headers.get("Idempotent-Replayed"), time.time(), json.loads(r.read()))
        except urllib.error.HTTPError as e:
            out[i] = (e.code, None, time.time(), None)
        except OSError as e:
            out[i] = (str(e), None, time.time(), None)

    def while_hung(pid, what, requests):
        """Runs @requests (method, path, body, key) at once while @pid is stopped; then lets it go on."""
        out = {}
        os.kill(pid, signal.SIGSTOP)
        try:
            workers = [threading.Thread(target=call, args=(out, i) + r) for i, r in enumerate(requests)]
            for w in workers:
                w.start()
            time.sleep(1.0)
            waiting = len(requests) - len(out)
            times = []
            for path in ("/openapi.json", "/api/orders/not-a-uuid", "/api/nothing"):
                start = time.time()
                r = subprocess.run(["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", base + path],
                                   capture_output=True, timeout=10)
                times.append((path, r.stdout.decode(), round(time.time() - start, 2)))
            t.ok(waiting == len(requests) and all(took < 1.0 for _, _, took in times)
                 and [code for _, code, _ in times] == ["200", "400", "404"],
                 f"while {waiting} requests waited on {what}, one HTTP thread answered the rest at once: {times}")
            resumed = time.time()
        finally:
            os.kill(pid, signal.SIGCONT)
        for w in workers:
            w.join(timeout=30)
        return [out.get(i, ("none", None, 0, None)) for i in range(len(requests))], resumed

    posts, resumed = while_hung(c.es_proc.pid, "a hung event store",
                                [("POST", "/api/orders", with_(customer_id=f"c-wait-{i}"), f"wait-{i}") for i in range(6)])
    t.ok(all(p[0] == 201 and p[2] >= resumed for p in posts),
         f"each waiting POST got its 201 once the store ran again: {[p[0] for p in posts]}")
    again = {}
    call(again, 0, "POST", "/api/orders", with_(customer_id="c-wait-0"), "wait-0")
    t.ok(again[0][:2] == (201, "true"), f"a repeated Idempotency-Key is answered as a replay: {again[0][:2]}")
    call(again, 1, "POST", "/api/orders", with_(customer_id="c-wait-0", item_quantity=7), "wait-0")
    t.ok(again[1][0] == 409, f"the same key for a different order: {again[1][0]}")
    ids = [p[3]["order_id"] for p in posts if p[0] == 201]
    for i in ids:
        c.final_status(i)
    gets, resumed = while_hung(c.services["orderquery-1"].proc.pid, "a hung read model",
                               [("GET", f"/api/orders/{i}") for i in ids] + [("GET", "/api/orders?limit=3")])
    t.ok(len(ids) == 6 and all(g[0] == 200 and g[2] >= resumed for g in gets)
         and [g[3]["order_id"] for g in gets[:-1]] == ids and len(gets[-1][3]["orders"]) == 3,
         f"each waiting GET got its order (or page) once the read model ran again: {[g[0] for g in gets]}")
    hist, resumed = while_hung(c.es_proc.pid, "a hung event store (history)",
                               [("GET", f"/api/orders/{i}/events") for i in ids[:3]]
                               + [("GET", f"/api/orders/{i}?at=2100-01-01T00:00:00Z") for i in ids[3:]])
    t.ok(all(h[0] == 200 and h[2] >= resumed for h in hist)
         and all(h[3]["events"][0]["type"] == "order-created" for h in hist[:3])
         and [h[3]["order_id"] for h in hist[3:]] == ids[3:] and all(h[3]["as_of_position"] > 0 for h in hist[3:]),
         f"each waiting history request got its events (or its folded order) once the store ran again: {[h[0] for h in hist]}")
    t.ok(api.stop() == 0, "that orderapi stops cleanly")
    # stopping with a POST waiting: the answer comes first (a 503 at the call's deadline), then the exit
    short = Service(c, "orderapi-short", os.path.join(BUILD, "orderapi", "orderapi"),
                    [a if a != "8000" else "1500" for a in args], True)
    c.services["orderapi-short"] = short
    base = f"http://127.0.0.1:{short.port}"
    late = {}
    os.kill(c.es_proc.pid, signal.SIGSTOP)
    try:
        w = threading.Thread(target=call, args=(late, 0, "POST", "/api/orders", with_(customer_id="c-stop"), None))
        w.start()
        time.sleep(0.5)
        start = time.time()
        rc = short.stop(timeout=15)
        took = round(time.time() - start, 1)
        w.join(timeout=10)
    finally:
        os.kill(c.es_proc.pid, signal.SIGCONT)
    t.ok(rc == 0 and late.get(0, ("none",))[0] == 503 and took < 5,
         f"SIGTERM with a POST waiting: the POST answered {late.get(0, ('none',))[0]}, exit {rc} after {took} s")


if __name__ == "__main__":
    run_tests([test_good_order, test_bad_bodies, test_paging, test_pages_read_only_their_rows, test_routes,
               test_slow_clients_at_one_address, test_waiting_requests_hold_no_thread], lambda: FlowCluster(queries=1))
