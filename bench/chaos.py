#!/usr/bin/python3
"""The chaos soak (docs/reliability.md, "Proof under faults"): a whole cluster
on loopback — PostgreSQL, nats-server, two event stores, two orderquery,
paymentsvc, restaurantsvc, orderapi — under a supervisor that restarts any
Ordo process that exits; careful clients submitting orders over HTTP at a
fixed rate (an Idempotency-Key on every order, retried with the same key on
503 and timeouts; every saga path); and faults at random times from a
seeded schedule: SIGKILL of each Ordo daemon, SIGKILL of nats-server,
PostgreSQL stopped -m immediate, PostgreSQL read-only, the writer's backend
stopped (SIGSTOP), a burst of orders, a poison message. After the faults
and a bounded settle time it checks what must hold and prints a report.
Bounded in time, loopback only, stops by itself.

    bench/chaos.py [--seconds 90] [--seed N] [--rate 20] [--calm 10] [--gap 2-6]
                   [--settle 120] [--json]

ORDO_BUILD=build-asan runs it on the ASan+UBSan build; any sanitizer report
in a daemon's log fails the run. The test suite runs it twice (ctest
chaos_fixed, chaos_random).

The seed and the schedule are printed first; the same seed gives the same
schedule. Exit status 0 when every invariant holds.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from harness import BUILD, EVENTSTORE, ORDOCTL, PG_BIN, FlowCluster, Service  # noqa: E402

PATHS = [("PIZZA", 5, "Approved"), ("CAVIAR", 600, "PaymentFailed"), ("SOLD-OUT", 5, "Refunded")]
FINAL = {"Approved", "PaymentFailed", "Refunded"}
def run(cmd):
    """A command's result (whatever its exit status), its output as text."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


DAEMONS = ["eventstore-1", "eventstore-2", "orderquery-1", "orderquery-2", "paymentsvc", "restaurantsvc", "orderapi"]


# ---------------------------------------------------------------- the cluster

# The reconciler waits longer than JetStream's AckWait (30 s): a message
# delivered to a service killed before it acknowledged is redelivered after
# AckWait, so an order the reconciler has to re-drive is one whose message
# was truly lost.
RECONCILE_AFTER_S = "45"


class ChaosCluster(FlowCluster):
    """FlowCluster with a second event store; every service knows both."""

    def __init__(self):
        self.es2 = None
        # services start inside FlowCluster.__init__; the second store must be up before them
        super().__init__(reconcile_after_s=int(RECONCILE_AFTER_S), reconcile_every_ms=2000)

    def start_es(self, port=0, **override):
        super().start_es(port=port, **override)
        if getattr(self, "es2", None) is None and not getattr(self, "_es2_started", False):
            self._es2_started = True
            self.start_es2()

    def start_es2(self, port=0):
        self.es2 = Service(self, "eventstore-2", EVENTSTORE,
                           ["--listen", f"127.0.0.1:{port}", "--database-url", self.database_url,
                            "--nats-url", self.nats_url, "--reconcile-after-s", RECONCILE_AFTER_S,
                            "--reconcile-every-ms", "2000"],
                           True)

    def store_targets(self):
        return f"ipv4:127.0.0.1:{self.es_port},127.0.0.1:{self.es2.port}"

    def _common(self):
        return ["--nats-url", self.nats_url, "--eventstore-addr", self.store_targets()]

    def start_api(self, **flags):
        super().start_api(eventstore_addr=self.store_targets(), **flags)

    def proc_of(self, name):
        if name == "eventstore-1":
            return self.es_proc
        if name == "eventstore-2":
            return self.es2.proc if self.es2 else None
        svc = self.services.get(name)
        return svc.proc if svc else None

    def restart(self, name):
        if name == "eventstore-1":
            self.es_proc = None
            self.start_es(port=self.es_port)
        elif name == "eventstore-2":
            self.start_es2(port=self.es2.port)
        elif name.startswith("orderquery-"):
            self.start_query(int(name[-1]))
        elif name == "paymentsvc":
            self.start_payment()
        elif name == "restaurantsvc":
            self.start_restaurant()
        elif name == "orderapi":
            self.start_api()

    def close(self):
        if self.es2 and self.es2.proc:
            self.es2.proc.kill()
            self.es2.proc.wait(timeout=10)
        super().close()


