#!/usr/bin/env bash
# Dashboard concurrency: pgbench with 64 clients of a small query (simple,
# extended and prepared protocol), against
# Sluice (`sluice serve`, release build, TPC-H SF 1 registered) and against
# PostgreSQL 15 (Debian's `postgresql-15` package, started here on loopback)
# holding the same `nation` rows. Prints transactions per second and the
# p50/p95/p99 latency of both, for the extended and the prepared protocol;
# then a mixed run on Sluice where 4 clients run TPC-H q1 in a loop while 60
# run the small query; then the small query as Ballista jobs (the cluster
# path), from 1 client (the fixed cost of a job) and from 64.
#
#   benches/concurrency/run.sh                 # 20 s per run
#   DURATION=10 benches/concurrency/run.sh
#   SLUICE=/path/to/sluice DATA=/path/to/sf1 benches/concurrency/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

duration="${DURATION:-20}"
target="${CARGO_TARGET_DIR:-target}"
data="${DATA:-$target/tpch/sf1}"
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
work="$(mktemp -d)"
cleanup() {
  [ -f "$work/pids" ] && xargs kill <"$work/pids" 2>/dev/null || true
  [ -f "$work/pg/postmaster.pid" ] && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ -z "${SLUICE:-}" ]; then
  cargo build --release --bin sluice
  SLUICE="$target/release/sluice"
fi
if [ ! -d "$data/lineitem" ]; then
  "$SLUICE" tpch gen --sf 1 --out "$data"
fi

cat >"$work/small.sql" <<'SQL'
\set k random(0, 24)
SELECT n_regionkey, count(*) FROM nation WHERE n_nationkey <> :k GROUP BY n_regionkey ORDER BY 1;
SQL
# TPC-H q1 on one line (pgbench reads a statement per line).
tr '\n' ' ' <benches/tpch/queries/q01.sql | sed 's/;* *$/;/' >"$work/q1.sql"
echo >>"$work/q1.sql"

# start_sluice NAME [ARGS...]: starts `sluice serve` with TPC-H registered
# and prints its port (run in a subshell: its pid goes to $work/pids).
start_sluice() {
  local name=$1 port
  shift
  port="$(free_port)"
  "$SLUICE" serve --listen "127.0.0.1:$port" --data-dir "$work/$name" --http off "$@" \
    >"$work/$name.log" 2>&1 &
  echo "$!" >>"$work/pids"
  for _ in $(seq 100); do grep -q "ready" "$work/$name.log" && break; sleep 0.1; done
  "$SLUICE" tpch register --data "$data" --port "$port" >/dev/null
  echo "$port"
}

# Sluice, embedded cluster.
sluice_port="$(start_sluice sluice)"

# PostgreSQL 15 on loopback, nation loaded from Sluice's own CSV output.
pg_port="$(free_port)"
mkdir -p "$work/pg" && chown postgres "$work" "$work/pg"
runuser -u postgres -- "$pg_bin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
pg() { psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres "$@"; }
pg -c "CREATE TABLE nation (n_nationkey bigint, n_name text, n_regionkey bigint, n_comment text)"
psql -X -q -h 127.0.0.1 -p "$sluice_port" -U sluice -d sluice \
  -c "\\copy (SELECT n_nationkey, n_name, n_regionkey, n_comment FROM nation) TO STDOUT (FORMAT csv)" \
  | pg -c "\\copy nation FROM STDIN (FORMAT csv)"
pg -c "VACUUM ANALYZE nation"

# The small query's answer must be the same on both.
answer='SELECT n_regionkey, count(*) FROM nation WHERE n_nationkey <> 7 GROUP BY n_regionkey ORDER BY 1'
if [ "$(pg -At -c "$answer")" != "$(psql -X -At -h 127.0.0.1 -p "$sluice_port" -U sluice -d sluice -c "$answer")" ]; then
  echo "the small query's rows differ between Sluice and PostgreSQL" >&2
  exit 1
fi

# pgbench LABEL PORT USER DB MODE CLIENTS SCRIPT [PGBENCH ARGS...]: runs it
# with per-transaction logs and prints tps, failures and latency percentiles.
bench() {
  local label=$1 port=$2 user=$3 db=$4 mode=$5 clients=$6 script=$7
  shift 7
  local logs="$work/log-$label"
  rm -f "$logs".*
  pgbench -h 127.0.0.1 -p "$port" -U "$user" -n -c "$clients" -j 2 -T "$duration" -M "$mode" \
    -f "$script" --log --log-prefix="$logs" "$@" "$db" >"$work/out-$label" 2>&1 || {
    cat "$work/out-$label" >&2
    return 1
  }
  local tps failed
  tps=$(awk '/^tps = / { printf($3 < 10 ? "%.1f" : "%.0f", $3) }' "$work/out-$label")
  failed=$(awk '/failed transactions:/ { print $5 }' "$work/out-$label")
  # Per-transaction log lines: client, transaction, latency (µs), ...
  cat "$logs".* | awk '{ print $3 }' | sort -n | awk -v label="$label" -v tps="$tps" -v failed="$failed" '
    function at(q,    i) { i = int(NR * q); if (i < 1) i = 1; return latency[i] / 1000 }
    { latency[NR] = $1 }
    END {
      printf "%-30s %7s tps  p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms  failed %s\n",
        label, tps, at(0.50), at(0.95), at(0.99), failed
    }'
}

echo "== 64 clients, $duration s each: $(tail -1 "$work/small.sql")"
for mode in simple extended prepared; do
  bench "sluice -M $mode" "$sluice_port" sluice sluice "$mode" 64 "$work/small.sql"
  bench "postgresql -M $mode" "$pg_port" postgres postgres "$mode" 64 "$work/small.sql"
done

echo "== mixed on Sluice: 60 clients of the small query while 4 run TPC-H q1 in a loop"
bench "sluice q1 x4 (background)" "$sluice_port" sluice sluice extended 4 "$work/q1.sql" >"$work/q1-result" &
q1=$!
sleep 1
bench "sluice small x60 beside q1" "$sluice_port" sluice sluice extended 60 "$work/small.sql"
wait "$q1"
cat "$work/q1-result"

echo "== the cluster path: every query a Ballista job (--frontend-max-bytes 0)"
cluster_port="$(start_sluice cluster --frontend-max-bytes 0)"
bench "sluice jobs, 1 client" "$cluster_port" sluice sluice prepared 1 "$work/small.sql"
bench "sluice jobs, 64 clients" "$cluster_port" sluice sluice prepared 64 "$work/small.sql"
