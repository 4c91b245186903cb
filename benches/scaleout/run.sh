#!/usr/bin/env bash
# Scale-out: the 22 TPC-H queries on a cluster of separate processes on
# loopback (`sluice scheduler`, `sluice executor`s, `sluice serve --scheduler`),
# first with 1 executor, then with 2, each executor pinned to its own core
# with `taskset` and given 1 task slot. Same binary, data and settings in both
# runs; every answer is checked. Prints both totals and the speedup, and how
# busy the executors' cores were (their CPU time over the run's wall time: what
# stage barriers, the frontend and the scheduler leave idle is the rest).
#
#   benches/scaleout/run.sh                     # SF 10 (generated if missing)
#   SF=1 benches/scaleout/run.sh
#   DATA=dir ANSWERS=dir SLUICE=path benches/scaleout/run.sh
#   COUNTS="2" EXECUTOR_ARGS="--shuffle-memory 0" benches/scaleout/run.sh
#
# COUNTS: the executor counts to run (default "1 2"; the speedup is printed
# when both 1 and 2 ran). EXECUTOR_ARGS: extra flags for every executor.
# SETTINGS: `KEY=VALUE` session settings for the benchmark connection (e.g.
# "sluice.single_stage_max_bytes=0" stages every job in every run).
# ITERATIONS: runs of each query (default 1); the totals add each query's
# best run.
# CEILING: 1 (the default) also runs two 1-executor clusters at once, one per
# core, and prints the speedup that leaves for 2 executors on this machine
# (what the cores give perfectly parallel work); 0 skips it.
# PROFILE: a Python with psycopg; after each run's benchmark it records the
# fixed costs and each query's stages and shuffled bytes
# (benches/scaleout/cost_model.py measure) in OUT/executors-N/stages.json.
# ANSWERS: reference answers for the data (the built-in ones serve SF 0.01, 0.1
# and 1; for SF 10 make them with benches/tpch/duckdb_answers.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

sf="${SF:-10}"
target="${CARGO_TARGET_DIR:-target}"
data="${DATA:-$target/tpch/sf$sf}"
out="${OUT:-$target/scaleout}"
if [ -z "${SLUICE:-}" ]; then
  cargo build --release --bin sluice
  SLUICE="$target/release/sluice"
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "scale-out needs at least 2 cores" >&2
  exit 1
fi
if [ ! -d "$data/lineitem" ]; then
  "$SLUICE" tpch gen --sf "$sf" --out "$data"
fi
answers=()
if [ -n "${ANSWERS:-}" ]; then
  answers=(--answers "$ANSWERS")
fi
read -r -a executor_args <<< "${EXECUTOR_ARGS:-}"
settings=()
for setting in ${SETTINGS:-}; do
  settings+=(--set "$setting")
done
mkdir -p "$out"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

# wait_for_line FILE TEXT: waits up to 30 s for TEXT in FILE.
wait_for_line() {
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  cat "$1" >&2
  exit 1
}

# cpu_seconds PID...: CPU time (user + system) the processes have used.
cpu_seconds() {
  local ticks=0 pid fields
  for pid in "$@"; do
    # The fields after the command name, which is in parentheses: utime and
    # stime are the 12th and 13th.
    read -r -a fields <<< "$(sed 's/.*) //' "/proc/$pid/stat")"
    ticks=$((ticks + fields[11] + fields[12]))
  done
  python3 -c "print($ticks / $(getconf CLK_TCK))"
}

