"""SQLAlchemy 2 (psycopg 3 driver) and pandas against a running Sluice server:
schema inspection with correct types, a 100k-row read_sql, server-side
cursors (stream_results, read_sql with chunksize), and the PostgreSQL session
functions ORMs rely on.

Usage: python sqlalchemy_pandas.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import datetime
import logging
import sys

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


def main() -> None:
    port, data_dir = int(sys.argv[1]), sys.argv[2]
    engine = sa.create_engine(f"postgresql+psycopg://sluice@127.0.0.1:{port}/sluice")
    with engine.connect() as conn:
        # Two files of 50k rows each: a table of 100k rows.
        for part, start in enumerate((1, 50_001)):
            conn.exec_driver_sql(
                "COPY (SELECT i AS id, CAST(i %% 7 AS INT) AS bucket, "
                "CAST(i AS DECIMAL(12, 2)) / 100 AS amount, "
                "CAST(CAST(19723 + i %% 365 AS INT) AS DATE) AS day, "
                "'row ' || CAST(i AS VARCHAR) AS label "
                f"FROM generate_series({start}, {start + 49_999}) AS t(i)) "
                f"TO '{data_dir}/sa/part-{part}.parquet' (FORMAT parquet)"
            )
        conn.exec_driver_sql(
            f"CREATE EXTERNAL TABLE sa_rows STORED AS PARQUET LOCATION '{data_dir}/sa/'"
        )

        # The server version as SQLAlchemy parsed it from version().
        assert engine.dialect.server_version_info[:1] == (16,), engine.dialect.server_version_info
        assert conn.execute(sa.text("SELECT current_schema()")).scalar() == "public"
        assert conn.execute(sa.text("SHOW standard_conforming_strings")).scalar() == "on"

    inspector = sa.inspect(engine)
    schemas = inspector.get_schema_names()
    assert "public" in schemas and "sluice" in schemas, schemas
    tables = inspector.get_table_names()
    assert "sa_rows" in tables, tables
    columns = {column["name"]: column for column in inspector.get_columns("sa_rows")}
    assert list(columns) == ["id", "bucket", "amount", "day", "label"], list(columns)
    expected_types = {
        "id": postgresql.BIGINT,
        "bucket": postgresql.INTEGER,
        "amount": postgresql.NUMERIC,
        "day": postgresql.DATE,
        "label": postgresql.TEXT,
    }
    for name, kind in expected_types.items():
        assert isinstance(columns[name]["type"], kind), (name, columns[name]["type"])
    assert columns["id"]["default"] is None and columns["id"]["comment"] is None

    frame = pd.read_sql("SELECT id, bucket, amount, day, label FROM sa_rows ORDER BY id", engine)
    assert frame.shape == (100_000, 5), frame.shape
    assert frame["id"].sum() == 100_000 * 100_001 // 2
    assert frame["id"].is_monotonic_increasing
    assert frame.loc[0, "label"] == "row 1"
    assert frame.loc[0, "day"] == datetime.date(2024, 1, 2), frame.loc[0, "day"]
    assert str(frame["id"].dtype) == "int64", frame.dtypes

    grouped = pd.read_sql(
        sa.text("SELECT bucket, count(*) FROM sa_rows WHERE id > :low GROUP BY bucket ORDER BY bucket"),
        engine,
        params={"low": 50_000},
    )
    # PostgreSQL names an unaliased count(*) column "count".
    assert list(grouped.columns) == ["bucket", "count"], list(grouped.columns)
    assert grouped["count"].sum() == 50_000

    # Server-side cursors: SQLAlchemy's stream_results reads through a named
    # cursor and, closing it, asks pg_catalog.pg_cursors whether it exists; a
    # failure there is only logged, so the log is watched.
    failures = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                failures.append(record.getMessage())

    logging.getLogger("sqlalchemy").addHandler(Watch())
    with engine.connect() as conn:
        streamed = conn.execution_options(stream_results=True, max_row_buffer=1_000).execute(
            sa.text("SELECT id, label FROM sa_rows ORDER BY id")
        )
        seen = 0
        for part in streamed.partitions(7_000):
            for row_id, label in part:
                seen += 1
                assert (row_id, label) == (seen, f"row {seen}"), (row_id, label, seen)
        assert seen == 100_000, seen
        streamed.close()
        chunks = list(
            pd.read_sql(
                sa.text("SELECT id, amount FROM sa_rows ORDER BY id"),
                conn.execution_options(stream_results=True),
                chunksize=30_000,
            )
        )
        assert [len(chunk) for chunk in chunks] == [30_000, 30_000, 30_000, 10_000]
        together = pd.concat(chunks)
        assert together["id"].tolist() == list(range(1, 100_001))
        assert float(together["amount"].iloc[-1]) == 1000.0
        open_cursors = conn.execute(sa.text("SELECT count(*) FROM pg_catalog.pg_cursors")).scalar()
        assert open_cursors == 0, open_cursors
    assert not failures, failures
    print("sqlalchemy+pandas: ok")


if __name__ == "__main__":
    main()
