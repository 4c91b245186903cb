"""pandas DataFrame.to_sql into a Sluice managed table, timed.

Usage: python to_sql.py PORT ROWS METHOD   (METHOD: default | multi)
Prints the rows, the seconds, the rows per second and the segments the
table was left with (sluice.tables), after checking the rows read back.
"""

import sys
import time

import pandas as pd
import sqlalchemy as sa


def main() -> None:
    port, rows, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    engine = sa.create_engine(f"postgresql+psycopg://sluice@127.0.0.1:{port}/sluice")
    table = f"to_sql_{method}_{rows}"
    frame = pd.DataFrame(
        {
            "id": range(rows),
            "amount": [i / 4 for i in range(rows)],
            "label": [f"row {i}" for i in range(rows)],
            "day": pd.to_datetime("2024-01-01") + pd.to_timedelta([i % 365 for i in range(rows)], unit="D"),
        }
    )
    started = time.perf_counter()
    frame.to_sql(
        table,
        engine,
        index=False,
        if_exists="replace",
        method=None if method == "default" else method,
        chunksize=None if method == "default" else 10_000,
    )
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        count, total = conn.execute(sa.text(f"SELECT count(*), sum(id) FROM {table}")).one()
        segments = conn.execute(
            sa.text(f"SELECT segments FROM sluice.tables WHERE table_name = '{table}'")
        ).scalar()
    assert (count, total) == (rows, rows * (rows - 1) // 2), (count, total)
    print(
        f"to_sql method={method:<8} {rows:>9} rows  {seconds:8.2f} s  "
        f"{rows / seconds:>9.0f} rows/s  {segments} segments"
    )


if __name__ == "__main__":
    main()
