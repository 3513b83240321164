#!/usr/bin/env bash
# Nginx + Nchan for side-by-side benchmarks with crier-bench.
#   bench/nchan/run.sh start    install (apt) if missing, start on 127.0.0.1:$NCHAN_PORT
#   bench/nchan/run.sh stop     stop it
#   bench/nchan/run.sh status   show its pids
# NCHAN_PORT (default 8090) and NCHAN_RUN_DIR (default /tmp/crier-bench-nchan) override.
# Then: crier-bench compare fanout   (or any scenario with --target nchan --url http://127.0.0.1:8090)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${NCHAN_PORT:-8090}"
run_dir="${NCHAN_RUN_DIR:-/tmp/crier-bench-nchan}"
module=/usr/lib/nginx/modules/ngx_nchan_module.so

install() {
  if command -v nginx >/dev/null 2>&1 && [ -f "$module" ]; then
    return
  fi
  echo "installing nginx and libnginx-mod-nchan"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
  # The package starts the system nginx on port 80; we run our own instance instead.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx 2>/dev/null || true; fi
  if [ -f /run/nginx.pid ]; then kill "$(cat /run/nginx.pid)" 2>/dev/null || true; fi
}

pids() {
  [ -f "$run_dir/nginx.pid" ] || return 0
  local master
  master="$(cat "$run_dir/nginx.pid")"
  [ -d "/proc/$master" ] || return 0
  echo "$master" $(cat "/proc/$master/task/$master/children" 2>/dev/null)
}

start() {
  install
  if [ -n "$(pids)" ]; then
    echo "nchan already running on 127.0.0.1:$port (pids $(pids))"
    return
  fi
  mkdir -p "$run_dir"/{logs,tmp}
  sed "s/127\.0\.0\.1:8090/127.0.0.1:$port/" "$here/nginx.conf" >"$run_dir/nginx.conf"
  # Each worker may hold as many connections as the hard limit allows.
  ulimit -n "$(ulimit -Hn)"
  nginx -p "$run_dir/" -c "$run_dir/nginx.conf"
  for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "nchan listening on http://127.0.0.1:$port (pids $(pids)); log $run_dir/logs/error.log"
      return
    fi
    sleep 0.1
  done
  echo "nchan did not start; see $run_dir/logs/error.log" >&2
  exit 1
}

stop() {
  local p
  p="$(pids)"
  if [ -z "$p" ]; then
    echo "nchan is not running"
    return
  fi
  nginx -p "$run_dir/" -c "$run_dir/nginx.conf" -s quit
  for _ in $(seq 50); do
    [ -d "/proc/${p%% *}" ] || { echo "nchan stopped"; return; }
    sleep 0.1
  done
  kill ${p%% *} 2>/dev/null || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) p="$(pids)"; if [ -n "$p" ]; then echo "running: pids $p"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 [start|stop|restart|status]" >&2; exit 2 ;;
esac
