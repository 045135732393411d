#!/usr/bin/python3
"""CPU time per process over a window, PostgreSQL backends named by their
application_name, printed as milliseconds per unit of work (e.g. per order):
where the machine's time goes.

    cpu_split.py --delay S --seconds S --unit order --database-url URL \
        (--units-per-s N | --count-sql "SELECT count(*) ... BETWEEN %s AND %s")

--count-sql counts the units done in the window (its two parameters are the
window's start and end in unix microseconds), run 2 s after the window so
what was started in it is visible; --units-per-s assumes a steady rate.
"""
import argparse
import os
import time

import psycopg2


def backend_names(url):
    """pid -> 'pg:<application_name or backend type>' for every PostgreSQL process."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid, coalesce(nullif(application_name, ''), backend_type) FROM pg_stat_activity")
            return {pid: "pg:" + name for pid, name in cur.fetchall()}
    finally:
        conn.close()


def count_units(url, sql, from_us, to_us):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, (from_us, to_us))
            return cur.fetchone()[0]
    finally:
        conn.close()


def cpu_ticks():
    """pid -> (command name, user + system ticks) for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue   # gone meanwhile
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = (comm, int(fields[11]) + int(fields[12]))
    return out


def machine_ticks():
    """(idle + iowait, steal, all) ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[3] + v[4], v[7], sum(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=2.0, help="seconds to wait before the window")
    ap.add_argument("--seconds", type=float, required=True, help="length of the window")
    ap.add_argument("--units-per-s", type=float, help="work done per second (e.g. orders/s)")
    ap.add_argument("--count-sql", help="counts the units done between two unix-microsecond times")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--unit", default="unit", help="what one unit of work is called in the output")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    hz = os.sysconf("SC_CLK_TCK")
    time.sleep(a.delay)
    names = backend_names(a.database_url)
    before, m0, t0 = cpu_ticks(), machine_ticks(), time.time()
    time.sleep(a.seconds)
    after, m1, t1 = cpu_ticks(), machine_ticks(), time.time()
    window = t1 - t0
    names.update(backend_names(a.database_url))
    if a.count_sql:
        time.sleep(2)
        units = count_units(a.database_url, a.count_sql, int(t0 * 1e6), int(t1 * 1e6))
    else:
        units = a.units_per_s * window
    by_name = {}
    for pid, (comm, ticks) in after.items():
        used = (ticks - before.get(pid, (comm, 0))[1]) / hz
        if used > 0:
            name = names.get(pid, "pg:other" if comm == "postgres" else comm)
            by_name[name] = by_name.get(name, 0.0) + used
    total = sum(by_name.values())
    if units <= 0:
        print("cpu: no work counted in the window")
        return
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:a.top]
    all_ticks = max(m1[2] - m0[2], 1)
    # steal: time the hypervisor gave this VM's cores to others (a slow spell)
    print(f"cpu ms per {a.unit} ({units:.0f} in {window:.1f} s): {total / units * 1000:.2f} in all "
          f"({total / window * 100:.0f}% of one core; machine idle {(m1[0] - m0[0]) * 100 / all_ticks:.0f}%, "
          f"steal {(m1[1] - m0[1]) * 100 / all_ticks:.1f}%); "
          + ", ".join(f"{name} {used / units * 1000:.3f}" for name, used in top))


if __name__ == "__main__":
    main()
