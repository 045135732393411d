"""Test harness: a real PostgreSQL, a real nats-server and the real eventstore,
started on free loopback ports in a private temp folder and stopped afterwards
(only the processes started here, by PID).

The event store is driven with grpcio stubs generated from proto/ at start:
an independent client, not our C code.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("ORDO_BUILD", os.path.join(ROOT, "build"))
EVENTSTORE = os.path.join(BUILD, "eventstore", "eventstore")
ORDOCTL = os.path.join(BUILD, "tools", "ordoctl")
PG_BIN = sorted(
    (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")),
    key=lambda p: int(p.split("/")[-2]),
)[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_for(cond, timeout=15.0, what="condition"):
    """Polls cond() until it returns a truthy value; bounded."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def settled_value(read, quiet_s=1.5, timeout_s=20):
    """read()'s value once it has not changed for quiet_s (bounded by timeout_s):
    e.g. PostgreSQL's statistics, which a backend publishes within ~10 s."""
    deadline, value = time.time() + timeout_s, read()
    while time.time() < deadline:
        time.sleep(quiet_s)
        again = read()
        if again == value:
            return value
        value = again
    return value


def read_from(path, offset):
    """A log's text after offset (e.g. its size before a test's window)."""
    with open(path) as f:
        f.seek(offset)
        return f.read()