# run EXECUTORS [FIRST_CORE [NAME]]: one pass of the 22 queries on a cluster
# whose executors are pinned to the cores from FIRST_CORE (default 0), its
# files in OUT/NAME (default executors-N); prints the total in seconds.
run() {
  local executors=$1 first_core=${2:-0} dir="$out/${3:-executors-$1}"
  rm -rf "$dir" && mkdir -p "$dir"
  local scheduler_port frontend_port
  scheduler_port=$(free_port)
  frontend_port=$(free_port)
  "$SLUICE" scheduler --listen "127.0.0.1:$scheduler_port" --http off \
    > "$dir/scheduler.log" 2>&1 &
  pids+=($!)
  sleep 1
  local executor_pids=()
  for core in $(seq "$first_core" $((first_core + executors - 1))); do
    taskset -c "$core" "$SLUICE" executor --scheduler "127.0.0.1:$scheduler_port" \
      --listen 127.0.0.1:0 --http off --slots 1 --work-dir "$dir/work-$core" \
      "${executor_args[@]}" > "$dir/executor-$core.log" 2>&1 &
    pids+=($!)
    executor_pids+=($!)
  done
  "$SLUICE" serve --scheduler "127.0.0.1:$scheduler_port" \
    --listen "127.0.0.1:$frontend_port" --http off --data-dir "$dir/frontend" \
    > "$dir/frontend.log" 2>&1 &
  pids+=($!)
  # The scheduler, the frontend and (below) the benchmark client: on no
  # pinned core, so with 2 executors they take their CPU from the executors.
  local other_pids=("${pids[0]}" "$!")
  wait_for_line "$dir/frontend.log" "sluice ready"
  sleep 3 # every executor registered and counted
  "$SLUICE" tpch register --data "$data" --port "$frontend_port" > /dev/null
  local cpu_before other_before start
  cpu_before=$(cpu_seconds "${executor_pids[@]}")
  other_before=$(cpu_seconds "${other_pids[@]}")
  start=$(date +%s.%N)
  "$SLUICE" bench tpch --port "$frontend_port" --data "$data" "${answers[@]}" \
    --iterations "${ITERATIONS:-1}" "${settings[@]}" --json "$dir/results.json" \
    > "$dir/bench.txt" &
  local bench=$!
  local client_cpu=0
  while kill -0 "$bench" 2>/dev/null; do
    client_cpu=$(cpu_seconds "$bench" 2>/dev/null || echo "$client_cpu")
    sleep 0.5
  done
  wait "$bench"
  python3 -c "
wall = $(date +%s.%N) - $start
busy = ($(cpu_seconds "${executor_pids[@]}") - $cpu_before) / (wall * $executors)
other = $(cpu_seconds "${other_pids[@]}") - $other_before + $client_cpu
print(f'executors busy {busy * 100:.0f}% of {wall:.1f} s; scheduler, frontend' \
      f' and client used {other:.1f} s of CPU')" > "$dir/busy.txt"
  if [ -n "${PROFILE:-}" ] && [ -z "${3:-}" ]; then
    "$PROFILE" benches/scaleout/cost_model.py measure --port "$frontend_port" \
      --queries benches/tpch/queries --out "$dir/stages.json"
  fi
  stop_all
  python3 - "$dir/results.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
wrong = [q["query"] for q in results["queries"] if q["status"] not in ("ok", "unchecked")]
if wrong:
    sys.exit(f"wrong answers: {wrong}")
print(f'{sum(min(q["runs_ms"]) for q in results["queries"]) / 1000:.1f}')
PY
}

counts="${COUNTS:-1 2}"
declare -A totals
for n in $counts; do
  totals[$n]=$(run "$n")
done
# The machine's own limit: two independent one-executor clusters, one per
# core, running the queries at the same time. Their slowdown against one
# alone (shared memory bandwidth and caches, the unpinned scheduler, frontend
# and client of both) bounds what any split over two executors can reach.
if [ "${CEILING:-1}" = 1 ]; then
  run 1 0 pair-0 > "$out/pair-0.total" &
  pair_0=$!
  run 1 1 pair-1 > "$out/pair-1.total"
  wait "$pair_0"
fi
echo "TPC-H SF $sf, 22 queries, executors pinned to one core each with 1 slot" \
  "${EXECUTOR_ARGS:+(executors: $EXECUTOR_ARGS)}${SETTINGS:+ (settings: $SETTINGS)}"
for n in $counts; do
  echo "$n executor(s): ${totals[$n]} s ($(cat "$out/executors-$n/busy.txt"))"
done
if [ -n "${totals[1]:-}" ] && [ -n "${totals[2]:-}" ]; then
  python3 -c "print(f'speedup: {${totals[1]} / ${totals[2]}:.2f}x')"
fi
if [ "${CEILING:-1}" = 1 ]; then
  pair_0=$(cat "$out/pair-0.total")
  pair_1=$(cat "$out/pair-1.total")
  echo "two 1-executor clusters at once, one per core: $pair_0 s and $pair_1 s"
  if [ -n "${totals[1]:-}" ]; then
    python3 -c "print(f'ceiling for 2 executors (1 executor alone / half the pair\'s mean):' \
      f' {${totals[1]} / (($pair_0 + $pair_1) / 4):.2f}x')"
  fi
fi
for n in $counts; do
  echo "--- $n executor(s), per query:"
  cat "$out/executors-$n/bench.txt"
done
