#!/usr/bin/env bash
# Result streaming: SELECT * FROM lineitem (TPC-H SF 1, 6M rows) sent to one
# client, by Sluice (`sluice serve`, release build) and by PostgreSQL 15
# (Debian's `postgresql` package, started here on loopback) holding the same
# rows. Both are read by the same client (`sluice bench stream`: text format
# over the simple protocol, binary over the extended one) and by psql's
# `\copy … TO /dev/null`. Also reports Sluice's resident memory growth while
# streaming.
#
#   benches/streaming/run.sh               # SF 1
#   SF=0.1 benches/streaming/run.sh
#   SLUICE=/path/to/sluice DATA=/path/to/sf1 benches/streaming/run.sh
#   PYTHON=/path/to/venv/python (with psycopg 3): adds a named-cursor read
#   SKIP_ENCODER=1: leaves out the encoder cargo bench
set -euo pipefail
cd "$(dirname "$0")/../.."

sf="${SF:-1}"
iterations="${ITERATIONS:-3}"
target="${CARGO_TARGET_DIR:-target}"
data="${DATA:-$target/tpch/sf$sf}"
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
work="$(mktemp -d)"
sluice_pid=""
cleanup() {
  [ -n "$sluice_pid" ] && kill "$sluice_pid" 2>/dev/null || true
  [ -f "$work/pg/postmaster.pid" ] && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

if [ -z "${SLUICE:-}" ]; then
  cargo build --release -p sluice-server --bin sluice
  SLUICE="$target/release/sluice"
fi
sluice="$SLUICE"
if [ ! -d "$data/lineitem" ]; then
  "$sluice" tpch gen --sf "$sf" --out "$data"
fi

# Sluice, embedded cluster.
sluice_port="$(free_port)"
"$sluice" serve --listen "127.0.0.1:$sluice_port" --data-dir "$work/sluice" >"$work/sluice.log" 2>&1 &
sluice_pid=$!
for _ in $(seq 50); do grep -q "ready" "$work/sluice.log" && break; sleep 0.1; done
"$sluice" tpch register --data "$data" --port "$sluice_port" >/dev/null
# Resident memory from here on: idle, then every result streamed below
# (the CSV export that loads PostgreSQL is itself a streamed COPY TO STDOUT).
before_kb="$(rss_kb "$sluice_pid")"
( while kill -0 "$sluice_pid" 2>/dev/null; do rss_kb "$sluice_pid"; sleep 0.2; done ) >"$work/rss" &
sampler=$!

# PostgreSQL 15 on loopback, lineitem loaded from Sluice's own CSV output.
pg_port="$(free_port)"
mkdir -p "$work/pg" && chown postgres "$work" "$work/pg"
runuser -u postgres -- "$pg_bin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c shared_buffers=1GB" start >/dev/null
pg() { psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres "$@"; }
pg -c "CREATE TABLE lineitem (l_orderkey bigint, l_partkey bigint, l_suppkey bigint,
  l_linenumber integer, l_quantity numeric(15,2), l_extendedprice numeric(15,2),
  l_discount numeric(15,2), l_tax numeric(15,2), l_returnflag text, l_linestatus text,
  l_shipdate date, l_commitdate date, l_receiptdate date, l_shipinstruct text,
  l_shipmode text, l_comment text)"
echo "loading lineitem into PostgreSQL..."
psql -X -q -h 127.0.0.1 -p "$sluice_port" -U sluice -d sluice \
  -c "\\copy (SELECT * FROM lineitem) TO STDOUT (FORMAT csv)" \
  | pg -c "\\copy lineitem FROM STDIN (FORMAT csv)"
pg -c "VACUUM ANALYZE lineitem"
rows="$(pg -At -c "SELECT count(*) FROM lineitem")"

# seconds COMMAND...: runs COMMAND (output discarded) and prints its wall-clock seconds.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.2f}')"
}
sl() { psql -X -q -h 127.0.0.1 -p "$sluice_port" -U sluice -d sluice "$@"; }

echo
echo "== client: sluice bench stream (tokio-postgres), SELECT * FROM lineitem"
"$sluice" bench stream --port "$sluice_port" --iterations "$iterations" --label sluice
echo "== client: psql, both servers, $rows rows"
sluice_fetch="$(seconds sl -v FETCH_COUNT=10000 -A -t -c 'select * from lineitem')"
sluice_copy="$(seconds sl -c "\\copy (select * from lineitem) to '/dev/null'")"
kill "$sampler" 2>/dev/null || true
peak_kb="$(sort -n "$work/rss" | tail -1)"
pg_fetch="$(seconds pg -v FETCH_COUNT=10000 -A -t -c 'select * from lineitem')"
pg_copy="$(seconds pg -c "\\copy (select * from lineitem) to '/dev/null'")"
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "RESULT psql -v FETCH_COUNT=10000 -A -t: sluice ${sluice_fetch} s, postgresql ${pg_fetch} s ($(ratio "$sluice_fetch" "$pg_fetch")x)"
echo "RESULT psql \\copy ... to /dev/null: sluice ${sluice_copy} s, postgresql ${pg_copy} s ($(ratio "$sluice_copy" "$pg_copy")x)"
echo "RESULT sluice memory: resident $((before_kb / 1024)) MB idle, peak $((peak_kb / 1024)) MB while streaming (growth $(((peak_kb - before_kb) / 1024)) MB)"

"$sluice" bench stream --port "$pg_port" --user postgres --dbname postgres \
  --iterations "$iterations" --label postgresql

# A psycopg 3 named cursor (SQLAlchemy stream_results, chunked pandas.read_sql),
# when the Python given has psycopg.
python="${PYTHON:-python3}"
if "$python" -c "import psycopg" 2>/dev/null; then
  echo "== client: psycopg 3 named cursor, fetchmany(10000)"
  read -r s_rows s_secs < <("$python" benches/streaming/named_cursor.py 127.0.0.1 "$sluice_port" sluice sluice "SELECT * FROM lineitem")
  read -r p_rows p_secs < <("$python" benches/streaming/named_cursor.py 127.0.0.1 "$pg_port" postgres postgres "SELECT * FROM lineitem")
  echo "RESULT psycopg named cursor: sluice ${s_rows} rows in ${s_secs} s, postgresql ${p_rows} rows in ${p_secs} s ($(ratio "$s_secs" "$p_secs")x)"
else
  echo "(no psycopg for $python: PYTHON=/path/to/python with psycopg 3 adds the named-cursor run)"
fi

# The row encoders alone (a cargo bench; SKIP_ENCODER=1 leaves it out).
if [ -z "${SKIP_ENCODER:-}" ]; then
  echo "== DataRow encoding alone, lineitem SF $sf batches in memory"
  SF="$sf" cargo bench -q -p sluice-server --bench row_encoding
fi
