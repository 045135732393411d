#!/usr/bin/python3
"""Metrics on every daemon, scraped by a real Prometheus (docs/operations.md):
two event stores, two orderquery, paymentsvc, restaurantsvc and orderapi each
serve /metrics; `promtool check metrics` finds nothing wrong with any of
them; Debian's prometheus, started here on a free loopback port with a
generated scrape configuration and Ordo's rules, sees every target up and
the key series; `promtool check rules` and `promtool test rules` pass on the
shipped rules. Real processes over loopback."""
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import EVENTSTORE, ROOT, FlowCluster, Service, free_port, run_tests, wait_for

PROMETHEUS, PROMTOOL = "/usr/bin/prometheus", "/usr/bin/promtool"
RULES = os.path.join(ROOT, "scripts", "prometheus", "ordo-rules.yml")
RULES_TEST = os.path.join(ROOT, "tests", "prometheus", "rules_test.yml")


class ObservedCluster(FlowCluster):
    """FlowCluster with every daemon's metrics on, a second event store, and orderapi's
    /metrics on an address of its own."""

    def __init__(self):
        super().__init__(metrics_addr="127.0.0.1:0")
        self.es2 = Service(self, "eventstore-2", EVENTSTORE,
                           ["--listen", "127.0.0.1:0", "--database-url", self.database_url, "--nats-url", self.nats_url,
                            "--metrics-addr", "127.0.0.1:0"], True)
        self.services["orderapi"].stop()
        self.start_api(metrics_addr="127.0.0.1:0")
        self.prom = None

    def targets(self):
        """{job: metrics port}"""
        t = {"eventstore": self.metrics_port, "eventstore-2": self.es2.metrics_port}
        t.update({name: svc.metrics_port for name, svc in self.services.items()})
        return t

    def close(self):
        if self.prom is not None:
            self.prom.kill()
            self.prom.wait(timeout=10)
        if self.es2.proc:
            self.es2.stop()
        super().close()


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.headers.get("Content-Type"), r.read().decode()


def place_orders(c):
    """One order down each saga path, waited to its final status."""
    for code, price in (("PIZZA", 5), ("CAVIAR", 600), ("SOLD-OUT", 5)):
        st, _, doc = c.order(code=code, price=price, qty=1)
        assert st == 201, (st, doc)
        c.final_status(doc["order_id"])


def test_every_daemon_serves_clean_metrics(c, t):
    place_orders(c)
    for job, port in c.targets().items():
        ctype, text = scrape(port)
        t.ok(ctype.startswith("text/plain; version=0.0.4"), f"{job}: /metrics is the text format ({ctype})")
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        t.ok(r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
             f"{job}: promtool check metrics finds nothing wrong {(r.stdout + r.stderr).strip()[:300]}")
        for series in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                       "process_threads", "process_start_time_seconds"):
            t.ok(f"\n{series} " in text, f"{job}: {series}")
        # an unknown path and a wrong method get their own answers
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=10)
            code = 200
        except urllib.error.HTTPError as e:
            code = e.code
        t.eq(code, 404, f"{job}: /nothing is 404")


def test_per_method_and_route_figures(c, t):
    _, es = scrape(c.metrics_port)
    t.ok('grpc_server_handled_total{grpc_service="eventstore.EventStore",grpc_method="CreateEvent",grpc_code="OK"}'
         in es, "the event store counts CreateEvent calls by code")
    t.ok('grpc_server_handling_seconds_bucket{grpc_service="eventstore.EventStore",grpc_method="CreateEvent",le="0.005"}'
         in es, "and times them per method")
    for g in ("ordo_eventstore_database_up 1", "ordo_eventstore_bus_connected 1",
              "ordo_eventstore_outbox_backlog_positions "):
        t.ok(f"\n{g}" in es, f"the event store shows {g.strip()}")
    _, oq = scrape(c.services["orderquery-1"].metrics_port)
    _, oq2 = scrape(c.services["orderquery-2"].metrics_port)
    both = oq + oq2
    t.ok("ordo_readmodel_apply_lag_seconds_count" in oq and "ordo_readmodel_database_up 1" in oq,
         "orderquery shows the read model's apply lag and database")
    t.ok("\nordo_readmodel_open_orders 0" in oq and "\nordo_readmodel_oldest_open_order_age_seconds 0" in oq,
         "no open order once the saga is done")
    t.ok('grpc_server_handled_total{grpc_service="order.OrderQuery",grpc_method="GetOrder",grpc_code="OK"}' in both,
         "orderquery counts its gRPC calls")
    _, api = scrape(c.services["orderapi"].metrics_port)
    t.ok('ordo_http_requests_total{method="POST",route="/api/orders",code="2xx"} 3' in api,
         "orderapi counts POST /api/orders by route and class")
    t.ok('ordo_http_request_duration_seconds_count{method="GET",route="/api/orders/{id}"}' in api,
         "and times GET /api/orders/{id} by its route template, not its path")
    _, pay = scrape(c.services["paymentsvc"].metrics_port)
    t.ok('ordo_consumer_handled_total{durable="paymentsvc-order-created"} 3' in pay,
         "paymentsvc handled the three order-created")


