#!/usr/bin/env python3
"""Summarises a JFR recording of Tether: CPU by thread group, hot frames, time blocked on sockets.

    python3 bench/jfr-summary.py bench/results/<run>.jfr [top] [--skip-s N]

--window HH:MM:SS-HH:MM:SS keeps only the events that started in that span (the recording's
wall-clock times, as `jfr print` shows them): for instance the mass close at the end of a density
run, found from the node logs.

--skip-s N leaves out the recording's first N seconds (a run's warm-up, while C2 still compiles),
so what remains is the steady state: `bench.sh throughput --warmup-s 200 --jfr true`, then
`--skip-s 200`.

Uses the JDK's `jfr print`. Thread groups are thread names with digits stripped
(tether-pekko.actor.default-dispatcher-12 -> tether-pekko.actor.default-dispatcher-#).
"""
import collections
import re
import subprocess
import sys


SKIP_S = 0.0
WINDOW = None  # (from, to) as "HH:MM:SS" strings


def seconds_of_day(event):
    m = re.search(r"startTime = (\d+):(\d+):([\d.]+)", event)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def events(jfr, name):
    # Deep enough for a frame of Tether or pekko's remoting under the dispatcher's own frames.
    out = subprocess.run(["jfr", "print", "--stack-depth", "30", "--events", name, jfr], capture_output=True, text=True, check=True).stdout
    found = out.split(name + " {")[1:]
    if WINDOW:
        found = [e for e in found if in_window(e)]
    if SKIP_S <= 0:
        return found
    start = recording_start(jfr)
    # Recordings here last minutes, not days: a time earlier than the start means midnight passed.
    return [e for e in found if (seconds_of_day(e) - start) % 86400 >= SKIP_S]


def in_window(event):
    m = re.search(r"startTime = ([\d:]+)", event)
    return m is not None and WINDOW[0] <= m.group(1) <= WINDOW[1]


_start = {}


def recording_start(jfr):
    if jfr not in _start:
        out = subprocess.run(["jfr", "summary", jfr], capture_output=True, text=True, check=True).stdout
        m = re.search(r"Start: \S+ (\d+):(\d+):([\d.]+)", out)
        _start[jfr] = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return _start[jfr]


def group(thread):
    return re.sub(r"\d+", "#", thread)


def ms(text):
    m = re.search(r"duration = ([\d.]+) (ns|us|ms|s)\b", text)
    if not m:
        return 0.0
    return float(m.group(1)) * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]


def main():
    global SKIP_S, WINDOW
    args = sys.argv[1:]
    if "--window" in args:
        i = args.index("--window")
        WINDOW = tuple(args[i + 1].split("-"))
        del args[i : i + 2]
    if "--skip-s" in args:
        i = args.index("--skip-s")
        SKIP_S = float(args[i + 1])
        del args[i : i + 2]
    jfr = args[0]
    top = int(args[1]) if len(args) > 1 else 25

    # CPU by thread group: jdk.ThreadCPULoad gives each thread's share of the machine per period.
    load = collections.defaultdict(float)
    periods = collections.Counter()
    for e in events(jfr, "jdk.ThreadCPULoad"):
        t = re.search(r'eventThread = "([^"]+)"', e)
        u = re.search(r"user = ([\d.]+)%", e)
        s = re.search(r"system = ([\d.]+)%", e)
        if t and u and s:
            load[group(t.group(1))] += float(u.group(1)) + float(s.group(1))
            periods[group(t.group(1))] += 1
    total = sum(load.values())
    print("CPU by thread group (share of all sampled thread CPU):")
    for g, v in sorted(load.items(), key=lambda x: -x[1])[:top]:
        print(f"  {100 * v / total:5.1f}%  {g}")

    cpu = events(jfr, "jdk.CPULoad")
    if cpu:
        def avg(key):
            vals = [float(m.group(1)) for e in cpu for m in [re.search(key + r" = ([\d.]+)%", e)] if m]
            return sum(vals) / len(vals) if vals else float("nan")
        print(f"\nmachine CPU: jvmUser {avg('jvmUser'):.1f}%  jvmSystem {avg('jvmSystem'):.1f}%  machineTotal {avg('machineTotal'):.1f}%  ({len(cpu)} samples)")

    # Hot frames of the Java threads (execution samples).
    self_c, incl = collections.Counter(), collections.Counter()
    samples = events(jfr, "jdk.ExecutionSample")
    for s in samples:
        frames = re.findall(r"^\s+([\w.$<>]+)\(", s, re.M)
        if not frames:
            continue
        self_c[frames[0]] += 1
        for f in set(frames):
            incl[f] += 1
    n = max(1, len(samples))
    print(f"\n{len(samples)} execution samples; top self frames:")
    for f, c in self_c.most_common(top):
        print(f"  {100 * c / n:5.1f}%  {f}")
    print("\ntop inclusive frames in Tether, persistence, JDBC, HTTP:")
    keys = ("dev.tether", "persistence", "postgresql", "slick", "projection", "http.impl", "jackson", "serializ")
    shown = 0
    for f, c in incl.most_common():
        if any(k in f for k in keys):
            print(f"  {100 * c / n:5.1f}%  {f}")
            shown += 1
            if shown >= top:
                break

    # Time blocked reading sockets, by thread group (PostgreSQL round trips show up here).
    waited = collections.defaultdict(float)
    count = collections.Counter()
    for e in events(jfr, "jdk.SocketRead"):
        t = re.search(r'eventThread = "([^"]+)"', e)
        g = group(t.group(1)) if t else "?"
        waited[g] += ms(e)
        count[g] += 1
    if waited:
        print("\nblocked in socket reads (>= the recording's threshold), by thread group:")
        for g, v in sorted(waited.items(), key=lambda x: -x[1])[:10]:
            print(f"  {v / 1000:8.1f} s in {count[g]:6d} reads  {g}")


if __name__ == "__main__":
    main()
