#!/usr/bin/env bash
# TPC-H in one run: DuckDB 1.4.4 (2 threads, the answer oracle for scale
# factors the repository ships no answers for), then Sluice (`sluice serve`, 2 embedded
# executors, every query over the Postgres wire) and single-node in-process
# DataFusion (target_partitions = cores, its defaults otherwise) over the same
# Parquet files. Prints each query's time in all three, Sluice's ratio to
# each, and the issue's targets: total <= 0.8x DataFusion, no query over 3x
# DuckDB, every answer equal to DuckDB's.
#
#   benches/tpch/against_duckdb.sh               # SF 10 (generated if missing)
#   SF=1 DATA=dir SLUICE=path benches/tpch/against_duckdb.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

sf="${SF:-10}"
target="${CARGO_TARGET_DIR:-target}"
data="${DATA:-$target/tpch/sf$sf}"
out="${OUT:-$target/tpch/against-duckdb-sf$sf}"
venv="${VENV:-$target/duckdb-venv}"
if [ -z "${SLUICE:-}" ]; then
  cargo build --release --bin sluice
  SLUICE="$target/release/sluice"
fi
if [ ! -d "$data/lineitem" ]; then
  "$SLUICE" tpch gen --sf "$sf" --out "$data"
fi
if ! "$venv/bin/python" -c 'import duckdb; assert duckdb.__version__ == "1.4.4"' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet duckdb==1.4.4
fi
mkdir -p "$out"
"$venv/bin/python" benches/tpch/duckdb_answers.py "$data" "$out/duckdb" --threads 2
"$SLUICE" bench tpch --embedded --data "$data" --answers "$out/duckdb" --compare-local \
  --json "$out/sluice.json" | tee "$out/sluice.txt"
python3 - "$out/sluice.json" "$out/duckdb/duckdb-times.json" <<'PY'
import json, sys
sluice = json.load(open(sys.argv[1]))["queries"]
duckdb = json.load(open(sys.argv[2]))
print(f"{'query':<6}{'Sluice ms':>11}{'DataFusion ms':>15}{'DuckDB ms':>11}{'/DF':>7}{'/DuckDB':>9}")
totals = [0.0, 0.0, 0.0]
worst = (0.0, 0)
for q in sluice:
    s, f, d = min(q["runs_ms"]), min(q["local_runs_ms"]), duckdb[str(q["query"])]
    totals = [totals[0] + s, totals[1] + f, totals[2] + d]
    worst = max(worst, (s / d, q["query"]))
    print(f"q{q['query']:<5}{s:>11.0f}{f:>15.0f}{d:>11.0f}{s / f:>6.2f}x{s / d:>8.2f}x")
s, f, d = totals
print(f"{'total':<6}{s:>11.0f}{f:>15.0f}{d:>11.0f}{s / f:>6.2f}x{s / d:>8.2f}x")
wrong = [q["query"] for q in sluice if q["status"] != "ok"]
print(f"answers equal to DuckDB's: {22 - len(wrong)}/22 {wrong or ''}")
print(f"total vs DataFusion: {s / f:.2f}x (target <= 0.8x): {'met' if s / f <= 0.8 else 'NOT met'}")
print(f"slowest vs DuckDB: q{worst[1]} at {worst[0]:.2f}x (target <= 3x): {'met' if worst[0] <= 3 else 'NOT met'}")
PY
