#!/usr/bin/python3
"""Retries and outages: a forced SQLSTATE 40001, a database that goes away and
comes back, late-committing transactions and the readers' gap rule."""
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import grpc

from harness import BUILD, EVENTSTORE, PG_BIN, Cluster, CommitDropProxy, Service, run_tests, wait_for

C = grpc.StatusCode

# The late-commit test holds a transaction open for about a second (longer
# under ASan on a loaded machine); the gap timeout must stay well above that,
# as it must stay above any writer's transaction in production.
GAP_TIMEOUT_MS = 5000
READ_MAX_BYTES = 2 << 20   # a GetEvents page and a stream page, about
STREAMS_PER_CLIENT = 6


def waiting_on_lock(c):
    return c.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0] > 0


def test_forced_serialization_failure(c, t):
    """A concurrent UPDATE of the stream head commits while the append waits on
    it: PostgreSQL raises a real 40001 in the append's REPEATABLE READ
    transaction, and the event store retries it as a whole."""
    c.append(c.event("retry-1"), expected=0)
    before = c.stats().tx_retries
    blocker = c.db()
    blocker.autocommit = False
    cur = blocker.cursor()
    cur.execute("UPDATE streams SET version = version WHERE aggregate_id = 'retry-1'")
    result = {}

    def append():
        try:
            result["r"] = c.append(c.event("retry-1", "after-retry"), timeout=30)
        except grpc.RpcError as e:
            result["e"] = e

    th = threading.Thread(target=append)
    th.start()
    wait_for(lambda: waiting_on_lock(c), 10, "the append to wait on the row lock")
    blocker.commit()
    blocker.close()
    th.join(timeout=30)
    t.ok("r" in result and result["r"].version == 2, f"the append succeeded after the conflict: {result}")
    t.ok(c.stats().tx_retries > before, "the transaction was retried (tx_retries grew)")
    log = open(f"{c.pgdir}/log").read()
    t.ok("could not serialize access due to concurrent update" in log, "PostgreSQL raised 40001 (server log)")


def test_database_down(c, t):
    c.append(c.event("down-1"))
    c.pg_stop()   # within the relay's delete delay: its outbox row is published, not yet deleted
    start = time.time()
    t.raises(C.UNAVAILABLE, lambda: c.append(c.event("down-1"), timeout=30), "append while the database is down")
    t.ok(time.time() - start < 15, f"answered within bounded retries ({time.time() - start:.1f}s)")
    t.raises(C.UNAVAILABLE, lambda: c.store.GetEvents(c.pb.GetEventsRequest(aggregate_id="down-1"), timeout=30),
             "read while the database is down")
    c.pg_start_again()
    first = c.store.GetEvents(c.pb.GetEventsRequest(aggregate_id="down-1"), timeout=30)
    t.eq(len(first.events), 1, "the first read after the database restarted succeeds (the reader reconnects)")
    t.ok(c.stats().events >= 1, "and so does the first admin call")
    r = wait_for(lambda: _try_append(c, "down-1"), 20, "appends to work again")
    t.ok(r.version == 2, "after the database is back, appends resume (no lost or doubled version)")
    wait_for(lambda: c.stats().outbox_backlog == 0, 20, "the relay to empty the outbox after the outage")
    warnings = open(os.path.join(c.dir, "eventstore.log")).read().count("cannot delete published outbox rows")
    t.ok(warnings <= 2, f"a delete that fails during the outage is retried quietly ({warnings} warnings)")


def _try_append(c, agg):
    try:
        return c.append(c.event(agg), timeout=10)
    except grpc.RpcError:
        return None


def _insert_direct(cur, agg):
    cur.execute("INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, event_data)"
                " VALUES (%s, %s, 'order', 1, 'slow', '{}') RETURNING position", (str(uuid.uuid4()), agg))
    return cur.fetchone()[0]


