#!/usr/bin/env bash
# Where the server's CPU goes in one scenario: starts crier under `perf record`
# (software cpu-clock sampling; this VM has no hardware counters, so `perf stat -e
# instructions` is "not supported"), drives it with crier-bench, prints the top symbols.
#   bench/profile.sh fanout [more crier-bench args]
#   BIN=/path/to/dir-with-crier-and-crier-bench bench/profile.sh publish --fsync grouped
# Without perf (or with CALLGRIND=1) it runs the server under valgrind --tool=callgrind
# instead; keep such runs short (-n 500 --duration 5), callgrind is ~50x slower.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:?usage: bench/profile.sh SCENARIO [crier-bench args]}"; shift
bin="${BIN:-target/release}"
out="$(mktemp -d /tmp/crier-profile-XXXX)"
port=$((20000 + RANDOM % 20000))
fsync=grouped
for a in "$@"; do case "$a" in always|grouped) fsync="$a" ;; esac; done
args=(serve --listen "127.0.0.1:$port" --udp-listen "" --data-dir "$out/data" --fsync "$fsync")
if [ "${CALLGRIND:-0}" = 1 ] || ! command -v perf >/dev/null 2>&1; then
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$bin/crier" "${args[@]}" >"$out/server.log" 2>&1 &
  sleep 8
else
  RUST_LOG=warn perf record -e cpu-clock -F 499 -g -o "$out/perf.data" -- "$bin/crier" "${args[@]}" >"$out/server.log" 2>&1 &
  sleep 1.5
fi
server_pid="$(pgrep -f -- "--listen 127.0.0.1:$port" | tail -1)"
"$bin/crier-bench" "$scenario" --url "http://127.0.0.1:$port" --server-pid "$server_pid" --quiet "$@" || true
kill -INT "$server_pid"
wait || true
if [ -f "$out/perf.data" ]; then
  perf report -i "$out/perf.data" --no-children --sort dso,sym --percent-limit 1 --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' | cut -c1-150 | head -30
else
  callgrind_annotate "$out/callgrind.out" 2>/dev/null | sed -n '/file:function/,$p' | head -30 | cut -c1-150
fi
echo "(profile data in $out)"
