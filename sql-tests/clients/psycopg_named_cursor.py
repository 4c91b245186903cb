"""Server-side cursors on a Sluice server, with psycopg 3's named cursors
(what SQLAlchemy's stream_results and chunked pandas.read_sql use): DECLARE,
a Describe of the cursor's portal, FETCH in chunks (in text, and in binary
over the extended protocol), CLOSE. Run once with
psycopg's pure-Python implementation and once with its binary one.

Usage: python psycopg_named_cursor.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import os
from datetime import date, timedelta
from decimal import Decimal
import subprocess
import sys

import psycopg

ROWS = 10_000
QUERY = (
    "SELECT value AS v, 'row ' || value AS s, value * 0.5 AS d "
    f"FROM generate_series(1, {ROWS}) ORDER BY value"
)


def check(port: int) -> None:
    conn = psycopg.connect(host="127.0.0.1", port=port, user="sluice", dbname="sluice")
    with conn.transaction():
        cur = conn.cursor(name="tiny")
        cur.execute("SELECT 1 AS a, 'x' AS b")
        names = [column.name for column in cur.description]
        assert names == ["a", "b"], names
        assert cur.fetchall() == [(1, "x")]
        cur.close()
    with conn.transaction():
        cur = conn.cursor(name="chunks")
        cur.execute(QUERY)
        names = [column.name for column in cur.description]
        assert names == ["v", "s", "d"], names
        seen = 0
        while True:
            chunk = cur.fetchmany(999)
            if not chunk:
                break
            for v, s, d in chunk:
                seen += 1
                assert (v, s, d) == (seen, f"row {seen}", seen * 0.5), (v, s, d, seen)
        assert seen == ROWS, seen
        cur.close()
    # binary=True fetches over the extended protocol with binary results:
    # each FETCH is described as the cursor's columns and typed on the wire.
    with conn.transaction():
        cur = conn.cursor(name="typed", binary=True)
        cur.execute(
            "SELECT value AS v, CAST(value AS DECIMAL(10, 2)) / 4 AS n, "
            "DATE '2024-02-28' + CAST(value AS INT) AS day, "
            "CASE WHEN value % 2 = 0 THEN NULL ELSE 'odd' END AS maybe "
            "FROM generate_series(1, 2500) ORDER BY value"
        )
        seen = 0
        while chunk := cur.fetchmany(1000):
            for v, n, day, maybe in chunk:
                seen += 1
                assert v == seen, (v, seen)
                assert n == Decimal(seen) / 4, (n, seen)
                assert day == date(2024, 2, 28) + timedelta(days=seen), (day, seen)
                assert maybe == (None if seen % 2 == 0 else "odd"), (maybe, seen)
        assert seen == 2500, seen
        cur.close()
    conn.close()


def main() -> None:
    port = int(sys.argv[1])
    if len(sys.argv) > 3:
        check(port)
        print(f"{os.environ['PSYCOPG_IMPL']}: ok")
        return
    for implementation in ("python", "binary"):
        env = dict(os.environ, PSYCOPG_IMPL=implementation)
        child = subprocess.run(
            [sys.executable, __file__, sys.argv[1], sys.argv[2], "child"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert child.returncode == 0, (
            f"psycopg {implementation}: exit {child.returncode}\n{child.stdout}\n{child.stderr}"
        )
        assert f"{implementation}: ok" in child.stdout, child.stdout
    print("psycopg named cursor: ok")


if __name__ == "__main__":
    main()
