#!/usr/bin/env python3
"""Reference answers and timings for TPC-H at any scale factor, from DuckDB.

The built-in answers cover SF 0.01, 0.1 and 1; for larger scale factors DuckDB
(pinned: duckdb==1.4.4, 2 threads as on the benchmark machine) is the oracle.
Runs the 22 queries of benches/tpch/queries over the Parquet files that
`sluice tpch gen` wrote and writes one `qNN.csv` per query in the format of
benches/tpch/answers (README there), ready for `sluice bench tpch --answers`,
plus `duckdb-times.json` with each query's time in milliseconds.

    python3 benches/tpch/duckdb_answers.py DATA_DIR OUT_DIR [--threads 2]
"""

import argparse
import datetime
import decimal
import json
import pathlib
import sys
import time

import duckdb

TABLES = ["part", "supplier", "partsupp", "customer", "orders", "lineitem", "nation", "region"]
QUERIES = pathlib.Path(__file__).resolve().parent / "queries"


def cell(value):
    """One value as the reference files write it."""
    if value is None:
        return ""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=pathlib.Path, help="directory with one folder per table")
    parser.add_argument("out", type=pathlib.Path, help="where qNN.csv files are written")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    connection = duckdb.connect()
    connection.execute(f"SET threads = {args.threads}")
    for table in TABLES:
        files = args.data.resolve() / table / "*.parquet"
        connection.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{files}')")
    args.out.mkdir(parents=True, exist_ok=True)
    times = {}
    for number in range(1, 23):
        sql = (QUERIES / f"q{number:02}.sql").read_text()
        started = time.perf_counter()
        cursor = connection.execute(sql)
        rows = cursor.fetchall()
        elapsed = (time.perf_counter() - started) * 1000
        times[number] = elapsed
        names = [column[0] for column in cursor.description]
        lines = ["|".join(names)] + ["|".join(cell(v) for v in row) for row in rows]
        (args.out / f"q{number:02}.csv").write_text("\n".join(lines) + "\n")
        print(f"q{number:02} {len(rows):>6} rows {elapsed:>10.1f} ms", flush=True)
    (args.out / "duckdb-times.json").write_text(json.dumps(times, indent=1) + "\n")
    print(f"total {sum(times.values()):.1f} ms (DuckDB {duckdb.__version__}, {args.threads} threads)")


if __name__ == "__main__":
    sys.exit(main())
