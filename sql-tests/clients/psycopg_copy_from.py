"""COPY … FROM STDIN written by psycopg 3's copy API: typed rows in the text
and binary formats (write_row), CSV with a header written as raw bytes in
pieces cut anywhere, and bad data, which fails the whole COPY with PostgreSQL's message
and line and keeps nothing. Every row is read back and compared.

Usage: python psycopg_copy_from.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import datetime
import decimal
import sys

import psycopg
from psycopg import errors

ROWS = 20_000


def row(i: int) -> tuple:
    return (
        i,
        None if i % 7 == 0 else f"row {i}\twith\ttabs\\ and \"quotes\"\nand a line",
        decimal.Decimal(i) / 4,
        datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 365),
        i % 2 == 0,
    )


def count(conn, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def main() -> None:
    port = int(sys.argv[1])
    conn = psycopg.connect(
        host="127.0.0.1", port=port, user="sluice", dbname="sluice", autocommit=True
    )
    conn.execute(
        "CREATE TABLE loaded (id bigint, s varchar, n decimal(12, 2), d date, b boolean)"
    )
    cur = conn.cursor()

    # Text format, rows typed by psycopg.
    with cur.copy("COPY loaded FROM STDIN") as copy:
        for i in range(1, ROWS + 1):
            copy.write_row(row(i))
    assert cur.rowcount == ROWS, cur.rowcount
    got = conn.execute("SELECT id, s, n, d, b FROM loaded ORDER BY id").fetchall()
    assert got == [row(i) for i in range(1, ROWS + 1)], next(
        (g, row(i)) for g, i in zip(got, range(1, ROWS + 1)) if g != row(i)
    )

    # Binary format, rows typed by psycopg's binary dumpers.
    binary_ids = range(3_000_001, 3_000_001 + 5_000)
    with cur.copy("COPY loaded FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "text", "numeric", "date", "bool"])
        for i in binary_ids:
            copy.write_row(row(i))
    assert cur.rowcount == len(binary_ids), cur.rowcount
    got = conn.execute(
        "SELECT id, s, n, d, b FROM loaded WHERE id > 3000000 ORDER BY id"
    ).fetchall()
    assert got == [row(i) for i in binary_ids], next(
        (g, row(i)) for g, i in zip(got, binary_ids) if g != row(i)
    )
    try:
        with cur.copy("COPY loaded FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(b"not the PGCOPY signature at all")
    except errors.BadCopyFileFormat as e:
        assert "COPY file signature not recognized" in str(e), str(e)
    else:
        raise AssertionError("binary data without its signature was accepted")
    so_far = count(conn, "loaded")
    assert so_far == ROWS + len(binary_ids), so_far

    # CSV with a header, a column list and quoted fields, in pieces that cut
    # rows (and a quoted line break) anywhere.
    csv = (
        'label,id\n"first, with comma",1000001\n"",1000002\n,1000003\n'
        '"two\nlines",1000004\n'
    ).encode()
    with cur.copy("COPY loaded (s, id) FROM STDIN (FORMAT csv, HEADER true)") as copy:
        for start in range(0, len(csv), 7):
            copy.write(csv[start : start + 7])
    assert cur.rowcount == 4, cur.rowcount
    got = conn.execute(
        "SELECT id, s, n FROM loaded WHERE id BETWEEN 1000001 AND 1000004 ORDER BY id"
    ).fetchall()
    assert got == [
        (1000001, "first, with comma", None),
        (1000002, "", None),
        (1000003, None, None),
        (1000004, "two\nlines", None),
    ], got

    # A bad value on the last line: nothing of the COPY is kept.
    before = count(conn, "loaded")
    try:
        with cur.copy("COPY loaded (id, d) FROM STDIN (FORMAT csv)") as copy:
            for i in range(1, 30_000):
                copy.write(f"{2_000_000 + i},2024-02-03\n".encode())
            copy.write(b"2999999,not a date\n")
    except errors.InvalidTextRepresentation as e:
        assert 'invalid input syntax for type date: "not a date"' in str(e), str(e)
        assert e.diag.context.startswith("COPY loaded, line 30000, column d"), e.diag.context
    else:
        raise AssertionError("a bad date was loaded")
    assert count(conn, "loaded") == before

    # Too few and too many columns (22P04), an unknown table (42P01).
    for data, message in [
        (b"1\n", 'missing data for column "s"'),
        (b"1\tx\t1\t2024-01-01\tt\textra\n", "extra data after last expected column"),
    ]:
        try:
            with cur.copy("COPY loaded FROM STDIN") as copy:
                copy.write(data)
        except errors.BadCopyFileFormat as e:
            assert message in str(e), str(e)
        else:
            raise AssertionError(f"{message}: accepted")
    try:
        with cur.copy("COPY nope FROM STDIN") as copy:
            copy.write(b"1\n")
    except errors.UndefinedTable:
        pass
    else:
        raise AssertionError("COPY into a missing table was accepted")
    assert count(conn, "loaded") == before

    # The connection is still usable.
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.close()
    print("psycopg copy from: ok")


if __name__ == "__main__":
    main()