def load_stubs(workdir):
    out = os.path.join(workdir, "stubs")
    os.makedirs(out, exist_ok=True)
    subprocess.run(
        ["protoc", f"-I{ROOT}/proto", f"--python_out={out}", f"--grpc_out={out}",
         "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "eventstore.proto", "order.proto"],
        check=True)
    sys.path.insert(0, out)
    import eventstore_pb2
    import eventstore_pb2_grpc
    return eventstore_pb2, eventstore_pb2_grpc


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Cluster:
    """PostgreSQL + nats-server + eventstore for one test file."""

    IDENTITIES = ["eventstore", "orderquery", "orderapi", "paymentsvc", "restaurantsvc", "admin", "nats", "postgres"]

    def __init__(self, nats=True, nats_config=None, tls=False, **es_flags):
        self.dir = tempfile.mkdtemp(prefix="ordo-test-")
        os.chmod(self.dir, 0o755)
        self.certs = None
        if tls:   # a local CA and a certificate per identity (scripts/certs.sh); every gRPC hop on TLS
            self.certs = os.path.join(self.dir, "certs")
            run(["bash", os.path.join(ROOT, "scripts", "certs.sh"), self.certs] + self.IDENTITIES)
            # and a NATS user per service with exactly its permissions (scripts/nats-conf.sh)
            run(["bash", os.path.join(ROOT, "scripts", "nats-conf.sh"), self.certs])
            nats_config = open(os.path.join(self.certs, "nats.conf")).read()
        self.es_proc = None
        self.nats_proc = None
        self.nats_port = free_port()
        self.nats_config = nats_config
        self.es_flags = es_flags
        self.pb, self.grpc_mod = load_stubs(self.dir)
        self._start_pg()
        if nats:
            self.start_nats()
        self.start_es()

    # ---- PostgreSQL
    def _start_pg(self):
        pgdir = os.path.join(self.dir, "pg")
        os.makedirs(pgdir)
        shutil.chown(pgdir, "postgres", "postgres")
        os.chmod(pgdir, 0o700)
        run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/initdb", "-D", f"{pgdir}/data", "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"], cwd="/")
        self.pgdir = pgdir
        for _ in range(5):
            self.pg_port = free_port()
            r = subprocess.run(
                ["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", f"{pgdir}/data", "-l", f"{pgdir}/log",
                 "-w", "-t", "30", "-o",
                 f"-p {self.pg_port} -k {pgdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                 "start"], cwd="/", capture_output=True, text=True)
            if r.returncode == 0:
                break
        else:
            raise RuntimeError("cannot start PostgreSQL: " + open(f"{pgdir}/log").read()[-2000:])
        run(["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-qAt", "-c",
             "CREATE DATABASE ordo"])
        self.database_url = f"postgresql://postgres@127.0.0.1:{self.pg_port}/ordo"

    def pg_stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", f"{self.pgdir}/data",
                        "-m", "fast", "-w", "stop"], cwd="/", capture_output=True)

    def pg_start_again(self):
        run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", f"{self.pgdir}/data", "-l",
             f"{self.pgdir}/log", "-w", "-t", "30", "-o",
             f"-p {self.pg_port} -k {self.pgdir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
             "start"], cwd="/")

    def db(self):
        import psycopg2
        conn = psycopg2.connect(self.database_url)
        conn.autocommit = True
        return conn

    def sql(self, query, *args):
        with self.db() as conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else None

    def cut_connections(self, application_name, rounds, every_s):
        """Terminates every PostgreSQL connection named application_name, rounds
        times, every_s apart (while a load runs); returns how many it cut."""
        cut = 0
        for _ in range(rounds):
            time.sleep(every_s)
            cut += self.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE application_name = %s", application_name)[0][0]
        return cut

    # ---- NATS
    @property
    def nats_url(self):
        return f"nats://127.0.0.1:{self.nats_port}"

    def start_nats(self):
        cmd = ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.nats_port), "-sd", os.path.join(self.dir, "js")]
        if self.nats_config:
            path = os.path.join(self.dir, "nats.conf")
            with open(path, "w") as f:
                f.write(self.nats_config)
            cmd += ["-c", path]
        self.nats_proc = subprocess.Popen(cmd, stdout=open(os.path.join(self.dir, "nats.log"), "ab"),
                                          stderr=subprocess.STDOUT)
        wait_port(self.nats_port)

    def nats_request(self, subject, body=b"", timeout=5.0):
        """One request over the plain NATS protocol (e.g. a JetStream API call); returns the reply's body."""
        import socket
        with socket.create_connection(("127.0.0.1", self.nats_port), timeout=timeout) as s:
            f = s.makefile("rb")
            f.readline()   # INFO
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.test 1\r\n'
                      + f"PUB {subject} _INBOX.test {len(body)}\r\n".encode() + body + b"\r\n")
            while True:
                line = f.readline()
                if not line:
                    raise RuntimeError(f"no reply to {subject}")
                if line.startswith(b"MSG "):
                    return f.read(int(line.split()[-1]) + 2)[:-2]
                if line.startswith(b"PING"):
                    s.sendall(b"PONG\r\n")

    def stop_nats(self):
        if self.nats_proc:
            self.nats_proc.terminate()
            self.nats_proc.wait(timeout=10)
            self.nats_proc = None

    # ---- eventstore
    def start_es(self, port=0, **override):
        flags = dict(self.es_flags)
        flags.update(override)
        self.es_log = open(os.path.join(self.dir, "eventstore.log"), "ab")
        cmd = [EVENTSTORE, "--listen", f"127.0.0.1:{port}", "--database-url", self.database_url,
               "--nats-url", self.nats_url]
        for k, v in flags.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        cmd += self.tls_flags("eventstore") + self.nats_flags("eventstore")
        self.es_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.es_log, text=True)
        line = self.es_proc.stdout.readline()
        if not line.startswith("port="):
            self.es_proc.wait(timeout=10)
            raise RuntimeError("eventstore did not start: " + self.log_tail())
        self.es_port = int(line.strip().split("=")[1])
        self.metrics_port = None
        if flags.get("metrics_addr"):
            self.metrics_port = int(self.es_proc.stdout.readline().strip().split("=")[1])
        self.channel = self.grpc_channel(self.es_port)
        self.store = self.grpc_mod.EventStoreStub(self.channel)
        self.admin = self.grpc_mod.EventStoreAdminStub(self.channel)

    # ---- TLS
    def tls_flags(self, identity):
        """A daemon's --tls-* flags for its certificate (none without TLS)."""
        if not self.certs:
            return []
        return ["--tls-ca", self.cert_path("ca.pem"), "--tls-cert", self.cert_path(f"{identity}.pem"),
                "--tls-key", self.cert_path(f"{identity}.key")]

    def nats_flags(self, user):
        """A service's NATS credentials (none without TLS)."""
        if not self.certs:
            return []
        return ["--nats-user", user, "--nats-password-file", self.cert_path(f"nats-{user}.pass"),
                "--nats-ca", self.cert_path("ca.pem")]

    def cert_path(self, name):
        return os.path.join(self.certs, name)

    def grpc_channel(self, port, identity="admin", ca="ca.pem"):
        """A grpcio channel to 127.0.0.1:port: plaintext, or TLS as @identity (None: no client certificate)."""
        import grpc
        if not self.certs:
            return grpc.insecure_channel(f"127.0.0.1:{port}")
        read = lambda name: open(self.cert_path(name), "rb").read()
        creds = grpc.ssl_channel_credentials(read(ca), read(f"{identity}.key") if identity else None,
                                             read(f"{identity}.pem") if identity else None)
        return grpc.secure_channel(f"127.0.0.1:{port}", creds)

    def stop_es(self, sig=signal.SIGTERM, timeout=20):
        """Stops eventstore with sig; returns its exit code."""
        if not self.es_proc:
            return None
        self.channel.close()
        self.es_proc.send_signal(sig)
        rc = self.es_proc.wait(timeout=timeout)
        self.es_proc = None
        return rc

    def log_tail(self, n=4000):
        try:
            return open(os.path.join(self.dir, "eventstore.log")).read()[-n:]
        except OSError:
            return ""

    @property
    def addr(self):
        return f"127.0.0.1:{self.es_port}"

    # ---- helpers
    def event(self, aggregate_id, event_type="thing-happened", data=None, aggregate_type="order", **kw):
        return self.pb.Event(aggregate_id=aggregate_id, aggregate_type=aggregate_type, event_type=event_type,
                             event_data=json.dumps(data if data is not None else {"n": 1}), **kw)

    def append(self, *events, expected=None, timeout=10):
        req = self.pb.CreateEventRequest()
        if len(events) == 1:
            req.event.CopyFrom(events[0])
        else:
            req.events.extend(events)
        if expected is not None:
            req.expected_version = expected
        return self.store.CreateEvent(req, timeout=timeout)

    def stats(self):
        return self.admin.GetStats(self.pb.StatsRequest(), timeout=10)

    def bus_dump(self):
        out = run([ORDOCTL, "bus-dump", "--nats-url", self.nats_url]).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def close(self):
        try:
            self.close_services()
            if self.es_proc:
                self.es_proc.kill()
                self.es_proc.wait(timeout=10)
        finally:
            self.stop_nats()
            self.pg_stop()
            if os.environ.get("ORDO_KEEP_TEST_DIR"):
                print("test folder kept:", self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


    def close_services(self):
        pass


class Service:
    """One Ordo daemon started by a test: its process, log and printed port."""

    def __init__(self, cluster, name, binary, args, wait_port_line):
        self.name = name
        self.log_path = os.path.join(cluster.dir, f"{name}.log")
        self.proc = subprocess.Popen([binary] + args, stdout=subprocess.PIPE, stderr=open(self.log_path, "ab"),
                                     text=True)
        self.port = self.metrics_port = None
        if wait_port_line:
            line = self.proc.stdout.readline()
            if not line.startswith("port="):
                self.proc.wait(timeout=10)
                raise RuntimeError(f"{name} did not start: " + open(self.log_path).read()[-3000:])
            self.port = int(line.strip().split("=")[1])
        if "--metrics-addr" in args:   # printed after port= (if any)
            line = self.proc.stdout.readline()
            if not line.startswith("metrics_port="):
                self.proc.wait(timeout=10)
                raise RuntimeError(f"{name} did not serve /metrics: " + open(self.log_path).read()[-3000:])
            self.metrics_port = int(line.strip().split("=")[1])

    def metrics(self):
        """Its /metrics as {"name{labels}": value}."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                         if line and not line.startswith("#"))}

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.proc = None
        return rc


class FlowCluster(Cluster):
    """Cluster + orderquery x N, paymentsvc, restaurantsvc and orderapi."""

    def __init__(self, queries=2, payment_limit=500, unavailable="SOLD-OUT", **es_flags):
        self.services = {}
        self.payment_limit = payment_limit
        self.unavailable = unavailable
        self.api_key = None
        super().__init__(**es_flags)
        if self.certs:   # orderapi with API keys: a staff key (used by http()) and one for customer c-key
            run(["bash", os.path.join(ROOT, "scripts", "api-keys.sh"), self.certs, "c-key"])
            self.api_key = open(self.cert_path("staff.key")).read().strip()
        for i in range(1, queries + 1):
            self.start_query(i)
        self.start_payment()
        self.start_restaurant()
        self.start_api()

    def _common(self):
        return ["--nats-url", self.nats_url, "--eventstore-addr", f"127.0.0.1:{self.es_port}"]

    def start_query(self, i):
        """Starts orderquery-i; a restart keeps its port, so orderapi finds it again."""
        old = self.services.get(f"orderquery-{i}")
        port = old.port if old else 0
        self.services[f"orderquery-{i}"] = Service(self, f"orderquery-{i}", os.path.join(BUILD, "orderquery", "orderquery"),
                                                   ["--listen", f"127.0.0.1:{port}", "--database-url", self.database_url,
                                                    "--metrics-addr", "127.0.0.1:0"]
                                                   + self._common() + self.tls_flags("orderquery")
                                                   + self.nats_flags("orderquery"), True)

    def start_payment(self):
        self.services["paymentsvc"] = Service(self, "paymentsvc", os.path.join(BUILD, "paymentsvc", "paymentsvc"),
                                              ["--limit", str(self.payment_limit), "--metrics-addr", "127.0.0.1:0"]
                                              + self._common()
                                              + self.tls_flags("paymentsvc") + self.nats_flags("paymentsvc"), False)

    def start_restaurant(self):
        self.services["restaurantsvc"] = Service(self, "restaurantsvc",
                                                 os.path.join(BUILD, "restaurantsvc", "restaurantsvc"),
                                                 ["--unavailable", self.unavailable, "--metrics-addr", "127.0.0.1:0"]
                                                 + self._common()
                                                 + self.tls_flags("restaurantsvc") + self.nats_flags("restaurantsvc"),
                                                 False)

    def query_target(self):
        ports = [s.port for n, s in self.services.items() if n.startswith("orderquery") and s.proc]
        return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)

    def start_api(self, **flags):
        args = ["--http-addr", "127.0.0.1:0", "--orderquery-addr", self.query_target(),
                "--eventstore-addr", f"127.0.0.1:{self.es_port}", "--timeout-ms", "2000"]
        for k, v in flags.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        args += self.tls_flags("orderapi")
        if self.certs:   # HTTPS with orderapi's certificate, and API keys
            args += ["--api-keys-file", self.cert_path("api-keys"), "--https-cert", self.cert_path("orderapi.pem"),
                     "--https-key", self.cert_path("orderapi.key")]
        self.services["orderapi"] = Service(self, "orderapi", os.path.join(BUILD, "orderapi", "orderapi"), args, True)
        scheme = "https" if self.certs else "http"
        self.api = f"{scheme}://127.0.0.1:{self.services['orderapi'].port}"

    def http(self, method, path, body=None, headers=None, raw=None, timeout=10):
        """One HTTP request; returns (status, headers, parsed JSON or text)."""
        import urllib.request
        import urllib.error
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}   # (None: leave the header out)
        req = urllib.request.Request(self.api + path, data=data, method=method, headers=h)
        context = None
        if self.api.startswith("https:"):
            import ssl
            context = ssl.create_default_context(cafile=self.cert_path("ca.pem"))
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
                status, hdrs, text = r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            status, hdrs, text = e.code, dict(e.headers), e.read().decode()
        try:
            return status, hdrs, json.loads(text)
        except ValueError:
            return status, hdrs, text

    def order(self, customer="c-1", code="PIZZA", price=12.5, qty=2, key=None):
        body = {"customer_id": customer, "restaurant_id": "r-1",
                "order_items": [{"code": code, "name": code.title(), "unit_price": price, "quantity": qty}]}
        return self.http("POST", "/api/orders", body, {"Idempotency-Key": key} if key else None)

    def final_status(self, order_id, timeout=20):
        def done():
            st, _, doc = self.http("GET", f"/api/orders/{order_id}")
            if st == 200 and doc["status"] in ("Approved", "PaymentFailed", "Refunded"):
                return doc
            return None
        return wait_for(done, timeout, f"order {order_id} to reach a final status")

    def read_model(self):
        orders = self.sql("SELECT order_id, customer_id, restaurant_id, status, amount_cents, version, created_at,"
                          " updated_at FROM orders ORDER BY order_id")
        items = self.sql("SELECT order_id, line, code, name, unit_price_cents, quantity FROM order_items"
                         " ORDER BY order_id, line")
        return orders, items

    def log_tail(self, n=4000):
        out = super().log_tail(n)
        for name, svc in self.services.items():
            try:
                out += f"\n--- {name}\n" + open(svc.log_path).read()[-1500:]
            except OSError:
                pass
        return out

    def close_services(self):
        for svc in self.services.values():
            if svc.proc:
                svc.proc.kill()
                svc.proc.wait(timeout=10)


class BusTap:
    """Every message published on events.> while it is open, seen as a plain NATS
    subscriber sees it: JetStream drops a re-published copy from the stream (its
    duplicate window), but not from the wire, so the tap counts what the relay
    actually sent. Use as a context manager; counts() maps Nats-Msg-Id to copies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")
        self.file.readline()   # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
                          b"SUB events.> 1\r\nPING\r\n")
        self.seen = []
        while not self.file.readline().startswith(b"PONG"):   # subscribed once the server answers
            pass
        self.sock.settimeout(None)
        import threading
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                line = self.file.readline()
                if not line:
                    return
                if line.startswith(b"PING"):
                    self.sock.sendall(b"PONG\r\n")
                elif line.startswith(b"HMSG "):
                    hlen, total = (int(x) for x in line.split()[-2:])
                    block = self.file.read(total + 2)
                    for h in block[:hlen].decode().split("\r\n")[1:]:
                        if h.lower().startswith("nats-msg-id:"):
                            self.seen.append(h.split(":", 1)[1].strip())
                elif line.startswith(b"MSG "):
                    self.file.read(int(line.split()[-1]) + 2)
                    self.seen.append(None)
        except (OSError, ValueError):
            return

    def counts(self):
        import collections
        return collections.Counter(self.seen)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CommitDropProxy:
    """A TCP proxy to PostgreSQL that loses the answer to one COMMIT. Once armed
    with a marker (a parameter value the transaction sends, e.g. an aggregate id),
    the first connection that sends the marker and then COMMIT has everything
    passed on both ways but the server's CommandComplete for that COMMIT and what
    follows it: the transaction commits, its statements' results reach the
    client, and then both sides are cut. What the client sees is a COMMIT whose
    outcome is unknown. The database URL must not ask for TLS (sslmode=disable)."""

    def __init__(self, pg_port):
        import threading
        self.pg_port = pg_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.marker = None
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker):
        with self.lock:
            self.marker = marker.encode()

    def _accept(self):
        import threading
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.pg_port), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            conn = {"client": client, "server": server, "marked": False, "dropping": False}
            threading.Thread(target=self._up, args=(conn,), daemon=True).start()
            threading.Thread(target=self._down, args=(conn,), daemon=True).start()

    def _up(self, conn):
        """client -> server, watching for the marker and then COMMIT."""
        try:
            while True:
                data = conn["client"].recv(65536)
                if not data:
                    break
                with self.lock:
                    if self.marker is not None and self.marker in data:
                        conn["marked"] = True
                    if conn["marked"] and self.marker is not None and b"COMMIT" in data:
                        conn["dropping"] = True
                        self.marker = None
                conn["server"].sendall(data)
        except OSError:
            pass
        self._cut(conn)

    def _down(self, conn):
        """server -> client, message by message once dropping: up to the COMMIT's answer."""
        held = b""
        try:
            while True:
                data = conn["server"].recv(65536)
                if not data:
                    break
                if not conn["dropping"]:
                    conn["client"].sendall(data)
                    continue
                held += data
                while len(held) >= 5 and len(held) >= 1 + int.from_bytes(held[1:5], "big"):
                    n = 1 + int.from_bytes(held[1:5], "big")
                    msg, held = held[:n], held[n:]
                    if msg[:1] == b"C" and msg[5:].startswith(b"COMMIT"):
                        with self.lock:
                            self.dropped += 1
                        raise OSError("the COMMIT's answer is lost")
                    conn["client"].sendall(msg)
        except OSError:
            pass
        self._cut(conn)

    @staticmethod
    def _cut(conn):
        for k in ("client", "server"):
            try:
                conn[k].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn[k].close()

    def close(self):
        self.listener.close()


