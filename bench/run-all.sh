#!/usr/bin/env bash
# Every scenario once, against Crier (started by crier-bench) and Nchan, with the
# release build; the figures in BENCHMARKS.md come from this script.
#   bench/run-all.sh [OUT_DIR]      (default: /tmp/crier-bench-results)
# Builds the release binaries (or takes them from $BIN_DIR), copies them into OUT_DIR (so a rebuild during the run
# changes nothing), starts Nchan with bench/nchan/run.sh, runs every scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/crier-bench-results}"
mkdir -p "$out/bin"
# BIN_DIR=DIR: use the crier and crier-bench binaries in DIR instead of building.
if [ -n "${BIN_DIR:-}" ]; then
  cp "$BIN_DIR/crier" "$BIN_DIR/crier-bench" "$out/bin/"
else
  cargo build --release -p crier -p crier-bench
  cp target/release/crier target/release/crier-bench "$out/bin/"
fi
# crier-bench starts the `crier` that sits next to it.
bench="$out/bin/crier-bench"
bench/nchan/run.sh start

uname -a >"$out/machine.txt"; nproc >>"$out/machine.txt"; free -m >>"$out/machine.txt"

run() { # name, args...
  local name="$1"; shift
  # The machine may be shared: record its load next to each result.
  echo "== $name: crier-bench $*  [$(cut -d' ' -f1-3 /proc/loadavg)]"
  # Nchan's memory per connection is only meaningful on a fresh nginx.
  if [ "$1" = compare ]; then bench/nchan/run.sh restart >/dev/null 2>&1; fi
  "$bench" "$@" --quiet >"$out/$name.txt" 2>&1 || echo "   (exit $?: see $out/$name.txt)"
  grep -E "^(==|connect|server mem|cpu|publish|  round|deliveries|  latency|loss|result|figure|[a-z].* +[0-9?.]+ +[0-9?.]+ )" "$out/$name.txt" || true
}

run compare-idle compare idle
run compare-fanout compare fanout
run fanout-max fanout --rate 0 --duration 10
run fanout-1k-100 fanout -n 1000 --rate 100
run fanout-1k-20 fanout -n 1000 --rate 20
run compare-channels compare channels
run publish publish
run publish-batch10 publish --batch 10 --fsync grouped
run compare-sse compare sse
run compare-poll compare poll
run channels-udp channels --publisher udp --rate 20000 --messages 200000
run smoke smoke
bench/nchan/run.sh stop
