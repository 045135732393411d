#!/usr/bin/python3
"""gRPC with TLS and client certificates, NATS with TLS and a user per service:
the whole order flow on both, a forged publish on events.> refused, clients
without a certificate or from another CA refused, each role allowed exactly its
methods on the event store and on orderquery, refusals logged with the identity
and method (and no key in any log), ordoctl's TLS options, and a plaintext
server refused on an address other than loopback. Negative cases first."""
import os
import subprocess
import uuid

import grpc

from harness import BUILD, EVENTSTORE, ORDOCTL, FlowCluster, Service, run, run_tests

C = grpc.StatusCode
CERTS_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "certs.sh")
PG_ROLES_SH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "pg-roles.sh")
ROLES = {"orderquery": "reader", "orderapi": "writer", "paymentsvc": "writer", "admin": "admin"}


def code_of(fn):
    """The status code a call ends with (OK when it succeeds)."""
    try:
        fn()
        return C.OK
    except grpc.RpcError as e:
        return e.code()


def store_calls(c, identity):
    """Each event store method called as @identity: its status code."""
    ch = c.grpc_channel(c.es_port, identity)
    store, admin = c.grpc_mod.EventStoreStub(ch), c.grpc_mod.EventStoreAdminStub(ch)
    ev = c.event(f"sec-{identity}-{uuid.uuid4()}", aggregate_type="sectest")

    def stream():   # past the door it waits for events: running into its deadline means it was let in
        try:
            for _ in store.GetEventsStream(c.pb.GetEventsRequest(from_position=0), timeout=2):
                return
        except grpc.RpcError as e:
            if e.code() != C.DEADLINE_EXCEEDED:
                raise
    codes = {
        "CreateEvent": code_of(lambda: store.CreateEvent(c.pb.CreateEventRequest(event=ev), timeout=10)),
        "GetEvents": code_of(lambda: store.GetEvents(c.pb.GetEventsRequest(limit=1), timeout=10)),
        "GetEventsStream": code_of(stream),
        "GetStats": code_of(lambda: admin.GetStats(c.pb.StatsRequest(), timeout=10)),
        "Republish": code_of(lambda: admin.Republish(c.pb.RepublishRequest(from_position=10**12), timeout=10)),
        "ListParked": code_of(lambda: admin.ListParked(c.pb.ListParkedRequest(limit=1), timeout=10)),
        "ReplayParked": code_of(lambda: admin.ReplayParked(c.pb.ReplayParkedRequest(durable="nobody"), timeout=10)),
    }
    ch.close()
    return codes


def test_plaintext_client_refused(c, t):
    t.eq(code_of(lambda: c.grpc_mod.EventStoreStub(grpc.insecure_channel(c.addr)).GetEvents(
        c.pb.GetEventsRequest(limit=1), timeout=5)), C.UNAVAILABLE, "a plaintext client gets no answer from a TLS store")


def test_client_without_certificate(c, t):
    ch = c.grpc_channel(c.es_port, identity=None)
    t.raises(C.UNAUTHENTICATED, lambda: c.grpc_mod.EventStoreStub(ch).GetEvents(c.pb.GetEventsRequest(limit=1),
                                                                               timeout=5),
             "a client without a certificate is refused", contains="client certificate is required")
    ch.close()