def test_late_commit_is_not_skipped(c, t):
    """A transaction holding a lower position commits after a higher one: readers
    paging by position must wait for it, not skip it."""
    head = c.append(c.event("gap-before")).position
    slow = c.db()
    slow.autocommit = False
    cur = slow.cursor()
    slow_pos = _insert_direct(cur, "gap-slow")
    fast = c.append(c.event("gap-fast"))
    started = time.time()
    t.ok(fast.position > slow_pos, "the committed event holds a later position than the one in flight")
    call = c.store.GetEventsStream(c.pb.GetEventsRequest(from_position=head), timeout=30)
    got = []

    def read():
        try:
            for e in call:
                got.append(e.aggregate_id)
        except grpc.RpcError as e:   # cancelled below
            if e.code() != C.CANCELLED:
                raise

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(1.0)
    t.eq(got, [], "the stream does not pass the in-flight position")
    page = c.store.GetEvents(c.pb.GetEventsRequest(from_position=head), timeout=10).events
    t.eq([e.aggregate_id for e in page], [], "GetEvents (global) stops below the in-flight position")
    t.ok(time.time() - started < GAP_TIMEOUT_MS / 1000, "(the test committed within the gap timeout)")
    slow.commit()
    slow.close()
    wait_for(lambda: len(got) >= 2, 10, "both events")
    call.cancel()
    reader.join(timeout=10)
    t.eq(got[:2], ["gap-slow", "gap-fast"], "once committed, the late event comes first, nothing skipped")


def test_rolled_back_gap_is_skipped(c, t):
    """A position that will never commit (its transaction rolled back) stops readers
    only until the event store sees that no transaction that could hold it is still
    open: a tick, not gap_timeout."""
    aborted = c.db()
    aborted.autocommit = False
    cur = aborted.cursor()
    _insert_direct(cur, "gap-dead")
    after = c.append(c.event("gap-after-dead"))
    time.sleep(0.5)
    t.eq([e.aggregate_id for e in c.store.GetEvents(c.pb.GetEventsRequest(from_position=after.position - 2),
                                                    timeout=10).events], [],
         "while its transaction is open, readers wait at the gap")
    aborted.rollback()
    aborted.close()
    start = time.time()
    r = wait_for(lambda: c.store.GetEvents(c.pb.GetEventsRequest(from_position=after.position - 2),
                                           timeout=10).events, 30, "the read to pass the dead gap")
    waited = time.time() - start
    t.eq([e.aggregate_id for e in r], ["gap-after-dead"], "the dead position is skipped")
    t.ok(waited < 1.0, f"within a second of the rollback, not after the gap timeout ({waited:.2f}s)")
    t.ok("by=their transactions ended" in c.log_tail(100000), "the event store says how it knew")


def test_killed_writer_does_not_stall_the_relay(c, t):
    """Under load, a session holding a drawn position dies in the middle of its
    transaction (pg_terminate_backend): the relay publishes the commits after it
    within a second, not after --gap-timeout-ms."""
    victim = c.db()
    victim.autocommit = False
    cur = victim.cursor()
    cur.execute("SELECT pg_backend_pid()")
    victim_pid = cur.fetchone()[0]
    _insert_direct(cur, "gap-killed")
    done, stop = [], threading.Event()

    def load():
        while not stop.is_set() and len(done) < 2000:
            done.append(c.append(c.event(f"after-kill-{uuid.uuid4()}")).position)
    th = threading.Thread(target=load)
    th.start()
    try:
        wait_for(lambda: len(done) >= 20, 20, "appends after the held position")
        t.ok(c.stats().outbox_backlog > 0, "the relay waits at the held position meanwhile")
        published = c.stats().published
        time.sleep(0.3)
        t.eq(c.stats().published, published, "nothing after it is published while it is held")
        c.sql("SELECT pg_terminate_backend(%s)", victim_pid)
        killed = time.time()
        wait_for(lambda: c.stats().published > published, 30, "the relay to publish past the dead position")
        took = time.time() - killed
    finally:
        stop.set()
        th.join(timeout=30)
    t.ok(took < 1.0, f"the commits after it were published {took:.2f}s after the kill (gap timeout "
                     f"{GAP_TIMEOUT_MS / 1000:.0f}s)")


