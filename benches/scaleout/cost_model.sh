#!/usr/bin/env bash
# The staged path's cost model: runs benches/scaleout/run.sh on 1 and 2 pinned
# executors with every job split into stages, records each query's stages and
# shuffled bytes, and prints the fitted costs (per job, stage, task and byte
# shuffled) and the model's totals for 1, 2, 8 and 32 executors.
#
#   VENV=dir DATA=dir ANSWERS=dir SLUICE=path benches/scaleout/cost_model.sh
#
# VENV: a virtualenv with psycopg (made if missing; default
# $CARGO_TARGET_DIR/bench-venv). Other variables as for run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
venv="${VENV:-$target/bench-venv}"
if ! "$venv/bin/python" -c 'import psycopg' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "psycopg[binary]"
fi
export OUT="${OUT:-$target/cost-model}"
COUNTS="1 2" SETTINGS="sluice.single_stage_max_bytes=0" PROFILE="$venv/bin/python" \
  benches/scaleout/run.sh
python3 benches/scaleout/cost_model.py fit "$OUT"
