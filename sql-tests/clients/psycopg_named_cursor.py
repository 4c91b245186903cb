"""Server-side cursors on a Sluice server, with psycopg 3's named cursors
(what SQLAlchemy's stream_results and chunked pandas.read_sql use): DECLARE,
a Describe of the cursor's portal, FETCH in chunks, CLOSE. Run once with
psycopg's pure-Python implementation and once with its binary one.

Usage: python psycopg_named_cursor.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import os
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
