"""psycopg 3 against a running Sluice server: server-side parameter binding
returns correctly typed values.

Usage: python psycopg_types.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import datetime
import decimal
import sys

import psycopg


def main() -> None:
    port, data_dir = int(sys.argv[1]), sys.argv[2]
    with psycopg.connect(host="127.0.0.1", port=port, user="sluice", dbname="sluice", autocommit=True) as conn:
        conn.execute(
            "COPY (SELECT * FROM (VALUES "
            "(1, CAST(7 AS INT), CAST(9000000000 AS BIGINT), CAST(2.5 AS DOUBLE), CAST('12.34' AS DECIMAL(10,2)), "
            "'hello', DATE '2024-02-29', TIMESTAMP '2024-02-29 13:14:15', true, CAST(NULL AS INT))"
            f") AS v(id, i, b, d, n, t, dt, ts, flag, maybe)) TO '{data_dir}/py/part-0.parquet' (FORMAT parquet)"
        )
        conn.execute(f"CREATE EXTERNAL TABLE py_typed STORED AS PARQUET LOCATION '{data_dir}/py/'")

        # psycopg 3 binds %s parameters server-side (Parse/Bind/Execute).
        with conn.cursor() as cur:
            cur.execute("SELECT i, b, d, n, t, dt, ts, flag, maybe FROM py_typed WHERE id = %s", (1,))
            row = cur.fetchone()
        expected = (
            7,
            9_000_000_000,
            2.5,
            decimal.Decimal("12.34"),
            "hello",
            datetime.date(2024, 2, 29),
            datetime.datetime(2024, 2, 29, 13, 14, 15),
            True,
            None,
        )
        assert row == expected, f"got {row!r}, expected {expected!r}"
        for value, kind in zip(row, (int, int, float, decimal.Decimal, str, datetime.date, datetime.datetime, bool)):
            assert type(value) is kind, f"{value!r} is {type(value)}, expected {kind}"

        # Binary results, as psycopg requests them with binary=True.
        with conn.cursor(binary=True) as cur:
            cur.execute("SELECT b, n, dt FROM py_typed WHERE id = %s", (1,))
            assert cur.fetchone() == (9_000_000_000, decimal.Decimal("12.34"), datetime.date(2024, 2, 29))

        # Parameters of several types, typed by the client.
        row = conn.execute(
            "SELECT %s::BIGINT + 1, %s::TEXT || '!', %s::DOUBLE PRECISION * 2, %s::BOOLEAN",
            (41, "hi", 1.25, False),
        ).fetchone()
        assert row == (42, "hi!", 2.5, False), row

        # The same text sent again (unnamed statements, as psycopg sends
        # them) reads the table as it is each time: new rows, and new columns.
        conn.execute("CREATE TABLE py_counts (id BIGINT, s VARCHAR)")
        conn.execute("INSERT INTO py_counts VALUES (1, 'a'), (2, 'b')")
        count = "SELECT count(*) FROM py_counts WHERE id <> %s"
        every = "SELECT * FROM py_counts ORDER BY id"
        assert conn.execute(count, (1,), prepare=False).fetchone() == (1,)
        assert conn.execute(every, prepare=False).fetchall() == [(1, "a"), (2, "b")]
        conn.execute("INSERT INTO py_counts VALUES (3, 'c')")
        assert conn.execute(count, (1,), prepare=False).fetchone() == (2,)
        assert conn.execute(count, (3,), prepare=False).fetchone() == (2,)
        conn.execute("DROP TABLE py_counts")
        conn.execute("CREATE TABLE py_counts (id BIGINT, s VARCHAR, extra INT)")
        conn.execute("INSERT INTO py_counts VALUES (5, 'e', 1)")
        assert conn.execute(count, (1,), prepare=False).fetchone() == (1,)
        assert conn.execute(every, prepare=False).fetchall() == [(5, "e", 1)]

        # A bad query raises with its SQLSTATE and the connection stays usable.
        try:
            conn.execute("SELECT * FROM py_missing")
        except psycopg.errors.UndefinedTable:
            pass
        else:
            raise AssertionError("expected UndefinedTable")
        assert conn.execute("SELECT count(*) FROM py_typed").fetchone() == (1,)
    print("psycopg: ok")


if __name__ == "__main__":
    main()