# ---------------------------------------------------------------- the schedule

def schedule(seed, seconds, gap=(2.0, 6.0)):
    """The faults, from the seed (and the run's length and gap) alone: [(at_s, kind, arg)]."""
    rnd = random.Random(seed)
    faults, t = [], 3.0
    kinds = (["kill"] * 6 + ["nats-kill"] * 2 + ["pg-immediate"] * 2 + ["pg-read-only"] + ["writer-stop"] * 2
             + ["burst"] + ["poison"])
    while True:
        t += rnd.uniform(*gap)
        if t > seconds - 5:
            break
        kind = rnd.choice(kinds)
        arg = {"kill": lambda: rnd.choice(DAEMONS), "nats-kill": lambda: round(rnd.uniform(0.5, 3), 1),
               "pg-immediate": lambda: round(rnd.uniform(1, 4), 1), "pg-read-only": lambda: round(rnd.uniform(10, 30), 1),
               "writer-stop": lambda: round(rnd.uniform(1, 4), 1), "burst": lambda: rnd.randint(100, 300),
               "poison": lambda: None}[kind]()
        faults.append((round(t, 1), kind, arg))
        if kind == "pg-read-only":
            t += arg   # one read-only spell at a time
    return faults


# ---------------------------------------------------------------- clients

class Clients:
    """Careful clients: one Idempotency-Key per order, retried with the same key."""

    def __init__(self, c, rate, seed):
        self.c, self.rate = c, rate
        self.rnd = random.Random(seed + 1)
        self.lock = threading.Lock()
        self.accepted = {}          # order_id -> (expected status, submitted at)
        self.outcomes = {"201": 0, "503": 0, "other": 0, "timeout": 0, "retried": 0, "gave_up": 0}
        self.stop = threading.Event()
        self.pool = []

    def _post(self, body, key):
        data = json.dumps(body).encode()
        req = urllib.request.Request(self.c.api + "/api/orders", data=data, method="POST",
                                     headers={"Content-Type": "application/json", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None
        except Exception:   # refused (orderapi restarting), timed out
            return None, None

    def one(self, code, price, expect):
        key = str(uuid.uuid4())
        body = {"customer_id": f"c-{self.rnd.randint(1, 50)}", "restaurant_id": "r-1",
                "order_items": [{"code": code, "name": code.title(), "unit_price": price, "quantity": 1}]}
        start = time.time()
        for attempt in range(60):   # bounded: about a minute of retries
            st, doc = self._post(body, key)
            with self.lock:
                if attempt > 0:
                    self.outcomes["retried"] += 1
                self.outcomes["201" if st == 201 else "503" if st == 503 else "timeout" if st is None else "other"] += 1
            if st == 201:
                with self.lock:
                    self.accepted[doc["order_id"]] = (expect, start)
                return
            if st not in (None, 503):
                return   # a client error: not retried (none expected)
            time.sleep(min(0.2 * (attempt + 1), 1.0))
        with self.lock:
            self.outcomes["gave_up"] += 1

    def _loop(self):
        interval, i = 1.0 / self.rate, 0
        nxt = time.time()
        while not self.stop.is_set():
            code, price, expect = PATHS[i % 3]
            i += 1
            th = threading.Thread(target=self.one, args=(code, price, expect), daemon=True)
            th.start()
            self.pool.append(th)
            nxt += interval
            time.sleep(max(0, nxt - time.time()))

    def start(self):
        self.loop = threading.Thread(target=self._loop, daemon=True)
        self.loop.start()

    def burst(self, n):
        for k in range(n):
            code, price, expect = PATHS[k % 3]
            th = threading.Thread(target=self.one, args=(code, price, expect), daemon=True)
            th.start()
            self.pool.append(th)

    def finish(self, timeout):
        self.stop.set()
        self.loop.join(timeout=10)
        end = time.time() + timeout
        for th in self.pool:
            th.join(timeout=max(0.1, end - time.time()))


# ---------------------------------------------------------------- faults

class Chaos:
    def __init__(self, c, clients, log):
        self.c, self.clients, self.log = c, clients, log
        self.injected = {}          # kind -> count
        self.killed = set()         # names whose exit was ours (the supervisor restarts them)
        self.unexpected = []        # (name, exit code)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.poison_ids = set()

    def note(self, kind, what):
        self.injected[kind] = self.injected.get(kind, 0) + 1
        self.log(f"fault {kind}: {what}")

    def supervise(self):
        while not self.stop.is_set():
            for name in DAEMONS:
                p = self.c.proc_of(name)
                if p is None or p.poll() is None:
                    continue
                with self.lock:
                    ours = name in self.killed
                    self.killed.discard(name)
                if not ours:
                    self.unexpected.append((name, p.returncode))
                    self.log(f"UNEXPECTED exit: {name} rc={p.returncode}")
                try:
                    self.c.restart(name)
                except Exception as e:   # its dependencies down: try again next round
                    self.log(f"restart of {name} failed for now: {e}")
                    continue
            time.sleep(0.2)

    def kill(self, name):
        p = self.c.proc_of(name)
        if p is None or p.poll() is not None:
            return
        with self.lock:
            self.killed.add(name)
        p.send_signal(signal.SIGKILL)
        self.note("kill", name)

    def pg_ctl(self, *args):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", f"{self.c.pgdir}/data"] + list(args),
                       cwd="/", capture_output=True)

    def run(self, kind, arg):
        c = self.c
        if kind == "kill":
            self.kill(arg)
        elif kind == "nats-kill":
            c.nats_proc.send_signal(signal.SIGKILL)
            c.nats_proc.wait(timeout=10)
            self.note(kind, f"down {arg}s")
            time.sleep(arg)
            c.start_nats()
        elif kind == "pg-immediate":
            self.pg_ctl("-m", "immediate", "-w", "stop")
            self.note(kind, f"down {arg}s")
            time.sleep(arg)
            c.pg_start_again()
        elif kind == "pg-read-only":
            self.read_only(True)
            self.note(kind, f"for {arg}s")
            time.sleep(arg)
            self.read_only(False)
        elif kind == "writer-stop":
            rows = c.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'eventstore writer'")
            if rows:
                pid = random.Random(arg).choice(rows)[0]
                os.kill(pid, signal.SIGSTOP)
                self.note(kind, f"backend {pid} for {arg}s")
                time.sleep(arg)
                os.kill(pid, signal.SIGCONT)
        elif kind == "burst":
            self.clients.burst(arg)
            self.note(kind, f"{arg} orders at once")
        elif kind == "poison":
            bad = str(uuid.uuid4())
            r = run([ORDOCTL, "append", "--addr", c.addr, "--aggregate-id", bad, "--aggregate-type", "order",
                     "--type", "order-created", "--data", '{"not":"an order"}', "--expected", "0"])
            if r.returncode == 0:
                self.poison_ids.add(bad)
                self.note(kind, f"order-created that is no order: {bad}")

    def read_only(self, on):
        conn = self.c.db()
        try:
            cur = conn.cursor()
            cur.execute("SET default_transaction_read_only = off")
            cur.execute("ALTER SYSTEM SET default_transaction_read_only = on" if on else
                        "ALTER SYSTEM RESET default_transaction_read_only")
            cur.execute("SELECT pg_reload_conf()")
        finally:
            conn.close()


# ---------------------------------------------------------------- invariants

def percentiles(xs):
    xs = sorted(xs)
    pick = lambda p: round(xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))], 3) if xs else None
    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(xs[-1], 3) if xs else None}