class Checks:
    """Counts checks; prints the closing line 'N passed, N failed'."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, cond, what):
        if cond:
            self.passed += 1
            print(f"ok - {what}")
        else:
            self.failed += 1
            print(f"FAIL - {what}")
        return cond

    def eq(self, got, want, what):
        return self.ok(got == want, f"{what} (got {got!r}, want {want!r})" if got != want else what)

    def raises(self, code, fn, what, contains=None):
        import grpc
        try:
            fn()
        except grpc.RpcError as e:
            good = e.code() == code and (contains is None or contains in (e.details() or ""))
            return self.ok(good, f"{what}: {e.code().name} \"{e.details()}\"")
        return self.ok(False, f"{what}: no error raised (want {code.name})")

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


def run_tests(tests, cluster_factory):
    """Runs each test function against a cluster; exceptions count as failures."""
    checks = Checks()
    cluster = cluster_factory()
    try:
        for t in tests:
            print(f"# {t.__name__}")
            try:
                t(cluster, checks)
            except Exception as e:  # a crashed test is a failed test, and the next still runs
                import traceback
                traceback.print_exc()
                checks.ok(False, f"{t.__name__} raised {type(e).__name__}: {e}")
                print(cluster.log_tail())
    finally:
        cluster.close()
    checks.finish()