def start_prometheus(c):
    port = free_port()
    conf = os.path.join(c.dir, "prometheus.yml")
    jobs = "".join(f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{p}']}}]\n"
                   for job, p in c.targets().items())
    with open(conf, "w") as f:
        f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                f"rule_files: ['{RULES}']\nscrape_configs:\n{jobs}")
    c.prom = subprocess.Popen([PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={c.dir}/prometheus",
                               f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(c.dir, "prometheus.log"), "ab"))
    return port


def prom_api(port, path, **params):
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())["data"]


def test_prometheus_scrapes_every_daemon(c, t):
    port = start_prometheus(c)
    jobs = set(c.targets())

    def all_up():
        try:
            active = prom_api(port, "targets")["activeTargets"]
        except OSError:
            return None
        up = {a["labels"]["job"] for a in active if a["health"] == "up"}
        return up if up == jobs else None
    t.eq(wait_for(all_up, 60, "every target up in Prometheus"), jobs, "Prometheus sees every daemon up")
    for query, what in (
            ('sum(grpc_server_handled_total{grpc_method="CreateEvent",grpc_code="OK"})', "CreateEvent calls"),
            ('sum(ordo_consumer_handled_total)', "messages handled by the consumers"),
            ('sum(ordo_readmodel_apply_lag_seconds_count)', "events applied to the read model"),
            ('sum(ordo_http_requests_total{route="/api/orders",method="POST"})', "orders posted"),
            ('count(process_resident_memory_bytes)', "process figures of every daemon"),
            ('count(up == 1)', "targets up")):
        def value():
            r = prom_api(port, "query", query=query)["result"]
            return float(r[0]["value"][1]) if r and float(r[0]["value"][1]) > 0 else None
        v = wait_for(value, 30, query)
        t.ok(v is not None and v > 0, f"Prometheus has {what}: {query} = {v}")
    t.eq(wait_for(lambda: prom_api(port, "query", query="count(process_resident_memory_bytes)")["result"][0]
                  ["value"][1], 10, "count"), str(len(jobs)), "every daemon reports process_resident_memory_bytes")

    def rules_ok():
        groups = prom_api(port, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("health") == "ok" for r in rules) else None
    rules = wait_for(rules_ok, 30, "Ordo's rules evaluated without error")
    t.ok(rules is not None and len(rules) >= 10, f"Prometheus loaded and evaluates Ordo's {len(rules or [])} rules")
    firing = [a["labels"]["alertname"] for a in prom_api(port, "alerts")["alerts"] if a["state"] == "firing"]
    t.eq(firing, [], "a healthy cluster fires no alert")


def test_rules_check_and_unit_tests(c, t):
    r = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, text=True, timeout=60)
    t.ok(r.returncode == 0, f"promtool check rules: {r.stdout.strip().splitlines()[-1:]}")
    r = subprocess.run([PROMTOOL, "test", "rules", RULES_TEST], capture_output=True, text=True, timeout=60,
                       cwd=os.path.dirname(RULES_TEST))
    t.ok(r.returncode == 0, f"promtool test rules: every alert fires when it should {r.stdout[-600:]}")


if __name__ == "__main__":
    run_tests([test_every_daemon_serves_clean_metrics, test_per_method_and_route_figures,
               test_prometheus_scrapes_every_daemon, test_rules_check_and_unit_tests], ObservedCluster)