def check(c, clients, chaos, log):
    verdicts = {}
    accepted = dict(clients.accepted)
    rows = {r[0]: r for r in c.sql("SELECT order_id, status FROM orders")}
    wrong = [(o, exp, rows.get(o, (o, None))[1]) for o, (exp, _) in accepted.items()
             if rows.get(o, (o, None))[1] != exp]
    verdicts["every accepted order reached its expected final status"] = (not wrong, f"{len(wrong)} not: {wrong[:5]}")
    last = {r[0]: r[1] for r in c.sql(
        "SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type FROM events WHERE aggregate_type = 'order'"
        " ORDER BY aggregate_id, version DESC")}
    status_of = {"order-approved": "Approved", "order-payment-failed": "PaymentFailed",
                 "order-payment-refunded": "Refunded"}
    mismatch = [o for o in accepted if status_of.get(last.get(o)) != rows.get(o, (o, None))[1]]
    verdicts["each status matches the order's last event"] = (not mismatch, f"{len(mismatch)}: {mismatch[:5]}")
    doubles = c.sql("SELECT aggregate_id, event_type, count(*) FROM events WHERE event_type IN"
                    " ('order-payment-debited','order-payment-refunded','order-approved','order-rejected')"
                    " GROUP BY 1, 2 HAVING count(*) > 1")
    verdicts["no order has a step twice (debit, refund, approval, rejection)"] = (not doubles, str(doubles[:5]))
    orphan = c.sql("SELECT aggregate_id FROM events e WHERE event_type = 'order-payment-refunded' AND NOT EXISTS"
                   " (SELECT 1 FROM events r WHERE r.aggregate_id = e.aggregate_id AND r.event_type = 'order-rejected')")
    verdicts["no refund without a rejection"] = (not orphan, str(orphan[:5]))
    holes = c.sql("SELECT aggregate_id FROM events GROUP BY aggregate_id HAVING min(version) <> 1"
                  " OR max(version) <> count(*)")
    verdicts["every aggregate's versions are 1..n"] = (not holes, str(holes[:5]))
    dup_ids = c.sql("SELECT event_id FROM events GROUP BY event_id HAVING count(*) > 1")
    verdicts["no event id twice"] = (not dup_ids, str(dup_ids[:5]))
    outbox = c.sql("SELECT count(*) FROM outbox")[0][0]
    verdicts["the outbox is empty"] = (outbox == 0, f"{outbox} rows")
    positions = {r[0] for r in c.sql("SELECT position FROM events")}
    on_bus = set()
    for line in run([ORDOCTL, "bus-dump", "--nats-url", c.nats_url]).stdout.splitlines():
        try:
            on_bus.add(int(json.loads(line)["headers"]["Ordo-Position"]))
        except (ValueError, KeyError):
            pass
    missing = sorted(positions - on_bus)
    verdicts["every committed event is in the EVENTS stream"] = (not missing, f"{len(missing)} missing: {missing[:10]}")
    parked = [json.loads(x) for x in run([ORDOCTL, "parked", "list", "--addr", c.addr, "--limit", "1000"]
                                          ).stdout.splitlines() if x.startswith('{"seq"')]
    stray = [p for p in parked if p.get("aggregate_id") not in chaos.poison_ids]
    # each poison is parked by the two durables that read order-created (paymentsvc, orderquery); the
    # reconciler re-drives a poisoned order (it never ends) a few times, and each re-drive parks again
    by = {(p["aggregate_id"], p["durable"]) for p in parked}
    want = {(a, d) for a in chaos.poison_ids for d in ("paymentsvc-order-created", "orderquery")}
    verdicts["nothing parked but the injected poison, and all of it"] = (
        not stray and by == want,
        f"{len(parked)} copies for {len(chaos.poison_ids)} poison messages; missing {sorted(want - by)[:3]};"
        f" not poison: {stray[:3]}")
    verdicts["no Ordo process died but by an injected kill"] = (not chaos.unexpected, str(chaos.unexpected))
    # ordoctl verify audits the same system on its own (docs/operations.md); parked poison is expected
    vr = run([ORDOCTL, "verify", "--database-url", c.database_url, "--addr", c.addr, "--nats-url", c.nats_url])
    found = [json.loads(x) for x in vr.stdout.splitlines() if x.startswith('{"problem"')]
    unexpected = [p for p in found if not (p["problem"] == "consumers" and chaos.poison_ids)]
    verdicts["ordoctl verify finds nothing but the parked poison"] = (
        vr.returncode in (0, 1) and not unexpected, f"rc={vr.returncode} {unexpected[:3]} {vr.stderr[-300:]}")
    sanitizer = []
    for name in os.listdir(c.dir):
        if name.endswith(".log"):
            text = open(os.path.join(c.dir, name), errors="replace").read()
            if "AddressSanitizer" in text or "runtime error:" in text or "LeakSanitizer" in text:
                sanitizer.append(name)
    verdicts["no sanitizer finding"] = (not sanitizer, str(sanitizer))
    # the read model against a rebuild from the store, the live projection stopped
    before = c.sql("SELECT order_id, status, amount_cents, version FROM orders ORDER BY order_id")
    for n in ("orderquery-1", "orderquery-2"):
        c.services[n].stop()
    rb = subprocess.run([os.path.join(BUILD, "orderquery", "orderquery"), "--rebuild", "--database-url",
                         c.database_url, "--eventstore-addr", c.store_targets(), "--nats-url", c.nats_url],
                        capture_output=True, text=True, timeout=300)
    if rb.returncode != 0:
        log("rebuild failed; PostgreSQL's log ends:\n" + open(os.path.join(c.pgdir, "log")).read()[-3000:])
    after = c.sql("SELECT order_id, status, amount_cents, version FROM orders ORDER BY order_id")
    diff = len(set(before) ^ set(after))
    verdicts["the read model equals a rebuild from the store"] = (
        rb.returncode == 0 and diff == 0,
        f"{diff} rows differ; rebuild rc={rb.returncode} {rb.stderr[-400:] if rb.returncode else ''}")
    return verdicts


