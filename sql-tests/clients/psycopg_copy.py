"""COPY … TO STDOUT read by psycopg 3's copy API in the binary format (typed
values decoded by psycopg from PostgreSQL's PGCOPY layout) and the text
format, compared with the same rows read by a plain query.

Usage: python psycopg_copy.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import datetime
import decimal
import sys

import psycopg

ROWS = 5_000
QUERY = (
    "SELECT value AS i, CAST(value AS INT) AS i4, CAST(value AS SMALLINT) AS i2, "
    "value * 0.5 AS f, CAST(value AS DECIMAL(12, 2)) / 4 AS n, "
    "CASE WHEN value % 7 = 0 THEN NULL ELSE 'row ' || value END AS s, "
    "value % 2 = 0 AS b, "
    "CAST('2024-01-01' AS DATE) + CAST(value AS INT) AS d, "
    "to_timestamp_seconds(1704067200 + value) AS t "
    f"FROM generate_series(1, {ROWS}) ORDER BY value"
)
TYPES = ["int8", "int4", "int2", "float8", "numeric", "text", "bool", "date", "timestamp"]


def expected(value: int) -> tuple:
    return (
        value,
        value,
        value,
        value * 0.5,
        (decimal.Decimal(value) / 4).quantize(decimal.Decimal("0.000001")),
        None if value % 7 == 0 else f"row {value}",
        value % 2 == 0,
        datetime.date(2024, 1, 1) + datetime.timedelta(days=value),
        datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=value),
    )


def main() -> None:
    port = int(sys.argv[1])
    conn = psycopg.connect(host="127.0.0.1", port=port, user="sluice", dbname="sluice")
    plain = conn.execute(QUERY).fetchall()
    assert len(plain) == ROWS, len(plain)
    for row, value in zip(plain, range(1, ROWS + 1)):
        want = expected(value)
        assert row[:4] == want[:4] and row[5:] == want[5:], (row, want)
        assert decimal.Decimal(row[4]) == want[4], (row, want)

    cur = conn.cursor()
    with cur.copy(f"COPY ({QUERY}) TO STDOUT (FORMAT BINARY)") as copy:
        copy.set_types(TYPES)
        binary = list(copy.rows())
    assert binary == plain, next(
        (b, p) for b, p in zip(binary, plain) if b != p
    ) if len(binary) == len(plain) else (len(binary), len(plain))
    assert cur.rowcount == ROWS, cur.rowcount

    with cur.copy(f"COPY ({QUERY}) TO STDOUT") as copy:
        copy.set_types(TYPES)
        text = list(copy.rows())
    assert text == plain, "text COPY differs from the query's rows"

    # PostgreSQL's errors for options binary COPY does not take.
    for option, message in [
        ("FORMAT BINARY, HEADER", "cannot specify HEADER in BINARY mode"),
        ("FORMAT BINARY, DELIMITER ','", "cannot specify DELIMITER in BINARY mode"),
    ]:
        try:
            with cur.copy(f"COPY (SELECT 1) TO STDOUT ({option})") as copy:
                list(copy.rows())
        except psycopg.Error as e:
            assert message in str(e), str(e)
            conn.rollback()
        else:
            raise AssertionError(f"COPY with {option} was accepted")
    conn.close()
    print("psycopg copy: ok")


if __name__ == "__main__":
    main()
