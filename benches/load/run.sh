#!/usr/bin/env bash
# Bulk loads, Sluice against PostgreSQL 15 in one run:
#  - TPC-H SF 1 lineitem (6,001,215 rows, ~750 MB of CSV) through psql's
#    `\copy lineitem FROM 'lineitem.csv' (FORMAT csv)`, into `sluice serve`
#    (release build, a managed table in its local warehouse) and into
#    PostgreSQL 15 (Debian's postgresql-15, started here on loopback): the
#    same file, each run REPEAT times, the best time and the ratio printed;
#  - the same file with a bad row on line 1,000,001: nothing is loaded and
#    the error names the line;
#  - psycopg's `executemany` of 20,000 one-row INSERTs (microseconds a row),
#    then pandas `to_sql` (SQLAlchemy 2 + psycopg 3) of 100,000 rows with the
#    default method (one INSERT per row) and of 1,000,000 rows with
#    method='multi', into Sluice, with the segments each table was left with.
#
#   benches/load/run.sh
#   REPEAT=3 SLUICE=/path/to/sluice DATA=/path/to/sf1 benches/load/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

repeat="${REPEAT:-2}"
target="${CARGO_TARGET_DIR:-target}"
data="${DATA:-$target/tpch/sf1}"
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
python="${SLUICE_PYTHON:-$HOME/.cache/sluice/venv/bin/python}"
work="$(mktemp -d)"
cleanup() {
  [ -f "$work/pids" ] && xargs kill <"$work/pids" 2>/dev/null || true
  [ -f "$work/pg/postmaster.pid" ] && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

if [ -z "${SLUICE:-}" ]; then
  cargo build --release --bin sluice
  SLUICE="$target/release/sluice"
fi
if [ ! -d "$data/lineitem" ]; then
  "$SLUICE" tpch gen --sf 1 --out "$data"
fi

sluice_port="$(free_port)"
"$SLUICE" serve --listen "127.0.0.1:$sluice_port" --data-dir "$work/sluice" --http off \
  >"$work/sluice.log" 2>&1 &
echo "$!" >>"$work/pids"
for _ in $(seq 100); do grep -q "ready" "$work/sluice.log" && break; sleep 0.1; done
sl() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$sluice_port" -U sluice -d sluice "$@"; }

pg_port="$(free_port)"
mkdir -p "$work/pg" && chown postgres "$work" "$work/pg"
runuser -u postgres -- "$pg_bin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
pg() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres "$@"; }

# The CSV, written once by Sluice from the generated Parquet files.
csv="$target/tpch/lineitem-sf1.csv"
if [ ! -s "$csv" ]; then
  "$SLUICE" tpch register --data "$data" --port "$sluice_port" >/dev/null
  sl -c "\\copy (SELECT * FROM lineitem) TO '$csv.part' (FORMAT csv)"
  mv "$csv.part" "$csv"
fi
rows=$(wc -l <"$csv")
chmod a+r "$csv"

columns="l_orderkey bigint, l_partkey bigint, l_suppkey bigint, l_linenumber integer,
  l_quantity numeric(15,2), l_extendedprice numeric(15,2), l_discount numeric(15,2),
  l_tax numeric(15,2), l_returnflag varchar, l_linestatus varchar, l_shipdate date,
  l_commitdate date, l_receiptdate date, l_shipinstruct varchar, l_shipmode varchar,
  l_comment varchar"
check="SELECT count(*), sum(l_quantity), max(l_shipdate) FROM loaded"

# load NAME CLIENT: times `\copy loaded FROM csv` into a fresh table.
load() {
  local name=$1 client=$2 best="" started seconds
  for run in $(seq "$repeat"); do
    $client -c "DROP TABLE IF EXISTS loaded" -c "CREATE TABLE loaded ($columns)"
    started=$(now)
    $client -c "\\copy loaded FROM '$csv' (FORMAT csv)"
    seconds=$(echo "$(now) - $started" | bc)
    printf "%-12s run %d: %6.2f s  (%.0f rows/s)\n" "$name" "$run" "$seconds" "$(echo "$rows / $seconds" | bc -l)" >&2
    if [ -z "$best" ] || [ "$(echo "$seconds < $best" | bc)" = 1 ]; then best=$seconds; fi
  done
  echo "$best"
}

echo "== \\copy lineitem FROM csv: $rows rows, $(du -m "$csv" | cut -f1) MB, best of $repeat"
pg_seconds=$(load postgresql pg)
sluice_seconds=$(load sluice sl)
pg_answer=$(pg -At -c "$check")
sluice_answer=$(sl -At -c "$check")
echo "postgresql 15: $pg_seconds s  ($pg_answer)"
echo "sluice:        $sluice_seconds s  ($sluice_answer)"
if [ "$pg_answer" != "$sluice_answer" ]; then
  echo "the loaded rows differ" >&2
  exit 1
fi
printf "sluice / postgresql: %.2fx\n" "$(echo "$sluice_seconds / $pg_seconds" | bc -l)"

echo "== a bad row on line 1,000,001"
bad="$work/lineitem-bad.csv"
awk 'NR == 1000001 { sub(/^[0-9]+/, "x") } { print }' "$csv" >"$bad"
sl -c "DROP TABLE IF EXISTS loaded" -c "CREATE TABLE loaded ($columns)"
if sl -c "\\copy loaded FROM '$bad' (FORMAT csv)" 2>"$work/bad.err"; then
  echo "the bad file loaded" >&2
  exit 1
fi
cat "$work/bad.err"
grep -q "line 1000001" "$work/bad.err" || { echo "the error does not name line 1000001" >&2; exit 1; }
echo "rows kept: $(sl -At -c "SELECT count(*) FROM loaded")"
rm -f "$bad"

echo "== pandas to_sql into Sluice"
"$python" benches/load/executemany.py "$sluice_port" 20000
"$python" benches/load/to_sql.py "$sluice_port" 100000 default
"$python" benches/load/to_sql.py "$sluice_port" 1000000 multi
