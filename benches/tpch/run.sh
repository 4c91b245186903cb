#!/usr/bin/env bash
# TPC-H benchmark: Sluice (embedded cluster, 2 executors, queries over the
# Postgres wire) against single-node in-process DataFusion over the same
# Parquet files. Every answer is checked against the reference answers.
#
#   benches/tpch/run.sh                 # SF 1, 5 iterations
#   SF=0.1 ITERATIONS=5 benches/tpch/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

sf="${SF:-1}"
iterations="${ITERATIONS:-5}"
target="${CARGO_TARGET_DIR:-target}"
data="${DATA:-$target/tpch/sf$sf}"

cargo build --release --bin sluice
sluice="$target/release/sluice"
if [ ! -d "$data/lineitem" ]; then
  "$sluice" tpch gen --sf "$sf" --out "$data"
fi
"$sluice" bench tpch --embedded --data "$data" --iterations "$iterations" \
  --compare-local --json "$target/tpch/sf$sf-results.json"
