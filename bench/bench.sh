#!/usr/bin/env bash
# Tether vs Socket.IO 4.8 benchmark harness. See bench/README.md.
#
#   bench/bench.sh SCENARIO|all [--flag value ...]
#
# Builds what is missing (the generator jar, the baseline's node_modules, Tether's jar), then runs
# the driver, which starts each server in turn, launches the worker JVMs and writes
# bench/results/SCENARIO-<timestamp>.json. Environment:
#   BENCH_REBUILD=1     rebuild the generator jar and copy Tether's jar again
#   BENCH_BUILD_TETHER=1  build Tether's jar (mvn package, tests skipped) if target/tether.jar is missing
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$here"

if [[ "${BENCH_REBUILD:-0}" == 1 || ! -f target/tether-bench.jar ]]; then
  mvn -B -q -DskipTests package
fi
if [[ ! -d socketio/node_modules/socket.io ]]; then
  (cd socketio && { npm ci --no-audit --no-fund 2>/dev/null || npm install --no-audit --no-fund; })
fi
# The server under test is a copy of Tether's jar, so that a concurrent build of the main project
# cannot swap or delete it in the middle of a run.
if [[ "${BENCH_REBUILD:-0}" == 1 || ! -f target/tether-under-test.jar ]]; then
  if [[ ! -f "$root/target/tether.jar" ]]; then
    if [[ "${BENCH_BUILD_TETHER:-0}" == 1 ]]; then
      (cd "$root" && mvn -B -q -DskipTests -Dskip.js=true package)
    else
      echo "no $root/target/tether.jar: build it (cd $root && mvn -B -q -DskipTests -Dskip.js=true package) or set BENCH_BUILD_TETHER=1" >&2
      exit 1
    fi
  fi
  mkdir -p target
  cp "$root/target/tether.jar" target/tether-under-test.jar
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec java -Xmx512m -Dbench.dir="$here" -jar target/tether-bench.jar "$@"