def test_certificates_of_another_ca(c, t):
    rogue = os.path.join(c.dir, "rogue")
    run(["bash", CERTS_SH, rogue, "admin"])
    read = lambda path: open(path, "rb").read()
    # an "admin" certificate from another CA: the store does not accept it
    creds = grpc.ssl_channel_credentials(read(c.cert_path("ca.pem")), read(f"{rogue}/admin.key"),
                                         read(f"{rogue}/admin.pem"))
    ch = grpc.secure_channel(c.addr, creds)
    t.eq(code_of(lambda: c.grpc_mod.EventStoreStub(ch).GetEvents(c.pb.GetEventsRequest(limit=1), timeout=5)),
         C.UNAVAILABLE, "a client certificate from another CA is refused at the handshake")
    ch.close()
    # a client that trusts only the other CA does not accept the store
    creds = grpc.ssl_channel_credentials(read(f"{rogue}/ca.pem"), read(c.cert_path("admin.key")),
                                         read(c.cert_path("admin.pem")))
    ch = grpc.secure_channel(c.addr, creds)
    t.eq(code_of(lambda: c.grpc_mod.EventStoreStub(ch).GetEvents(c.pb.GetEventsRequest(limit=1), timeout=5)),
         C.UNAVAILABLE, "a client does not accept a server certificate its CA did not sign")
    ch.close()
    # a CA bundle (how a CA is rotated, docs/security.md): the new and the old CA in one file
    creds = grpc.ssl_channel_credentials(read(f"{rogue}/ca.pem") + read(c.cert_path("ca.pem")),
                                         read(c.cert_path("admin.key")), read(c.cert_path("admin.pem")))
    ch = grpc.secure_channel(c.addr, creds)
    t.eq(code_of(lambda: c.grpc_mod.EventStoreStub(ch).GetEvents(c.pb.GetEventsRequest(limit=1), timeout=5)),
         C.OK, "a client trusting a bundle of two CAs accepts the store")
    ch.close()


def test_unknown_identity(c, t):
    run(["bash", CERTS_SH, c.certs, "mallory"])
    ch = c.grpc_channel(c.es_port, "mallory")
    t.raises(C.UNAUTHENTICATED, lambda: c.grpc_mod.EventStoreStub(ch).GetEvents(c.pb.GetEventsRequest(limit=1),
                                                                               timeout=5),
             "a certificate of the CA whose name has no role is refused", contains="mallory has no role")
    ch.close()


def test_roles_on_the_event_store(c, t):
    allowed = {
        "reader": {"GetEvents", "GetEventsStream", "GetStats"},
        "writer": {"CreateEvent", "GetEvents", "GetEventsStream", "GetStats"},
        "admin": {"CreateEvent", "GetEvents", "GetEventsStream", "GetStats", "Republish", "ListParked", "ReplayParked"},
    }
    for identity, role in ROLES.items():
        codes = store_calls(c, identity)
        want = {m: (C.OK if m in allowed[role] else C.PERMISSION_DENIED) for m in codes}
        t.eq(codes, want, f"{identity} ({role}) may call exactly {sorted(allowed[role])}")


def test_roles_on_orderquery(c, t):
    import order_pb2
    import order_pb2_grpc
    port = c.services["orderquery-1"].port
    for identity, role in [("orderquery", "reader"), ("orderapi", "writer")]:
        ch = c.grpc_channel(port, identity)
        q = order_pb2_grpc.OrderQueryStub(ch)
        t.eq(code_of(lambda: q.ListOrders(order_pb2.ListOrdersRequest(limit=1), timeout=10)), C.OK,
             f"{identity} ({role}) may list orders")
        t.eq(code_of(lambda: q.Health(order_pb2.HealthRequest(), timeout=10)), C.OK, f"{identity} may ask Health")
        t.raises(C.PERMISSION_DENIED, lambda: q.Rebuild(order_pb2.RebuildRequest(), timeout=10),
                 f"{identity} ({role}) may not rebuild the read model", contains="may not call /order.OrderQuery/Rebuild")
        ch.close()
    orders_before = c.sql("SELECT count(*) FROM orders")[0][0]
    ch = c.grpc_channel(port, "admin")
    r = order_pb2_grpc.OrderQueryStub(ch).Rebuild(order_pb2.RebuildRequest(), timeout=60)
    t.eq(r.orders, orders_before, "admin may rebuild it")
    ch.close()


