"""pandas DataFrame.to_sql through SQLAlchemy 2 (psycopg 3) into managed
tables: every if_exists mode with both insert methods, the rows read back,
and the inspector calls to_sql and ORMs make on the tables (primary keys,
unique constraints, indexes, foreign keys: none, not errors); SQLAlchemy
Core's insert() with executemany.

Usage: python pandas_to_sql.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import datetime
import sys

import pandas as pd
import sqlalchemy as sa

# Rows per frame, by insert method: the default sends one INSERT per row.
ROWS = {None: 3_000, "multi": 3_000}


def frame(start: int, rows: int) -> pd.DataFrame:
    ids = range(start, start + rows)
    return pd.DataFrame(
        {
            "id": list(ids),
            "label": [None if i % 5 == 0 else f"row {i}" for i in ids],
            "amount": [i / 8 for i in ids],
            "day": [datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 90) for i in ids],
        }
    )


def read(engine, table: str) -> pd.DataFrame:
    back = pd.read_sql(f"SELECT id, label, amount, day FROM {table} ORDER BY id", engine)
    back["day"] = pd.to_datetime(back["day"]).dt.date
    return back


def check(engine, table: str, want: pd.DataFrame) -> None:
    got = read(engine, table)
    want = want.sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def main() -> None:
    port = int(sys.argv[1])
    engine = sa.create_engine(f"postgresql+psycopg://sluice@127.0.0.1:{port}/sluice")
    for method in (None, "multi"):
        table = f"frame_{method or 'rows'}"
        rows = ROWS[method]
        first, second = frame(1, rows), frame(rows + 1, rows)
        first.to_sql(table, engine, index=False, method=method, chunksize=1000)
        check(engine, table, first)
        try:
            first.to_sql(table, engine, index=False, method=method, if_exists="fail")
        except ValueError as e:
            assert "already exists" in str(e), str(e)
        else:
            raise AssertionError("if_exists='fail' wrote into an existing table")
        second.to_sql(table, engine, index=False, method=method, if_exists="append")
        check(engine, table, pd.concat([first, second]))
        second.to_sql(table, engine, index=False, method=method, if_exists="replace")
        check(engine, table, second)

        inspector = sa.inspect(engine)
        assert inspector.has_table(table)
        columns = [column["name"] for column in inspector.get_columns(table)]
        assert columns == ["id", "label", "amount", "day"], columns
        assert inspector.get_pk_constraint(table)["constrained_columns"] == []
        assert inspector.get_unique_constraints(table) == []
        assert inspector.get_indexes(table) == []
        assert inspector.get_foreign_keys(table) == []

    # SQLAlchemy Core: insert() with a list of rows (executemany).
    metadata = sa.MetaData()
    core = sa.Table("core_rows", metadata, sa.Column("id", sa.BigInteger), sa.Column("label", sa.String))
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(core.insert(), [{"id": i, "label": f"core {i}"} for i in range(1, 1001)])
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT count(*), sum(id), max(label) FROM core_rows")).one()
    assert tuple(got) == (1000, 500500, "core 999"), got
    print("pandas to_sql: ok")


if __name__ == "__main__":
    main()
