#!/usr/bin/env python3
"""Prints Markdown tables from bench/results/*.json (every run, then medians and ratios).

    python3 bench/report.py [results/density-....json ...]   # default: the newest file per scenario+tag
"""
import glob
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))


def newest_per_kind(paths):
    best = {}
    for p in sorted(paths):
        name = os.path.basename(p)[:-5]
        parts = name.split("-")
        # scenario may contain a dash (resume-idle); the timestamp is yyyymmdd-hhmmss
        i = next(k for k, x in enumerate(parts) if len(x) == 8 and x.isdigit())
        kind = "-".join(parts[:i]) + ("-" + "-".join(parts[i + 2:]) if len(parts) > i + 2 else "")
        best[kind] = p
    return [best[k] for k in sorted(best)]


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "/".join(fmt(x) for x in v)
    return str(v)


def main():
    paths = sys.argv[1:] or newest_per_kind(glob.glob(os.path.join(here, "results", "*.json")))
    for p in paths:
        d = json.load(open(p))
        runs = [r for r in d["runs"] if "metrics" in r]
        print(f"### {d['scenario']} — `{os.path.relpath(p, os.path.dirname(here))}`\n")
        print(f"`{d['command']}`\n")
        keys = []
        for r in runs:
            for k in r["metrics"]:
                if k not in keys:
                    keys.append(k)
        head = ["metric"] + [f"{r['server']} #{r['round']}" for r in runs]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for k in keys:
            print("| " + " | ".join([k] + [fmt(r["metrics"].get(k)) for r in runs]) + " |")
        print("| load avg before (1/5/15 min) | " + " | ".join(fmt([round(x, 2) for x in r["loadBefore"]]) for r in runs) + " |")
        print("| load avg after | " + " | ".join(fmt([round(x, 2) for x in r.get("loadAfter", [])]) for r in runs) + " |")
        print("| server log ERROR/WARN lines | " + " | ".join(f"{r['serverLog'].get('logErrorLines')}/{r['serverLog'].get('logWarnLines')}" for r in runs) + " |")
        # Other lines naming an exception (stack traces, dead-letter notices); older results lack it.
        print("| server log other lines naming an exception | " + " | ".join(fmt(r['serverLog'].get('logExceptionLines')) for r in runs) + " |")
        s = d.get("summary", {})
        if "ratio_tether_over_socketio" in s:
            print("\nmedian tether / median socketio: " + ", ".join(f"{k} {v:g}" for k, v in s["ratio_tether_over_socketio"].items() if k not in ("load1_before",)))
        failures = [f"{r['server']} #{r['round']}: {r['failure']}" for r in d["runs"] if "failure" in r]
        if failures:
            print("\nfailures: " + "; ".join(failures))
        print()


if __name__ == "__main__":
    main()