def test_order_flow_over_tls(c, t):
    """orderapi, paymentsvc, restaurantsvc and orderquery reach the store, and
    orderapi reaches orderquery, each with its own certificate."""
    for code, want in [("PIZZA", "Approved"), ("SOLD-OUT", "Refunded")]:
        st, _, doc = c.order(customer="c-tls", code=code)
        t.eq(st, 201, f"POST /api/orders over TLS to the store ({code})")
        if st == 201:
            t.eq(c.final_status(doc["order_id"])["status"], want, f"the saga runs on TLS: {want}")
    st, _, doc = c.http("GET", "/healthz")
    t.eq((st, doc.get("eventstore"), doc.get("orderquery")), (200, True, True), "/healthz reaches both over TLS")


def test_refusals_logged_without_secrets(c, t):
    log = open(os.path.join(c.dir, "eventstore.log")).read()
    t.ok('msg="grpc call refused" identity="orderquery" role=reader method=/eventstore.EventStore/CreateEvent '
         'status=permission_denied' in log, "a refusal is logged with the identity, its role and the method")
    t.ok('identity="" role=none method=/eventstore.EventStore/GetEvents status=unauthenticated' in log,
         "so is a call without a certificate")
    keys = [open(c.cert_path(f"{n}.key")).read().split("\n")[1] for n in c.IDENTITIES]
    logs = [os.path.join(c.dir, f) for f in os.listdir(c.dir) if f.endswith(".log")]
    leaked = [p for p in logs for k in keys if k and k in open(p, errors="replace").read()]
    t.ok(not leaked and all("PRIVATE KEY" not in open(p, errors="replace").read() for p in logs),
         f"no private key in any of the {len(logs)} logs")


def test_ordoctl_options(c, t):
    tls = ["--ca", c.cert_path("ca.pem"), "--cert", c.cert_path("admin.pem"), "--key", c.cert_path("admin.key")]
    r = subprocess.run([ORDOCTL, "stats", "--addr", c.addr] + tls, capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0 and '"events"' in r.stdout, f"ordoctl stats as admin over TLS: {r.stdout[:80]}")
    env = dict(os.environ, ORDO_CA=c.cert_path("ca.pem"), ORDO_CERT=c.cert_path("orderquery.pem"),
               ORDO_KEY=c.cert_path("orderquery.key"))
    r = subprocess.run([ORDOCTL, "republish", "--addr", c.addr], capture_output=True, text=True, timeout=30, env=env)
    t.ok(r.returncode != 0 and '"code":"permission_denied"' in r.stdout,
         f"ordoctl takes ORDO_CA, ORDO_CERT, ORDO_KEY; a reader may not republish: {r.stdout.strip()[:160]}")
    r = subprocess.run([ORDOCTL, "stats", "--addr", c.addr] + tls[:4], capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and "TLS needs --key" in r.stdout, f"a missing --key is named: {r.stdout.strip()}")
    r = subprocess.run([ORDOCTL, "stats", "--addr", c.addr] + tls[:5] + ["/no/such.key"], capture_output=True,
                       text=True, timeout=30)
    t.ok(r.returncode != 0 and "--key /no/such.key: No such file or directory" in r.stdout,
         f"an unreadable --key is named: {r.stdout.strip()}")


def nats_session(c, user):
    """A raw NATS connection as @user (None: anonymous), verbose: each command answered +OK or -ERR.
    Returns (socket, file, the answer to CONNECT)."""
    import socket
    import ssl
    s = socket.create_connection(("127.0.0.1", c.nats_port), timeout=5)
    info = s.recv(4096)   # INFO says tls_required: the rest goes over TLS
    assert b'"tls_required":true' in info, info
    s = ssl.create_default_context(cafile=c.cert_path("ca.pem")).wrap_socket(s, server_hostname="127.0.0.1")
    f = s.makefile("rb")
    opts = {"verbose": True, "pedantic": False, "headers": True}
    if user:
        opts.update(user=user, **{"pass": open(c.cert_path(f"nats-{user}.pass")).read().strip()})
    import json
    s.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
    answer = f.readline().decode().strip()
    while answer == "+OK":   # then the PONG, unless the server closed the connection
        line = f.readline().decode().strip()
        if line in ("PONG", ""):
            break
    return s, f, answer


