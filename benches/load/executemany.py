"""psycopg 3 `executemany` of one-row INSERTs into a Sluice managed table,
timed: the server's cost of one prepared INSERT, without pandas.

Usage: python executemany.py PORT ROWS
Prints the microseconds per row, after checking the rows read back.
"""

import sys
import time

import psycopg


def main() -> None:
    port, rows = int(sys.argv[1]), int(sys.argv[2])
    dsn = f"host=127.0.0.1 port={port} user=sluice dbname=sluice"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS executemany_rows")
        conn.execute("CREATE TABLE executemany_rows (a bigint, b double precision, c varchar)")
        values = [(i, i * 0.5, f"s{i}") for i in range(rows)]
        with conn.cursor() as cur:
            started = time.perf_counter()
            cur.executemany("INSERT INTO executemany_rows (a, b, c) VALUES (%s, %s, %s)", values)
            seconds = time.perf_counter() - started
        count, total = conn.execute("SELECT count(*), sum(a) FROM executemany_rows").fetchone()
    assert (count, total) == (rows, rows * (rows - 1) // 2), (count, total)
    print(f"executemany      {rows:>9} rows  {seconds:8.2f} s  {seconds / rows * 1e6:6.1f} us/row")


if __name__ == "__main__":
    main()
