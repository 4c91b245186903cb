"""Reads every row of a query through a psycopg 3 named (server-side) cursor,
as SQLAlchemy's stream_results and chunked pandas.read_sql do, and prints
the rows read and the seconds taken.

Usage: python named_cursor.py HOST PORT USER DBNAME QUERY
"""

import sys
import time

import psycopg


def main() -> None:
    host, port, user, dbname, query = sys.argv[1:6]
    start = time.monotonic()
    with psycopg.connect(host=host, port=int(port), user=user, dbname=dbname) as conn:
        with conn.cursor(name="stream") as cursor:
            cursor.itersize = 10_000
            cursor.execute(query)
            rows = 0
            while chunk := cursor.fetchmany(10_000):
                rows += len(chunk)
    print(f"{rows} {time.monotonic() - start:.2f}")


if __name__ == "__main__":
    main()