def stream_messages(c):
    """How many messages the EVENTS stream holds, asked as the read-only NATS user."""
    import json
    s, f, ok = nats_session(c, "reader")
    s.sendall(b"SUB _INBOX_reader.t 1\r\nPUB $JS.API.STREAM.INFO.EVENTS _INBOX_reader.t 0\r\n\r\n")
    while True:
        line = f.readline()
        if line.startswith(b"MSG "):
            info = json.loads(f.read(int(line.split()[-1]) + 2)[:-2])
            s.close()
            return info["state"]["messages"]


def test_forged_publish_refused(c, t):
    """The attack of the issue: a raw publish on events.> with forged Ordo-* headers.
    Only the event store's user may publish there; nobody connects without a user."""
    before = stream_messages(c)
    s, f, answer = nats_session(c, None)
    t.ok("Authorization Violation" in answer, f"an anonymous NATS connection is refused: {answer}")
    s.close()
    hdr = (b"NATS/1.0\r\nNats-Msg-Id: " + str(uuid.uuid4()).encode() + b"\r\nOrdo-Event-Type: order-payment-debited"
           b"\r\nOrdo-Aggregate-Id: forged-1\r\nOrdo-Aggregate-Type: order\r\nOrdo-Version: 1\r\n\r\n")
    for user in ("paymentsvc", "restaurantsvc", "orderquery", "reader"):
        s, f, answer = nats_session(c, user)
        t.eq(answer, "+OK", f"{user} connects with its password")
        s.sendall(b"HPUB events.order.order-payment-debited %d %d\r\n" % (len(hdr), len(hdr) + 2) + hdr + b"{}\r\n")
        reply = f.readline().decode().strip()
        t.ok("Permissions Violation for Publish" in reply, f"{user} may not publish on events.>: {reply}")
        s.close()
    t.eq(stream_messages(c), before, "nothing forged reached the EVENTS stream")
    st, _, doc = c.order(customer="c-nats")
    t.eq(c.final_status(doc["order_id"])["status"] if st == 201 else st, "Approved",
         "the services, each with its own NATS user, still run the saga")


def test_nats_secrets_not_logged(c, t):
    passwords = [open(c.cert_path(f"nats-{u}.pass")).read().strip()
                 for u in ("eventstore", "paymentsvc", "restaurantsvc", "orderquery", "reader")]
    logs = [os.path.join(c.dir, f) for f in os.listdir(c.dir) if f.endswith(".log") and f != "nats.log"]
    leaked = [p for p in logs for pw in passwords if pw in open(p, errors="replace").read()]
    t.ok(not leaked, f"no NATS password in any of the {len(logs)} service logs")
    reader = c.nats_flags("reader")
    r = subprocess.run([ORDOCTL, "consumers", "--nats-url", c.nats_url] + reader, capture_output=True, text=True,
                       timeout=30)
    t.ok(r.returncode == 0 and '"name":"orderquery"' in r.stdout, f"ordoctl consumers as the read-only user: {r.stdout[:120]}")
    r = subprocess.run([ORDOCTL, "consumer-reset", "--durable", "orderquery", "--nats-url", c.nats_url] + reader,
                       capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and '"permission_denied"' in r.stdout and "does not permit" in r.stdout,
         f"but it may not delete a durable, and is told so (not a timeout): {r.stdout.strip()[:200]}")
    r = subprocess.run([ORDOCTL, "consumers", "--nats-url", c.nats_url] + reader[:4], capture_output=True, text=True,
                       timeout=30)
    t.ok(r.returncode != 0, f"NATS is TLS only: without --nats-ca no connection: {r.stdout.strip()[:160]}")


