#!/usr/bin/env bash
# Result streaming from executors in other processes: SELECT * FROM lineitem
# (TPC-H SF 1, 6M rows) through a frontend started with `sluice serve
# --scheduler`, a `sluice scheduler` and one `sluice executor` (2 slots), all
# on loopback. Prints the time to the first row and rows/s of `sluice bench
# stream` (text and binary), psql's FETCH_COUNT and \copy times, and the
# frontend's resident memory growth.
#
#   SLUICE=/path/to/release/sluice DATA=/path/to/sf1 benches/streaming/separate_processes.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

sf="${SF:-1}"
iterations="${ITERATIONS:-2}"
target="${CARGO_TARGET_DIR:-target}"
data="${DATA:-$target/tpch/sf$sf}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
wait_for() { for _ in $(seq 100); do grep -q "$2" "$1" && return; sleep 0.1; done; echo "no '$2' in $1" >&2; exit 1; }

if [ -z "${SLUICE:-}" ]; then
  cargo build --release -p sluice-server --bin sluice
  SLUICE="$target/release/sluice"
fi
sluice="$SLUICE"
if [ ! -d "$data/lineitem" ]; then
  "$sluice" tpch gen --sf "$sf" --out "$data"
fi

scheduler_port="$(free_port)"
"$sluice" scheduler --listen "127.0.0.1:$scheduler_port" --http "127.0.0.1:$(free_port)" \
  >"$work/scheduler.log" 2>&1 &
pids+=($!)
wait_for "$work/scheduler.log" "sluice scheduler ready"
"$sluice" executor --scheduler "127.0.0.1:$scheduler_port" --listen 127.0.0.1:0 \
  --http "127.0.0.1:$(free_port)" --slots 2 --work-dir "$work/executor" >"$work/executor.log" 2>&1 &
pids+=($!)
frontend_port="$(free_port)"
"$sluice" serve --scheduler "127.0.0.1:$scheduler_port" --listen "127.0.0.1:$frontend_port" \
  --data-dir "$work/frontend" >"$work/frontend.log" 2>&1 &
frontend_pid=$!
pids+=($frontend_pid)
wait_for "$work/frontend.log" "ready"
sl() { psql -X -q -h 127.0.0.1 -p "$frontend_port" -U sluice -d sluice "$@"; }
for _ in $(seq 100); do
  [ "$(sl -At -c 'SELECT count(*) FROM sluice.executors')" = 1 ] && break
  sleep 0.2
done
"$sluice" tpch register --data "$data" --port "$frontend_port" >/dev/null
before_kb="$(rss_kb "$frontend_pid")"
( while kill -0 "$frontend_pid" 2>/dev/null; do rss_kb "$frontend_pid"; sleep 0.2; done ) >"$work/rss" &
sampler=$!

seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f}')"
}

echo "== separate processes: frontend, scheduler, one executor; SELECT * FROM lineitem"
"$sluice" bench stream --port "$frontend_port" --iterations "$iterations" --label separate
fetch="$(seconds sl -v FETCH_COUNT=10000 -A -t -c 'select * from lineitem')"
copy="$(seconds sl -c "\\copy (select * from lineitem) to '/dev/null'")"
kill "$sampler" 2>/dev/null || true
peak_kb="$(sort -n "$work/rss" | tail -1)"
echo "RESULT separate processes, psql -v FETCH_COUNT=10000 -A -t: ${fetch} s"
echo "RESULT separate processes, psql \\copy ... to /dev/null: ${copy} s"
echo "RESULT separate processes, frontend memory: resident $((before_kb / 1024)) MB idle, peak $((peak_kb / 1024)) MB (growth $(((peak_kb - before_kb) / 1024)) MB)"
