#!/usr/bin/python3
"""CPU time per process over a window, PostgreSQL backends named by their
application_name, printed as milliseconds per unit of work (e.g. per order
at a fixed rate): where the machine's time goes.

    cpu_split.py --delay S --seconds S --units-per-s N --unit order --database-url URL
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=2.0, help="seconds to wait before the window")
    ap.add_argument("--seconds", type=float, required=True, help="length of the window")
    ap.add_argument("--units-per-s", type=float, required=True, help="work done per second (e.g. orders/s)")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--unit", default="unit", help="what one unit of work is called in the output")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    hz = os.sysconf("SC_CLK_TCK")
    time.sleep(a.delay)
    names = backend_names(a.database_url)
    before, t0 = cpu_ticks(), time.time()
    time.sleep(a.seconds)
    after, window = cpu_ticks(), time.time() - t0
    names.update(backend_names(a.database_url))
    by_name = {}
    for pid, (comm, ticks) in after.items():
        used = (ticks - before.get(pid, (comm, 0))[1]) / hz
        if used > 0:
            name = names.get(pid, "pg:other" if comm == "postgres" else comm)
            by_name[name] = by_name.get(name, 0.0) + used
    units = a.units_per_s * window
    total = sum(by_name.values())
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:a.top]
    print(f"cpu ms per {a.unit}: {total / units * 1000:.2f} in all ({total / window * 100:.0f}% of one core); "
          + ", ".join(f"{name} {used / units * 1000:.3f}" for name, used in top))


if __name__ == "__main__":
    main()