def test_api_keys(c, t):
    """orderapi with API keys: none or an unknown one is 401 with WWW-Authenticate; a customer's
    key places and reads its own orders only (another's order is 404, as if absent); listing
    every customer's orders needs staff; /healthz stays open. The key file holds no key."""
    customer = open(c.cert_path("customer.key")).read().strip()
    staff = c.api_key
    as_customer = {"Authorization": f"Bearer {customer}"}
    t.ok(c.api.startswith("https://"), f"orderapi serves HTTPS: {c.api}")
    r = subprocess.run(["curl", "-s", "-i", "--cacert", c.cert_path("ca.pem"), f"{c.api}/api/orders?limit=1"],
                       capture_output=True, text=True, timeout=30)
    t.ok(r.stdout.startswith("HTTP/1.1 401") and 'WWW-Authenticate: Bearer realm="ordo"' in r.stdout,
         f"no key: 401 with WWW-Authenticate (curl over HTTPS): {r.stdout.splitlines()[0] if r.stdout else r.stderr}")
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{c.api}/healthz"], capture_output=True,
                       text=True, timeout=30)
    t.eq(r.stdout, "000", "a client that does not trust the CA gets no answer")
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{c.services['orderapi'].port}/healthz"], capture_output=True, text=True,
                       timeout=30)
    t.ok(r.stdout != "200", f"plain HTTP on the HTTPS port is no way in ({r.stdout})")
    st, _, doc = c.http("GET", "/api/orders?limit=1", headers={"Authorization": "Bearer ordo_not_a_key"})
    t.eq((st, doc["error"]["code"]), (401, "unauthenticated"), "an unknown key: 401")
    st, _, _ = c.http("GET", "/healthz", headers={"Authorization": None})
    t.eq(st, 200, "/healthz needs no key")
    body = lambda cust: {"customer_id": cust, "restaurant_id": "r-1",
                         "order_items": [{"code": "PIZZA", "name": "Pizza", "unit_price": 10, "quantity": 1}]}
    st, _, mine = c.http("POST", "/api/orders", body("c-key"), as_customer)
    t.eq(st, 201, "a customer's key orders for its customer")
    st, _, doc = c.http("POST", "/api/orders", body("c-other"), as_customer)
    t.eq((st, doc["error"]["code"]), (403, "permission_denied"), "but not for another customer")
    st, _, theirs = c.http("POST", "/api/orders", body("c-other"))   # staff
    t.eq(st, 201, "staff orders for anyone")
    if st == 201 and "order_id" in mine:
        c.final_status(theirs["order_id"])
        st, _, doc = c.http("GET", f"/api/orders/{mine['order_id']}", headers=as_customer)
        t.eq(st, 200, "a customer reads its own order")
        st, _, doc = c.http("GET", f"/api/orders/{theirs['order_id']}", headers=as_customer)
        t.eq((st, doc["error"]["code"]), (404, "not_found"), "another customer's order is 404 for it, as if absent")
    st, _, doc = c.http("GET", "/api/orders?customer_id=c-key", headers=as_customer)
    t.ok(st == 200 and doc["orders"] and all(o["customer_id"] == "c-key" for o in doc["orders"]),
         f"it lists its own orders ({st})")
    for query in ("", "?customer_id=c-other"):
        st, _, doc = c.http("GET", f"/api/orders{query}", headers=as_customer)
        t.eq(st, 403, f"but not /api/orders{query}")
    st, _, doc = c.http("GET", "/api/orders?limit=500")
    t.ok(st == 200 and {"c-key", "c-other"} <= {o["customer_id"] for o in doc["orders"]}, "staff lists every customer")
    stored = open(c.cert_path("api-keys")).read()
    t.ok(staff not in stored and customer not in stored, "the key file holds hashes, not keys")
    log = open(os.path.join(c.dir, "orderapi.log")).read()
    t.ok(staff not in log and customer not in log, "no key in orderapi's log")