def redriven_orders(c, poison_ids):
    """Orders, not injected poison, that the reconciler re-drove (its log lines)."""
    out = set()
    for name in os.listdir(c.dir):
        if name.startswith("eventstore") and name.endswith(".log"):
            for line in open(os.path.join(c.dir, name), errors="replace"):
                if "re-driving a stuck order" in line:
                    aid = line.split("aggregate_id=")[1].split()[0]
                    if aid not in poison_ids:
                        out.add(aid)
    return sorted(out)


def keep_logs(c, seed):
    """Copies the cluster's logs out of its directory (removed at the end) to
    /tmp/ordo-chaos-<seed>-<time>/; returns that directory."""
    import shutil
    out = f"/tmp/ordo-chaos-{seed}-{int(time.time())}"
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(c.dir):
        if name.endswith(".log"):
            shutil.copy(os.path.join(c.dir, name), out)
    shutil.copy(os.path.join(c.pgdir, "log"), os.path.join(out, "postgresql.log"))
    return out


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--rate", type=float, default=20, help="orders per second")
    ap.add_argument("--settle", type=float, default=120, help="most seconds to wait for the saga after the faults")
    ap.add_argument("--calm", type=float, default=10, help="seconds of orders without faults first (the calm figures)")
    ap.add_argument("--gap", default="2-6", help="seconds between faults, drawn from LO-HI")
    ap.add_argument("--json", action="store_true", help="print the report as JSON too")
    ap.add_argument("--keep-logs", action="store_true", help="keep the cluster's logs even when the run passes")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    gap = tuple(float(x) for x in a.gap.split("-"))
    plan = schedule(seed, a.seconds, gap)
    t0 = time.time()
    log = lambda msg: print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)
    kinds = {}
    for _, kind, _ in plan:
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"# chaos: seed {seed}, {a.calm:.0f} s calm then {a.seconds:.0f} s of faults, {a.rate:g} orders/s, "
          f"{len(plan)} faults {kinds} "
          f"(repeat with --seed {seed} --seconds {a.seconds:g} --gap {a.gap})", flush=True)
    for at, kind, arg in plan:
        print(f"#   at {a.calm + at:6.1f}s  {kind} {'' if arg is None else arg}")
    c = ChaosCluster()
    ok = False
    try:
        clients = Clients(c, a.rate, seed)
        chaos = Chaos(c, clients, log)
        sup = threading.Thread(target=chaos.supervise, daemon=True)
        sup.start()
        t0 = time.time()
        clients.start()
        calm_until = a.calm   # orders sent before the first fault's lead-in: the calm figures
        for at, kind, arg in plan:
            time.sleep(max(0, a.calm + at - (time.time() - t0)))
            try:
                chaos.run(kind, arg)
            except Exception as e:
                log(f"fault {kind} could not be injected: {e}")
        time.sleep(max(0, a.calm + a.seconds - (time.time() - t0)))
        log("faults over: waiting for the clients' retries and the saga")
        clients.finish(90)
        deadline = time.time() + a.settle

        def all_final():
            final = {r[0] for r in c.sql("SELECT order_id FROM orders WHERE status IN"
                                         " ('Approved','PaymentFailed','Refunded')")}
            return all(o in final for o in clients.accepted)
        while time.time() < deadline and not all_final():
            time.sleep(1)
        settled_in = round(time.time() - (deadline - a.settle), 1)
        chaos.stop.set()
        sup.join(timeout=5)
        times = {r[0]: float(r[1]) for r in c.sql("SELECT order_id, applied_at / 1e6 FROM orders")}
        calm, faulty = [], []
        for o, (_, sent) in clients.accepted.items():
            if o in times:
                (calm if sent - t0 < calm_until else faulty).append(times[o] - sent)
        slowest = sorted(((times[o] - sent, o) for o, (_, sent) in clients.accepted.items() if o in times),
                         reverse=True)[:3]
        redriven = redriven_orders(c, chaos.poison_ids)
        verdicts = check(c, clients, chaos, log)
        ok = all(v for v, _ in verdicts.values())
        report = {"seed": seed, "seconds": a.seconds, "rate": a.rate, "faults": chaos.injected,
                  "orders": {"accepted": len(clients.accepted), **clients.outcomes},
                  "settled_after_faults_s": settled_in,
                  "slowest": [{"order_id": o, "s": round(t, 3)} for t, o in slowest],
                  "redriven_by_reconciler": redriven,
                  "time_to_final_s": {"calm": percentiles(calm), "during_faults": percentiles(faulty)},
                  "invariants": {k: {"ok": v, "detail": d} for k, (v, d) in verdicts.items()}}
        print("\n# report")
        print(f"faults injected: {chaos.injected}")
        print(f"orders: {report['orders']}")
        print(f"time to final status (s): calm {report['time_to_final_s']['calm']}, "
              f"during faults {report['time_to_final_s']['during_faults']}; settled {settled_in}s after the faults")
        print(f"slowest orders: {report['slowest']}")
        print(f"accepted orders the reconciler had to re-drive (their message lost): {redriven}")
        for k, (v, d) in verdicts.items():
            print(f"{'ok  ' if v else 'FAIL'} {k}{'' if v else ': ' + d}")
        if a.json:
            print(json.dumps(report))
        print(f"# chaos {'passed' if ok else 'FAILED'} (seed {seed})")
        if not ok or redriven or a.keep_logs:
            keep = keep_logs(c, seed)
            print(f"# the cluster's logs (every daemon's, nats-server's, PostgreSQL's): {keep}")
    finally:
        c.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
