"""Stopping running queries on a Sluice server, with psycopg 3: a cancel
request, statement_timeout, and a client that disconnects each stop a running
multi-stage query, and its Ballista job ends up cancelled.

Usage: python cancel.py PORT DATA_DIR
Exits non-zero (with an assertion message) on any mismatch.
"""

import os
import sys
import threading
import time

import psycopg

# A join on a 7-value key over 2 x 100k rows: ~1.4 billion joined rows, far
# longer than any wait below. Each query carries a marker to find it again.
LONG_QUERY = (
    "SELECT /* {marker} */ count(*) FROM cancel_rows a JOIN cancel_rows b ON a.bucket = b.bucket"
)


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=port, user="sluice", dbname="sluice", autocommit=True)


def wait_for_record(conn: psycopg.Connection, marker: str, state: str) -> tuple:
    """The sluice.queries record of the query carrying `marker`, once its
    state is `state` and its job reports Cancelled (within 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        record = conn.execute(
            "SELECT state, job_status, error FROM sluice.queries "
            "WHERE query_text LIKE %s AND query_text NOT LIKE '%%sluice.queries%%'",
            (f"%{marker}%",),
        ).fetchone()
        if record is not None and record[0] == state and record[1] == "Cancelled":
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker}: record {record!r}, expected {state} with job Cancelled")
        time.sleep(0.2)


def main() -> None:
    port, data_dir = int(sys.argv[1]), sys.argv[2]
    with connect(port) as conn:
        for part, start in enumerate((1, 100_001)):
            conn.execute(
                "COPY (SELECT i AS id, i % 7 AS bucket "
                f"FROM generate_series({start}, {start + 99_999}) AS t(i)) "
                f"TO '{data_dir}/cancel/part-{part}.parquet' (FORMAT parquet)"
            )
        conn.execute(
            f"CREATE EXTERNAL TABLE cancel_rows STORED AS PARQUET LOCATION '{data_dir}/cancel/'"
        )

        # 1. A cancel request (psycopg's cancel(), as psql's Ctrl-C).
        victim = connect(port)
        cancelled_at = []

        def cancel_soon() -> None:
            time.sleep(1.5)
            cancelled_at.append(time.monotonic())
            victim.cancel()

        canceller = threading.Thread(target=cancel_soon)
        canceller.start()
        try:
            victim.execute(LONG_QUERY.format(marker="cancel-marker-1"))
            raise AssertionError("the long query was not cancelled")
        except psycopg.errors.QueryCanceled as error:
            waited = time.monotonic() - cancelled_at[0]
            assert error.sqlstate == "57014", error.sqlstate
            assert "user request" in str(error), str(error)
            assert waited < 2.0, f"cancel took {waited:.2f} s"
        canceller.join()
        # The connection goes on working.
        assert victim.execute("SELECT 40 + 2").fetchone() == (42,)
        victim.close()
        wait_for_record(conn, "cancel-marker-1", "cancelled")

        # 2. statement_timeout bounds the whole query.
        with connect(port) as limited:
            limited.execute("SET statement_timeout = '1s'")
            started = time.monotonic()
            try:
                limited.execute(LONG_QUERY.format(marker="cancel-marker-2"))
                raise AssertionError("the long query outlived statement_timeout")
            except psycopg.errors.QueryCanceled as error:
                took = time.monotonic() - started
                assert "statement timeout" in str(error), str(error)
                assert took < 3.0, f"timed out after {took:.2f} s"
            limited.execute("SET statement_timeout = 0")
            assert limited.execute("SELECT count(*) FROM cancel_rows").fetchone() == (200_000,)
        wait_for_record(conn, "cancel-marker-2", "cancelled")

        # 3. A client that goes away mid-query.
        leaver = connect(port)
        leaver.pgconn.send_query(LONG_QUERY.format(marker="cancel-marker-3").encode())
        time.sleep(1.5)
        os.close(leaver.pgconn.socket)
        wait_for_record(conn, "cancel-marker-3", "cancelled")
    print("cancel: ok")


if __name__ == "__main__":
    main()