def test_orderapi_refuses_off_loopback(c, t):
    r = subprocess.run([os.path.join(BUILD, "orderapi", "orderapi"), "--http-addr", "0.0.0.0:0"], capture_output=True,
                       text=True, timeout=30)
    t.ok(r.returncode != 0 and "refusing to serve 0.0.0.0:0 without HTTPS and API keys" in r.stderr
         and "--insecure" in r.stderr, f"orderapi off loopback is refused: {r.stderr.strip()[-200:]}")
    r = subprocess.run([os.path.join(BUILD, "orderapi", "orderapi"), "--http-addr", "127.0.0.1:0", "--https-cert",
                        c.cert_path("orderapi.pem")], capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and "HTTPS needs both --https-cert and --https-key" in r.stderr,
         f"half an HTTPS set-up is refused: {r.stderr.strip()[-160:]}")


def test_metrics_on_their_own_address(c, t):
    """orderapi --metrics-addr: /metrics in plain HTTP there (for a scraper on the host), and
    no longer on the API's address."""
    import urllib.request
    import urllib.error
    args = [os.path.join(BUILD, "orderapi", "orderapi"), "--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
            "--eventstore-addr", c.addr, "--orderquery-addr", c.query_target()] + c.tls_flags("orderapi")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        api_port = int(p.stdout.readline().strip().split("=")[1])
        metrics_port = int(p.stdout.readline().strip().split("=")[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            t.ok(r.status == 200 and "ordo_http_requests_total" in r.read().decode(), "/metrics on --metrics-addr")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=10)
            t.ok(False, "/metrics is no longer on the API's address")
        except urllib.error.HTTPError as e:
            t.eq(e.code, 404, "/metrics is no longer on the API's address")
    finally:
        p.terminate()
        p.wait(timeout=10)


def sql_error(conn, query):
    """The error a statement ends with (None when it succeeds); the transaction is rolled back."""
    import psycopg2
    try:
        with conn.cursor() as cur:
            cur.execute(query)
        conn.rollback()
        return None
    except psycopg2.Error as e:
        conn.rollback()
        return f"{e.pgcode} {e.pgerror.strip().splitlines()[0] if e.pgerror else ''}"


def test_database_roles(c, t):
    """scripts/pg-roles.sh: the event store's role may read and append the log and never change
    or remove it; the read model's role cannot touch the log; and the append-only trigger holds
    even against the owner and a mistaken grant. Both services run with their roles."""
    import psycopg2
    roles = os.path.join(c.dir, "pgroles")
    run(["bash", PG_ROLES_SH, c.database_url, roles])
    passfile = os.path.join(roles, "pgpass")
    t.eq(oct(os.stat(passfile).st_mode & 0o777), "0o600", "the password file is mode 0600")
    url = lambda role: c.database_url.replace("postgres@", f"{role}@")
    es = psycopg2.connect(url("ordo_eventstore"), passfile=passfile)
    rm = psycopg2.connect(url("ordo_readmodel"), passfile=passfile)
    owner = psycopg2.connect(c.database_url)
    for stmt in ("UPDATE events SET event_type = 'x'", "DELETE FROM events", "TRUNCATE events"):
        err = sql_error(es, stmt)
        t.ok(err and err.startswith("42501") and "permission denied" in err, f"ordo_eventstore: {stmt} refused ({err})")
        err = sql_error(owner, stmt)
        t.ok(err and "append-only" in err, f"the owner too, by the trigger: {stmt} ({err})")
    with owner.cursor() as cur:   # a mistaken grant
        cur.execute("GRANT UPDATE, DELETE, TRUNCATE ON events TO ordo_eventstore")
    owner.commit()
    err = sql_error(es, "DELETE FROM events")
    t.ok(err and "append-only" in err, f"after a mistaken grant the trigger still refuses ({err})")
    with owner.cursor() as cur:
        cur.execute("REVOKE UPDATE, DELETE, TRUNCATE ON events FROM ordo_eventstore")
    owner.commit()
    # the one supported removal (docs/security.md): the owner, in one transaction that re-arms the guard
    victim = f"erase-{uuid.uuid4()}"
    c.append(c.event(victim, aggregate_type="sectest"))
    with owner.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
        cur.execute("DELETE FROM events WHERE aggregate_id = %s", (victim,))
        cur.execute("DELETE FROM streams WHERE aggregate_id = %s", (victim,))
        cur.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
        cur.execute("COMMIT")
    t.eq(c.sql("SELECT count(*) FROM events WHERE aggregate_id = %s", victim)[0][0], 0,
         "the documented removal procedure removes the aggregate's events")
    err = sql_error(owner, "DELETE FROM events")
    t.ok(err and "append-only" in err, f"and leaves the guard armed ({err})")
    for stmt in ("SELECT count(*) FROM events", "INSERT INTO outbox VALUES (1)", "CREATE TABLE x (a int)"):
        err = sql_error(rm, stmt)
        t.ok(err and err.startswith("42501"), f"ordo_readmodel: {stmt} refused ({err})")
    t.ok(sql_error(es, "CREATE TABLE x (a int)") is not None, "ordo_eventstore runs no DDL")
    for conn in (es, rm, owner):
        conn.close()

    os.environ["PGPASSFILE"] = passfile
    try:
        store = Service(c, "eventstore-role", EVENTSTORE, ["--listen", "127.0.0.1:0", "--database-url",
                        url("ordo_eventstore"), "--nats-url", c.nats_url] + c.tls_flags("eventstore")
                        + c.nats_flags("eventstore"), True)
        query = Service(c, "orderquery-role", os.path.join(BUILD, "orderquery", "orderquery"),
                        ["--listen", "127.0.0.1:0", "--database-url", url("ordo_readmodel")] + c._common()
                        + c.tls_flags("orderquery") + c.nats_flags("orderquery"), True)
    finally:
        del os.environ["PGPASSFILE"]
    try:
        ch = c.grpc_channel(store.port, "orderapi")
        r = c.grpc_mod.EventStoreStub(ch).CreateEvent(c.pb.CreateEventRequest(event=c.event(
            f"role-{uuid.uuid4()}", aggregate_type="sectest")), timeout=10)
        t.eq(r.is_success, True, "an event store connected as ordo_eventstore appends (its migration step needs no DDL)")
        ch.close()
        import order_pb2
        import order_pb2_grpc
        ch = c.grpc_channel(query.port, "orderapi")
        h = order_pb2_grpc.OrderQueryStub(ch).Health(order_pb2.HealthRequest(), timeout=10)
        n = len(order_pb2_grpc.OrderQueryStub(ch).ListOrders(order_pb2.ListOrdersRequest(limit=5), timeout=10).orders)
        t.ok(h.database and n > 0, f"an orderquery connected as ordo_readmodel serves the read model ({n} orders)")
        ch.close()
        logs = open(store.log_path).read() + open(query.log_path).read()
        t.ok("permission denied" not in logs, "neither logged a permission error")
    finally:
        store.stop()
        query.stop()


def test_database_tls(c, t):
    """PostgreSQL with a certificate from the cluster's CA: sslmode=verify-full connects only to
    it, and the event store's connections go over TLS when its URL says so."""
    import psycopg2
    import shutil
    for name, dst in (("postgres.pem", "server.crt"), ("postgres.key", "server.key")):
        shutil.copy(c.cert_path(name), os.path.join(c.pgdir, dst))
        shutil.chown(os.path.join(c.pgdir, dst), "postgres", "postgres")
        os.chmod(os.path.join(c.pgdir, dst), 0o600)
    conn = psycopg2.connect(c.database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER SYSTEM SET ssl = on")
        cur.execute("ALTER SYSTEM SET ssl_cert_file = %s", (os.path.join(c.pgdir, "server.crt"),))
        cur.execute("ALTER SYSTEM SET ssl_key_file = %s", (os.path.join(c.pgdir, "server.key"),))
        cur.execute("SELECT pg_reload_conf()")
    conn.close()
    verify = f"{c.database_url}?sslmode=verify-full&sslrootcert={c.cert_path('ca.pem')}"
    ok = psycopg2.connect(verify)
    with ok.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        t.eq(cur.fetchone()[0], True, "sslmode=verify-full against the server's certificate: a TLS session")
    ok.close()
    rogue = os.path.join(c.dir, "rogue")
    if not os.path.exists(os.path.join(rogue, "ca.pem")):
        run(["bash", CERTS_SH, rogue, "admin"])
    try:
        psycopg2.connect(f"{c.database_url}?sslmode=verify-full&sslrootcert={rogue}/ca.pem").close()
        t.ok(False, "a client trusting another CA connects")
    except psycopg2.OperationalError as e:
        t.ok("certificate verify failed" in str(e), f"a client trusting another CA does not connect: {str(e).strip()[:120]}")
    store = Service(c, "eventstore-pgtls", EVENTSTORE, ["--listen", "127.0.0.1:0", "--database-url",
                    verify + "&application_name=pgtls",
                    "--nats-url", c.nats_url] + c.tls_flags("eventstore") + c.nats_flags("eventstore"), True)
    try:
        ch = c.grpc_channel(store.port, "orderapi")
        r = c.grpc_mod.EventStoreStub(ch).CreateEvent(c.pb.CreateEventRequest(event=c.event(
            f"pgtls-{uuid.uuid4()}", aggregate_type="sectest")), timeout=10)
        ch.close()
        rows = c.sql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid"
                     " WHERE a.application_name = 'pgtls'")
        t.ok(r.is_success and len(rows) >= 2 and all(x[0] for x in rows),
             f"an event store with sslmode=verify-full appends, every session of it on TLS ({len(rows)} sessions)")
    finally:
        store.stop()


def test_plaintext_refused_off_loopback(c, t):
    r = subprocess.run([EVENTSTORE, "--listen", "0.0.0.0:0", "--database-url", c.database_url, "--nats-url",
                        c.nats_url], capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and "refusing to serve gRPC on 0.0.0.0:0 without TLS" in r.stderr
         and "--insecure" in r.stderr, f"plaintext off loopback is refused, naming the flags: {r.stderr.strip()[-240:]}")
    r = subprocess.run([EVENTSTORE, "--listen", "127.0.0.1:0", "--database-url", c.database_url, "--tls-ca",
                        c.cert_path("ca.pem"), "--tls-cert", c.cert_path("eventstore.pem")],
                       capture_output=True, text=True, timeout=30)
    t.ok(r.returncode != 0 and "TLS needs --tls-key" in r.stderr, f"half a TLS set-up is refused: {r.stderr.strip()[-160:]}")
    r = subprocess.run([EVENTSTORE, "--listen", "127.0.0.1:0", "--metrics-addr", "0.0.0.0:0", "--database-url",
                        c.database_url, "--nats-url", c.nats_url] + c.tls_flags("eventstore") + c.nats_flags("eventstore"),
                       capture_output=True, text=True, timeout=60)
    t.ok(r.returncode != 0 and "refusing to serve 0.0.0.0:0 without HTTPS and API keys: serve /metrics on a "
         "loopback address, or --insecure" in r.stderr,
         f"the event store's plain /metrics off loopback is refused too: {r.stderr.strip()[-200:]}")


if __name__ == "__main__":
    run_tests([test_plaintext_client_refused, test_client_without_certificate, test_certificates_of_another_ca,
               test_unknown_identity, test_roles_on_the_event_store, test_roles_on_orderquery,
               test_order_flow_over_tls, test_forged_publish_refused, test_nats_secrets_not_logged,
               test_refusals_logged_without_secrets, test_ordoctl_options, test_database_roles, test_api_keys,
               test_orderapi_refuses_off_loopback, test_metrics_on_their_own_address, test_database_tls,
               test_plaintext_refused_off_loopback],
              lambda: FlowCluster(tls=True))
