#!/usr/bin/env python3
"""Where a cluster's heartbeats were late, from the gateways' logs.

Needs logs written with pekko's verbose heartbeat logging, e.g.

  --tether-java-opts "... -Dpekko.cluster.debug.verbose-heartbeat-logging=on -Dpekko.loglevel=DEBUG
                      -Dlogback.configurationFile=bench/logback-heartbeats.xml"

(the logback file keeps every other logger at INFO). For each node it prints the largest gaps
between

  sent      its own "Heartbeat to" lines (is the node's heartbeat actor on time?),
  received  "Heartbeat from" a peer (a peer's heartbeat reaching this node's receiver actor),
  answered  "Heartbeat response from" a peer (what the failure detector sees),

so a late heartbeat can be placed: a node that sends on time but hears nothing from any peer
for seconds, while the peers also send on time, loses the time in the remoting between them.

usage: heartbeat-gaps.py LOG... [--from HH:MM:SS] [--to HH:MM:SS] [--top N]
"""
import argparse
import re
from datetime import datetime

LINE = re.compile(
    r"^(\d\d:\d\d:\d\d\.\d\d\d) DEBUG .*ClusterHeartbeat - Cluster Node \[pekko://[^@]+@([^\]]+)\] - "
    r"(Heartbeat to|Heartbeat from|Heartbeat response from) \[pekko://[^@]+@([^\]]+)\]"
)
KINDS = {"Heartbeat to": "sent", "Heartbeat from": "received", "Heartbeat response from": "answered"}


def gaps_of(path, start, end):
    """(node, {(kind, peer): [(gap seconds, time of the late line)]}) for one log."""
    last = {}
    gaps = {}
    node = None
    with open(path, errors="replace") as log:
        for line in log:
            match = LINE.match(line)
            if not match:
                continue
            clock, node, what, peer = match.groups()
            if (start and clock < start) or (end and clock > end):
                continue
            at = datetime.strptime(clock, "%H:%M:%S.%f")
            key = (KINDS[what], peer)
            if key in last:
                gaps.setdefault(key, []).append(((at - last[key]).total_seconds(), clock))
            last[key] = at
    return node, gaps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--from", dest="start", help="only lines at or after HH:MM:SS")
    parser.add_argument("--to", dest="end", help="only lines at or before HH:MM:SS")
    parser.add_argument("--top", type=int, default=3, help="largest gaps shown per kind and peer")
    args = parser.parse_args()
    for path in args.logs:
        node, gaps = gaps_of(path, args.start, args.end)
        if node is None:
            print(f"{path}: no verbose heartbeat lines")
            continue
        print(f"{path} (node {node})")
        for (kind, peer), found in sorted(gaps.items()):
            largest = sorted(found, reverse=True)[: args.top]
            shown = ", ".join(f"{gap:.1f} s until {clock}" for gap, clock in largest)
            print(f"  {kind:8} {peer:21} {shown}")


if __name__ == "__main__":
    main()
