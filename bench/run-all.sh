#!/usr/bin/env bash
# Every scenario at its default (modest) size, for both servers, alternated (tether, socketio,
# tether, socketio), each run started once the 1-minute load average is below QUIET_LOAD (waiting
# at most QUIET_WAIT_MIN minutes per run, then running anyway; the load is recorded either way).
#
#   bench/run-all.sh            # ROUNDS=2 QUIET_LOAD=1.5 QUIET_WAIT_MIN=1 WARMUP_S=30 (throughput, latency)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ROUNDS="${ROUNDS:-2}"
Q=(--rounds "$ROUNDS" --quiet-load "${QUIET_LOAD:-1.5}" --quiet-wait-min "${QUIET_WAIT_MIN:-1}")
"$here/bench.sh" density "${Q[@]}"
"$here/bench.sh" storm "${Q[@]}"
"$here/bench.sh" drops "${Q[@]}"
"$here/bench.sh" throughput "${Q[@]}" --warmup-s "${WARMUP_S:-30}" --mode session --tag session
"$here/bench.sh" throughput "${Q[@]}" --warmup-s "${WARMUP_S:-30}" --mode room --tag room
"$here/bench.sh" latency "${Q[@]}" --warmup-s "${WARMUP_S:-30}"
"$here/bench.sh" resume-idle "${Q[@]}"
