"""Prepared `INSERT … VALUES` as psycopg 3 executes them, for clients.rs.

The server makes the rows of a prepared INSERT straight from its parameters
when its VALUES are parameters, constants and casts of them. Each statement
here is run twice: with server-side parameters (`executemany`, the prepared
path) into one table, and with the values spelled out in the SQL text
(psycopg's `ClientCursor`, planned as any statement) into another. The two
tables must hold the same rows. Errors must be PostgreSQL's and keep no row.

Usage: python psycopg_insert_values.py PORT [SCRATCH_DIR]
"""

import datetime
import decimal
import sys

import psycopg

COLUMNS = (
    "id bigint NOT NULL, small int, f double precision, n numeric(10, 2), "
    "s varchar, d date, ts timestamp, flag boolean"
)

ROWS = [
    (1, 7, 1.5, decimal.Decimal("3.25"), "one", datetime.date(2024, 2, 29),
     datetime.datetime(2024, 1, 2, 3, 4, 5), True),
    (2, None, None, None, None, None, None, None),
    (3, -32768, -0.0, decimal.Decimal("-99999999.99"), "ünïcødé 'quoted'",
     datetime.date(1970, 1, 1), datetime.datetime(1999, 12, 31, 23, 59, 59, 999999),
     False),
]

# (INSERT text with %s placeholders, the parameters of each execution)
STATEMENTS = [
    ("INSERT INTO {t} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", ROWS),
    # A column list in another order; the columns it omits are NULL.
    ("INSERT INTO {t} (s, id) VALUES (%s, %s)", [("listed", 10), (None, 11)]),
    # Constants and casts beside parameters.
    ("INSERT INTO {t} (id, small, s, d) VALUES (%s::int, 5, %s, '2020-05-06')",
     [(20, "constant"), (21, "again")]),
    ("INSERT INTO {t} (id, f, n) VALUES (%s, %s::real, %s::numeric)",
     [(30, 0.5, decimal.Decimal("1.5")), (31, 2, decimal.Decimal("7"))]),
    # Several rows in one statement.
    ("INSERT INTO {t} (id, s) VALUES (%s, %s), (%s, 'fixed'), (%s, %s)",
     [(40, "a", 41, 42, "c")]),
    # A value the server computes takes the planned path.
    ("INSERT INTO {t} (id, s) VALUES (%s + 1, upper(%s))", [(50, "computed")]),
]


def load(conn: psycopg.Connection, table: str, prepared: bool) -> None:
    conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
    for text, params in STATEMENTS:
        if prepared:
            with conn.cursor() as cur:
                cur.executemany(text.format(t=table), params)
        else:
            with psycopg.ClientCursor(conn) as cur:
                for row in params:
                    cur.execute(text.format(t=table), row)


def rows(conn: psycopg.Connection, table: str) -> list:
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def expect_error(conn: psycopg.Connection, error: type, text: str, params: list) -> str:
    try:
        with conn.cursor() as cur:
            cur.executemany(text, params)
    except error as e:
        return str(e)
    raise AssertionError(f"{text} with {params} did not fail with {error.__name__}")


def main() -> None:
    port = int(sys.argv[1])
    dsn = f"host=127.0.0.1 port={port} user=sluice dbname=sluice"
    with psycopg.connect(dsn, autocommit=True) as conn:
        load(conn, "planned", prepared=False)
        load(conn, "bound", prepared=True)
        planned, bound = rows(conn, "planned"), rows(conn, "bound")
        assert len(planned) == 13, planned
        assert bound == planned, f"\nprepared: {bound}\nplanned:  {planned}"
        assert bound[0] == ROWS[0], bound[0]
        assert bound[2] == ROWS[2], bound[2]

        # Errors keep nothing of their batch, and say what PostgreSQL says.
        message = expect_error(
            conn, psycopg.errors.NotNullViolation,
            "INSERT INTO bound (id, s) VALUES (%s, %s)", [(60, "kept?"), (None, "null id")],
        )
        assert 'null value in column "id" of relation "bound"' in message, message
        message = expect_error(
            conn, psycopg.errors.NotNullViolation,
            "INSERT INTO bound (s) VALUES (%s)", [("no id",)],
        )
        assert 'column "id"' in message, message
        expect_error(
            conn, psycopg.errors.NumericValueOutOfRange,
            "INSERT INTO bound (id, small) VALUES (%s, %s::bigint)", [(61, 2**40)],
        )
        expect_error(
            conn, psycopg.errors.InvalidTextRepresentation,
            "INSERT INTO bound (id, small) VALUES (%s, %s::text::int)", [(62, "x1")],
        )
        assert rows(conn, "bound") == planned, rows(conn, "bound")
    print("psycopg insert values: ok")


if __name__ == "__main__":
    main()