def test_writer_connections_killed_under_load(c, t):
    """The writer's connection is cut again and again under load (pg_terminate_backend), at
    any point of its transactions, COMMIT included: every call still gets an answer, what
    was acknowledged is stored exactly once, and nothing else is."""
    import json
    import os
    import subprocess
    before = c.sql("SELECT count(*) FROM events WHERE aggregate_type = 'bench'")[0][0]
    load = subprocess.Popen([os.path.join(BUILD, "bench", "es_load"), "--addr", f"127.0.0.1:{c.es_port}",
                             "--clients", "16", "--seconds", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    killed = c.cut_connections("eventstore writer", 20, 0.2)
    out, errs = load.communicate(timeout=60)
    res = json.loads(out.strip().splitlines()[-1])
    t.ok(killed >= 10, f"the writer's connection was cut {killed} times during the load")
    t.eq(res["errors"], 0, f"every CreateEvent succeeded ({res['events']} appends){': ' + errs[-300:] if errs else ''}")
    stored = c.sql("SELECT count(*), count(DISTINCT event_id) FROM events WHERE aggregate_type = 'bench'")[0]
    t.eq((stored[0] - before, stored[1] - before), (res["events"], res["events"]),
         "exactly the acknowledged appends are stored, each once")
    resolved = open(os.path.join(c.dir, "eventstore.log")).read().count("commit outcome resolved")
    print(f"# COMMIT answers lost with the connection and resolved by event id: {resolved} (by chance of timing;"
          " test_lost_commit_answer_is_resolved loses one on purpose)")


def test_lost_commit_answer_is_resolved(c, t):
    """A COMMIT that reached the database but whose answer was lost with the connection (a
    proxy passes the transaction's results and cuts before the COMMIT's answer): the writer
    asks the database by event id, finds the events committed and answers success, not a
    duplicate and not an error; the events are stored once. Both write paths: an expected
    version (one round trip, BEGIN to COMMIT in one pipeline) and no expected version
    (the lookup first, the COMMIT with the insert)."""
    import urllib.parse
    proxy = CommitDropProxy(c.pg_port)
    url = urllib.parse.urlsplit(c.database_url)
    via_proxy = url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}", query="sslmode=disable").geturl()
    es = Service(c, "eventstore-proxied", EVENTSTORE, ["--listen", "127.0.0.1:0", "--database-url", via_proxy,
                                                        "--nats-url", c.nats_url], True)
    channel = grpc.insecure_channel(f"127.0.0.1:{es.port}")
    store = c.grpc_mod.EventStoreStub(channel)
    try:
        for n, (agg, expected) in enumerate([("lost-commit-guarded", 0), ("lost-commit-lookup", None)], 1):
            proxy.arm(agg)
            req = c.pb.CreateEventRequest(event=c.event(agg))
            if expected is not None:
                req.expected_version = expected
            r = store.CreateEvent(req, timeout=30)
            t.eq(proxy.dropped, n, f"{agg}: the proxy lost the COMMIT's answer")
            t.eq((r.is_success, r.version, r.duplicate), (True, 1, False),
                 f"{agg}: the call is answered as appended (not a duplicate, not an error)")
            t.eq(c.sql("SELECT count(*) FROM events WHERE aggregate_id = %s", agg)[0][0], 1,
                 f"{agg}: stored once")
            log = open(es.log_path).read()
            t.eq(log.count("commit outcome resolved by event id"), n,
                 f"{agg}: the writer resolved the outcome by event id")
        t.ok("committed=yes" in log and "committed=no" not in log, "and found it committed each time")
    finally:
        channel.close()
        es.stop()
        proxy.close()


def rss_peak_kb(pid):
    """The process's peak resident memory so far (VmHWM), kB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_hung_backend_bounds_the_queue(c, t):
    """The writer's database backend stops (SIGSTOP: a hung server) for 10 s while
    2,000 CreateEvent calls of ~100 KB with a 1 s deadline arrive. The write queue is
    bounded in bytes (--write-queue-bytes): the calls beyond it are refused at once with
    UNAVAILABLE, those whose deadline passes while they wait are never written, the
    event store's memory stays bounded, and writing resumes by itself with the backend."""
    c.append(c.event("hung-warmup"))
    backend = c.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'eventstore writer'")
    t.eq(len(backend), 1, "one writer backend")
    pid = backend[0][0]
    es_pid = c.es_proc.pid
    before = c.sql("SELECT count(*) FROM events WHERE aggregate_type = 'hung'")[0][0]
    data = json.dumps({"blob": "x" * 100_000})
    ids = [str(uuid.uuid4()) for _ in range(2000)]
    outcome = {}
    os.kill(pid, signal.SIGSTOP)
    try:
        c.append(c.event("hung-stuck"), timeout=0.5)   # (the batch in flight when the backend hung)
    except grpc.RpcError:
        pass
    try:
        for start in range(0, len(ids), 100):   # 100 calls in flight at a time
            futures = [(i, c.store.CreateEvent.future(c.pb.CreateEventRequest(event=c.pb.Event(
                event_id=i, aggregate_id=f"hung-{i[:8]}", aggregate_type="hung", event_type="x", event_data=data)),
                timeout=1.0)) for i in ids[start:start + 100]]
            for i, f in futures:
                try:
                    f.result()
                    outcome[i] = "ok"
                except grpc.RpcError as e:
                    outcome[i] = e.code()
        peak = rss_peak_kb(es_pid)
        stalled = time.time()
    finally:
        os.kill(pid, signal.SIGCONT)
    codes = {}
    for v in outcome.values():
        codes[v] = codes.get(v, 0) + 1
    print(f"# outcomes while the backend hung: {codes}; event store peak RSS {peak // 1024} MB")
    t.ok(codes.get(C.UNAVAILABLE, 0) >= 1000, "most calls were refused at once: the write queue is full")
    if "asan" in BUILD:   # AddressSanitizer keeps freed memory in quarantine (256 MB): RSS is its, not ours
        print(f"# (ASan build: peak RSS {peak // 1024} MB not checked; the release build checks it)")
    else:
        t.ok(peak < 64 * 1024, f"the event store's peak RSS stayed under 64 MB ({peak // 1024} MB)")
    resumed = wait_for(lambda: _appends(c, "hung-after"), 30, "appends to succeed again")
    t.ok(resumed and time.time() - stalled < 30, "writing resumed by itself with the backend")
    late = [i for i, v in outcome.items() if v == C.DEADLINE_EXCEEDED]
    time.sleep(1)
    written = c.sql("SELECT count(*) FROM events WHERE event_id = ANY(%s::uuid[])", late)[0][0]
    t.ok(len(late) >= 1, f"the calls that waited in the queue were answered DEADLINE_EXCEEDED ({len(late)})")
    t.eq(written, 0, f"and none of those {len(late)} was written when the backend resumed")
    t.eq(c.sql("SELECT count(*) FROM events WHERE aggregate_type = 'hung'")[0][0] - before,
         sum(1 for v in outcome.values() if v == "ok"), "what is stored is what was acknowledged")


def _appends(c, agg):
    try:
        return c.append(c.event(agg), timeout=2).is_success
    except grpc.RpcError:
        return False


def test_bounded_reads(c, t):
    """Reads are bounded in bytes, not only in events: GetEvents(limit=10000) over
    ~100 KB events answers a page of about --read-max-bytes that says more follow
    (two at once did take 800 MB and then fail); streams whose client reads nothing
    hold a bounded chain each and are ended after --stream-idle-ms; meanwhile other
    calls are answered and the event store's memory stays bounded."""
    data = json.dumps({"blob": "x" * 100_000})
    for _ in range(15):   # 120 events of ~100 KB, 8 to a request
        req = c.pb.CreateEventRequest()
        for _ in range(8):
            req.events.append(c.pb.Event(aggregate_id="big-read", aggregate_type="big", event_type="x",
                                         event_data=data))
        c.store.CreateEvent(req, timeout=30)
    first = c.store.GetEvents(c.pb.GetEventsRequest(aggregate_id="big-read", limit=10000), timeout=30)
    size = sum(len(e.event_data) for e in first.events)
    t.ok(0 < len(first.events) < 120 and first.more,
         f"a page stops at the byte budget and says more follow ({len(first.events)} events, {size // 1024} KB)")
    t.ok(size <= READ_MAX_BYTES + 200_000, f"about --read-max-bytes ({size} <= {READ_MAX_BYTES} + one event)")
    got, req = list(first.events), c.pb.GetEventsRequest(aggregate_id="big-read", limit=10000)
    page = first
    while page.more and len(got) < 200:
        req.from_position = got[-1].position
        page = c.store.GetEvents(req, timeout=30)
        got += page.events
    t.eq([e.version for e in got], list(range(1, 121)), "paging on from the last position reads all 120, in order")
    # two whole reads at once, and four streams whose client never reads
    reads = [c.store.GetEvents.future(c.pb.GetEventsRequest(aggregate_type="big", limit=10000), timeout=60)
             for _ in range(2)]
    stalled = [c.store.GetEventsStream(c.pb.GetEventsRequest(aggregate_type="big"), timeout=120) for _ in range(4)]
    t.ok(all(0 < len(f.result().events) < 120 and f.result().more for f in reads), "the two whole reads answer a page each")
    other = grpc.insecure_channel(c.addr)
    start = time.time()
    n = len(c.grpc_mod.EventStoreStub(other).GetEvents(c.pb.GetEventsRequest(limit=1), timeout=5).events)
    t.ok(n == 1 and time.time() - start < 2, f"another client is answered meanwhile ({time.time() - start:.2f}s)")
    other.close()
    peak = rss_peak_kb(c.es_proc.pid)
    if "asan" in BUILD:
        print(f"# (ASan build: peak RSS {peak // 1024} MB not checked; the release build checks it)")
    else:
        t.ok(peak < 128 * 1024, f"the event store's peak RSS stayed under 128 MB ({peak // 1024} MB)")
    log = os.path.join(c.dir, "eventstore.log")
    wait_for(lambda: open(log).read().count("stream ended: the client read nothing") >= 4, 20,
             "the four streams to be ended for reading nothing")
    codes = []
    for s in stalled:
        try:
            for _ in s:
                pass
            codes.append(None)
        except grpc.RpcError as e:
            codes.append(e.code())
    t.eq(codes, [C.DEADLINE_EXCEEDED] * 4, "their clients learn why: DEADLINE_EXCEEDED")


def test_streams_per_client(c, t):
    """One client may hold at most --max-streams-per-client streams open (the
    64 it could hold before locked every other client out): the next is
    refused with RESOURCE_EXHAUSTED naming the client."""
    held = [c.store.GetEventsStream(c.pb.GetEventsRequest(aggregate_type="none-such"), timeout=30)
            for _ in range(STREAMS_PER_CLIENT)]
    time.sleep(0.5)
    extra = c.store.GetEventsStream(c.pb.GetEventsRequest(aggregate_type="none-such"), timeout=10)
    t.raises(C.RESOURCE_EXHAUSTED, lambda: next(extra), f"stream {STREAMS_PER_CLIENT + 1} of one client is refused",
             contains="too many open streams from 127.0.0.1")
    for s in held:
        s.cancel()
    time.sleep(0.5)
    again = c.store.GetEventsStream(c.pb.GetEventsRequest(aggregate_type="none-such"), timeout=1)
    try:
        next(again)
        code = None
    except grpc.RpcError as e:
        code = e.code()
    t.eq(code, C.DEADLINE_EXCEEDED, "once they are closed it may open one again (it waits for events: deadline)")


def test_database_crash_restart(c, t):
    """PostgreSQL stops with -m immediate (what a crash looks like to clients: a
    warning, then the connection closed) and starts again: the first reads and
    appends after it succeed. The connections it left behind fail with an error
    no server sent (libpq's "server closed the connection unexpectedly", no
    SQLSTATE) while libpq may still call them good; they are replaced, not
    reported (found by the chaos soak: a rebuild failed on it)."""
    c.append(c.event("crash-before"))
    for p in ("GetEvents", "GetStats"):   # every reader connection in use once
        c.store.GetEvents(c.pb.GetEventsRequest(limit=1), timeout=10) if p == "GetEvents" else c.stats()
    subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", f"{c.pgdir}/data", "-m",
                    "immediate", "-w", "stop"], cwd="/", capture_output=True)
    c.pg_start_again()
    reads = []
    for _ in range(6):   # more than the reader threads: each of their connections is tried
        try:
            c.store.GetEvents(c.pb.GetEventsRequest(aggregate_type="order", limit=1), timeout=10)
            reads.append("ok")
        except grpc.RpcError as e:
            reads.append(f"{e.code().name}: {e.details()[:80]}")
    t.eq(reads, ["ok"] * 6, "every read after the crash-restart succeeds")
    t.ok(c.append(c.event("crash-after"), timeout=30).is_success, "and so does an append")


if __name__ == "__main__":
    run_tests([test_forced_serialization_failure, test_late_commit_is_not_skipped, test_rolled_back_gap_is_skipped,
               test_killed_writer_does_not_stall_the_relay,
               test_database_down, test_writer_connections_killed_under_load, test_lost_commit_answer_is_resolved,
               test_hung_backend_bounds_the_queue, test_bounded_reads, test_streams_per_client,
               test_database_crash_restart],
              lambda: Cluster(gap_timeout_ms=GAP_TIMEOUT_MS, statement_timeout_ms=500, stream_idle_ms=2000,
                              read_max_bytes=READ_MAX_BYTES, max_streams_per_client=STREAMS_PER_CLIENT))
