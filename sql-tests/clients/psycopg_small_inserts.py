"""One-row INSERTs as psycopg 3 sends them, for server/tests/small_inserts.rs.

`executemany` pipelines one INSERT per row and ends the batch with a Sync;
outside a transaction block the server acknowledges the batch once its rows
are committed, inside one at COMMIT. After the acknowledged writes this
prints `acknowledged`, then leaves a transaction block open with rows that
were never committed, prints `pending` and waits for the server to be
killed (the test does `kill -9`, restarts it and counts the rows).

Usage: python psycopg_small_inserts.py PORT ROWS
"""

import sys
import time

import psycopg


def main() -> None:
    port, rows = int(sys.argv[1]), int(sys.argv[2])
    dsn = f"host=127.0.0.1 port={port} user=sluice dbname=sluice"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE acked (id bigint NOT NULL, label varchar)")
        # Outside a transaction block: one pipelined batch.
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO acked VALUES (%s, %s)",
                [(i, f"batch {i}") for i in range(1, rows + 1)],
            )
            assert cur.rowcount == rows, cur.rowcount
        # A batch with a bad row keeps none of its rows.
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO acked VALUES (%s, %s)",
                    [(None if i == 7 else -i, "bad batch") for i in range(1, 11)],
                )
        except psycopg.errors.NotNullViolation as e:
            assert 'column "id" of relation "acked"' in str(e), str(e)
        else:
            raise AssertionError("a NULL id was accepted")
        # Inside a transaction block, committed at COMMIT; a read in the
        # block sees the block's own rows.
        with conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO acked VALUES (%s, %s)",
                    [(i, f"block {i}") for i in range(rows + 1, 2 * rows + 1)],
                )
                count = cur.execute("SELECT count(*) FROM acked").fetchone()[0]
                assert count == 2 * rows, count
        # ROLLBACK drops what the block wrote.
        try:
            with conn.transaction():
                conn.execute("INSERT INTO acked VALUES (-1, 'rolled back')")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        count = conn.execute("SELECT count(*) FROM acked WHERE id < 0").fetchone()[0]
        assert count == 0, count
        # A database error in a nested block rolls back to its savepoint
        # (what psycopg sends on leaving it); the outer block goes on and
        # commits the rest, as in PostgreSQL.
        conn.execute("CREATE TABLE nested (id bigint)")
        with conn.transaction():
            conn.execute("INSERT INTO nested VALUES (1)")
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO nested VALUES (2)")
                    conn.execute("SELECT 1/0")
            except psycopg.errors.DivisionByZero:
                pass
            conn.execute("INSERT INTO nested VALUES (3)")
        ids = [row[0] for row in conn.execute("SELECT id FROM nested ORDER BY id")]
        assert ids == [1, 3], ids
    print("acknowledged", flush=True)

    # Rows of an open transaction block are not committed: a kill loses them.
    conn = psycopg.connect(dsn)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO acked VALUES (%s, %s)",
            [(-i, "never committed") for i in range(1, 101)],
        )
    print("pending", flush=True)
    time.sleep(60)


if __name__ == "__main__":
    main()
