//! The Postgres protocol as a client library sees it: prepared statements with
//! typed parameters and binary results, per-connection settings over a shared
//! catalog, errors that leave the connection usable.

use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use sluice_sql_tests::{SluiceServer, SmallQueries};
use tokio_postgres::{Client, NoTls};

fn start(executors: usize) -> SluiceServer {
    SluiceServer::start(Path::new(env!("CARGO_BIN_EXE_sluice")), executors)
        .expect("sluice serve starts")
}

async fn connect(port: u16) -> Client {
    sluice_sql_tests::connect(port).await.expect("connects")
}

/// Writes a Parquet table with one column of each common type and registers it.
async fn create_typed_table(client: &Client, dir: &Path) {
    let location = dir.join("typed");
    client
        .batch_execute(&format!(
            "COPY (SELECT * FROM (VALUES \
               (1, CAST(7 AS INT), CAST(9000000000 AS BIGINT), CAST(2.5 AS DOUBLE), CAST('12.34' AS DECIMAL(10,2)), 'hello', DATE '2024-02-29', TIMESTAMP '2024-02-29 13:14:15', true, CAST(NULL AS INT)), \
               (2, CAST(-1 AS INT), CAST(-5 AS BIGINT), CAST(-0.125 AS DOUBLE), CAST('-0.01' AS DECIMAL(10,2)), '', DATE '1999-12-31', TIMESTAMP '1999-12-31 23:59:59', false, CAST(3 AS INT)) \
             ) AS v(id, i, b, d, n, t, dt, ts, flag, maybe)) TO '{}/part-0.parquet' (FORMAT parquet); \
             CREATE EXTERNAL TABLE typed STORED AS PARQUET LOCATION '{}/'",
            location.display(),
            location.display()
        ))
        .await
        .expect("typed table created");
}

/// A prepared query is optimized once and keeps that plan, on both paths
/// (small queries in the frontend, jobs on the cluster); each execution still
/// reads the table as it is then, with its own parameter values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_queries_keep_their_plan_and_see_new_rows() {
    for small in [SmallQueries::Frontend, SmallQueries::Cluster] {
        let server = SluiceServer::start_with_small_queries(
            Path::new(env!("CARGO_BIN_EXE_sluice")),
            1,
            small,
        )
        .expect("sluice serve starts");
        let client = connect(server.port()).await;
        client
            .batch_execute(
                "CREATE TABLE m (id BIGINT, s VARCHAR); INSERT INTO m VALUES (1, 'a'), (2, 'b')",
            )
            .await
            .expect("table m");
        let count = client
            .prepare("SELECT count(*) FROM m WHERE id <> $1")
            .await
            .expect("prepare");
        let counted = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>(0);
        assert_eq!(
            counted(client.query(&count, &[&1_i64]).await.unwrap()),
            1,
            "{small:?}"
        );
        client
            .batch_execute("INSERT INTO m VALUES (3, 'c')")
            .await
            .expect("insert");
        assert_eq!(
            counted(client.query(&count, &[&1_i64]).await.unwrap()),
            2,
            "{small:?}"
        );
        assert_eq!(
            counted(client.query(&count, &[&7_i64]).await.unwrap()),
            3,
            "{small:?}"
        );

        // A parameter in a subquery, and one typed only by its cast.
        let below = client
            .prepare("SELECT s FROM m WHERE id = (SELECT max(id) FROM m WHERE id < $1)")
            .await
            .expect("prepare");
        for (bound, expected) in [(3_i64, "b"), (9, "c")] {
            let rows = client.query(&below, &[&bound]).await.unwrap();
            assert_eq!(rows[0].get::<_, String>(0), expected, "{small:?}");
        }
        let cast = client
            .prepare("SELECT $1::int + count(*) FROM m")
            .await
            .expect("prepare");
        for bound in [1_i32, 10] {
            let rows = client.query(&cast, &[&bound]).await.unwrap();
            assert_eq!(rows[0].get::<_, i64>(0), i64::from(bound) + 3, "{small:?}");
        }

        // Operators that keep state while they run (a top-k sort, a hash
        // join) answer each execution for its own values.
        let top = client
            .prepare("SELECT id FROM m WHERE id <> $1 ORDER BY id DESC LIMIT 1")
            .await
            .expect("prepare");
        for (bound, expected) in [(3_i64, 2_i64), (2, 3), (3, 2)] {
            let rows = client.query(&top, &[&bound]).await.unwrap();
            assert_eq!(rows[0].get::<_, i64>(0), expected, "{small:?}");
        }
        let joined = client
            .prepare("SELECT count(*) FROM m a JOIN m b ON a.id = b.id WHERE b.id <> $1")
            .await
            .expect("prepare");
        for (bound, expected) in [(1_i64, 2_i64), (9, 3), (2, 2)] {
            assert_eq!(
                counted(client.query(&joined, &[&bound]).await.unwrap()),
                expected,
                "{small:?}"
            );
        }

        // A file added to an external table's directory is read by the next
        // execution.
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().display();
        client
            .batch_execute(&format!(
                "COPY (SELECT 1 AS k) TO '{location}/part-0.parquet' (FORMAT parquet); \
                 CREATE EXTERNAL TABLE grows STORED AS PARQUET LOCATION '{location}/'"
            ))
            .await
            .expect("table grows");
        let sum = client
            .prepare("SELECT sum(k) FROM grows WHERE k <> $1")
            .await
            .expect("prepare");
        let summed = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, Option<i64>>(0);
        assert_eq!(
            summed(client.query(&sum, &[&0_i64]).await.unwrap()),
            Some(1)
        );
        assert_eq!(summed(client.query(&sum, &[&1_i64]).await.unwrap()), None);
        client
            .batch_execute(&format!(
                "COPY (SELECT 10 AS k) TO '{location}/part-1.parquet' (FORMAT parquet)"
            ))
            .await
            .expect("another file");
        assert_eq!(
            summed(client.query(&sum, &[&1_i64]).await.unwrap()),
            Some(10),
            "{small:?}"
        );

        // A changed optimizer setting plans the statement again; the answer
        // stays the same.
        client
            .batch_execute("SET datafusion.optimizer.max_passes = 1")
            .await
            .expect("set");
        assert_eq!(
            counted(client.query(&count, &[&2_i64]).await.unwrap()),
            2,
            "{small:?}"
        );

        // EXPLAIN shows the plan with the bound value.
        let explained: Vec<String> = client
            .query("EXPLAIN SELECT s FROM m WHERE id = $1", &[&2_i64])
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get::<_, String>(1))
            .collect();
        assert!(
            explained.iter().any(|plan| plan.contains("Int64(2)")),
            "{small:?}: {explained:?}"
        );

        // The time is read on each execution, not when the plan was made.
        let clock = client
            .prepare("SELECT CAST(now() AS VARCHAR) FROM m WHERE id = $1")
            .await
            .expect("prepare");
        let first: String = client.query_one(&clock, &[&1_i64]).await.unwrap().get(0);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let second: String = client.query_one(&clock, &[&1_i64]).await.unwrap().get(0);
        assert_ne!(first, second, "{small:?}");

        // SELECT … INTO creates a table, over the extended protocol too.
        client
            .execute("SELECT id * 10 AS id10 INTO m_into FROM m", &[])
            .await
            .expect("select into");
        let rows = client
            .query("SELECT count(*) FROM m_into", &[])
            .await
            .expect("m_into");
        assert_eq!(counted(rows), 3, "{small:?}");

        // Once the table's columns change, the kept plan fails clearly.
        client
            .batch_execute("DROP TABLE m; CREATE TABLE m (id BIGINT, s VARCHAR, extra INT)")
            .await
            .expect("table m again");
        let error = client.query(&count, &[&1_i64]).await.unwrap_err();
        let error = error.as_db_error().expect("a server error");
        assert_eq!(error.code().code(), "0A000", "{small:?}: {error}");
        assert!(error.message().contains("prepare it again"), "{error}");
    }
}

/// The rows of a simple-protocol query, as text.
async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The same query text sent again over the simple protocol reuses its plan
/// and still reads the table as it is each time: new rows, new columns, a
/// dropped table, the time of each run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_queries_sent_again_read_the_tables_as_they_are() {
    let server = SluiceServer::start_with_small_queries(
        Path::new(env!("CARGO_BIN_EXE_sluice")),
        1,
        SmallQueries::Frontend,
    )
    .expect("sluice serve starts");
    let client = connect(server.port()).await;
    client
        .batch_execute("CREATE TABLE st (id BIGINT, s VARCHAR); INSERT INTO st VALUES (1, 'a')")
        .await
        .expect("table st");
    let every = "SELECT * FROM st ORDER BY id";
    let one = |id: &str, s: &str| vec![Some(id.to_string()), Some(s.to_string())];
    assert_eq!(simple_rows(&client, every).await, vec![one("1", "a")]);
    client
        .batch_execute("INSERT INTO st VALUES (2, 'b')")
        .await
        .expect("insert");
    assert_eq!(
        simple_rows(&client, every).await,
        vec![one("1", "a"), one("2", "b")]
    );

    // From its second run a text keeps its physical plan; a file added to
    // the table's directory is read all the same.
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().display();
    client
        .batch_execute(&format!(
            "COPY (SELECT 1 AS k) TO '{location}/part-0.parquet' (FORMAT parquet); \
             CREATE EXTERNAL TABLE grows STORED AS PARQUET LOCATION '{location}/'"
        ))
        .await
        .expect("table grows");
    let total = "SELECT sum(k) FROM grows";
    for _ in 0..3 {
        assert_eq!(
            simple_rows(&client, total).await,
            vec![vec![Some("1".to_string())]]
        );
    }
    client
        .batch_execute(&format!(
            "COPY (SELECT 10 AS k) TO '{location}/part-1.parquet' (FORMAT parquet)"
        ))
        .await
        .expect("another file");
    assert_eq!(
        simple_rows(&client, total).await,
        vec![vec![Some("11".to_string())]]
    );

    client
        .batch_execute("DROP TABLE st; CREATE TABLE st (id BIGINT, s VARCHAR, extra INT)")
        .await
        .expect("table st again");
    client
        .batch_execute("INSERT INTO st VALUES (3, 'c', 7)")
        .await
        .expect("insert");
    let mut three = one("3", "c");
    three.push(Some("7".to_string()));
    assert_eq!(simple_rows(&client, every).await, vec![three]);

    client.batch_execute("DROP TABLE st").await.expect("drop");
    let error = client.simple_query(every).await.unwrap_err();
    let error = error.as_db_error().expect("a server error");
    assert_eq!(error.code().code(), "42P01", "{error}");

    let clock = "SELECT CAST(now() AS VARCHAR)";
    let first = simple_rows(&client, clock).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_ne!(first, simple_rows(&client, clock).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_return_typed_values() {
    let server = start(2);
    let client = connect(server.port()).await;
    let dir = tempfile::tempdir().unwrap();
    create_typed_table(&client, dir.path()).await;

    let statement = client
        .prepare("SELECT i, b, d, n, t, dt, ts, flag, maybe FROM typed WHERE id = $1")
        .await
        .expect("prepare");
    let row = client
        .query_one(&statement, &[&1_i64])
        .await
        .expect("row 1");
    assert_eq!(row.get::<_, i32>(0), 7);
    assert_eq!(row.get::<_, i64>(1), 9_000_000_000);
    assert_eq!(row.get::<_, f64>(2), 2.5);
    assert_eq!(row.get::<_, Decimal>(3), Decimal::new(1234, 2));
    assert_eq!(row.get::<_, String>(4), "hello");
    assert_eq!(
        row.get::<_, NaiveDate>(5),
        NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
    );
    assert_eq!(
        row.get::<_, NaiveDateTime>(6),
        NaiveDate::from_ymd_opt(2024, 2, 29)
            .unwrap()
            .and_hms_opt(13, 14, 15)
            .unwrap()
    );
    assert!(row.get::<_, bool>(7));
    assert_eq!(row.get::<_, Option<i32>>(8), None);

    // The same statement, executed again with another parameter value.
    let row = client
        .query_one(&statement, &[&2_i64])
        .await
        .expect("row 2");
    assert_eq!(row.get::<_, i32>(0), -1);
    assert_eq!(row.get::<_, Decimal>(3), Decimal::new(-1, 2));
    assert_eq!(row.get::<_, String>(4), "");
    assert!(!row.get::<_, bool>(7));
    assert_eq!(row.get::<_, Option<i32>>(8), Some(3));

    // Parameters of each type, bound by the client and used in expressions.
    let row = client
        .query_one(
            "SELECT $1::BIGINT + 1, $2::TEXT || '!', $3::DOUBLE PRECISION * 2, $4::BOOLEAN, $5::DATE",
            &[
                &41_i64,
                &"hi",
                &1.25_f64,
                &true,
                &NaiveDate::from_ymd_opt(2020, 1, 2).unwrap(),
            ],
        )
        .await
        .expect("parameterised expressions");
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");
    assert_eq!(row.get::<_, f64>(2), 2.5);
    assert!(row.get::<_, bool>(3));
    assert_eq!(
        row.get::<_, NaiveDate>(4),
        NaiveDate::from_ymd_opt(2020, 1, 2).unwrap()
    );

    let rows = client
        .query("SELECT id FROM typed WHERE b > $1 ORDER BY id", &[&0_i64])
        .await
        .expect("filter by parameter");
    assert_eq!(
        rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(),
        vec![1]
    );
    server.stop().expect("stops");
}

/// A cursor's rows are fetched over either protocol in the formats each
/// asks for: `Describe` of a prepared `FETCH` answers the cursor's columns
/// (what tokio-postgres checks rows against), its rows come back binary,
/// and simple and extended FETCHes take turns on one cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_fetch_typed_rows_over_the_extended_protocol() {
    let server = start(2);
    let client = connect(server.port()).await;
    let dir = tempfile::tempdir().unwrap();
    create_typed_table(&client, dir.path()).await;
    client
        .batch_execute(
            "DECLARE c CURSOR FOR SELECT id, n, t, dt, ts, maybe FROM typed \
             UNION ALL SELECT id + 10, n, t, dt, ts, maybe FROM typed ORDER BY id",
        )
        .await
        .expect("declare");

    let fetch = client.prepare("FETCH 1 FROM c").await.expect("prepare");
    let names: Vec<_> = fetch.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "n", "t", "dt", "ts", "maybe"]);
    let rows = client.query(&fetch, &[]).await.expect("first fetch");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    assert_eq!(rows[0].get::<_, Decimal>(1), Decimal::new(1234, 2));
    assert_eq!(rows[0].get::<_, String>(2), "hello");
    assert_eq!(
        rows[0].get::<_, NaiveDate>(3),
        NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
    );
    assert_eq!(rows[0].get::<_, Option<i32>>(5), None);

    // The simple protocol reads the next row as text.
    assert_eq!(
        simple_rows(&client, "FETCH NEXT FROM c").await[0][0],
        Some("2".into())
    );

    let rows = client
        .query("FETCH FORWARD 5 FROM c", &[])
        .await
        .expect("fetch the rest");
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [11, 12]);
    assert_eq!(rows[1].get::<_, Option<i32>>(5), Some(3));
    assert!(client
        .query(&fetch, &[])
        .await
        .expect("past the end")
        .is_empty());

    // PostgreSQL's errors, and the connection stays usable.
    let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_string());
    let again = client.batch_execute("DECLARE c CURSOR FOR SELECT 1").await;
    assert_eq!(again.map_err(code).unwrap_err().as_deref(), Some("42P03"));
    let backward = client.query("FETCH BACKWARD 1 FROM c", &[]).await;
    assert_eq!(
        backward.map_err(code).unwrap_err().as_deref(),
        Some("55000")
    );
    client.batch_execute("CLOSE c").await.expect("close");
    let unknown = client.prepare("FETCH 1 FROM c").await.expect("prepare");
    assert!(unknown.columns().is_empty());
    let closed = client.query(&unknown, &[]).await;
    assert_eq!(closed.map_err(code).unwrap_err().as_deref(), Some("34000"));
    let row = client
        .query_one("SELECT 1::BIGINT", &[])
        .await
        .expect("usable");
    assert_eq!(row.get::<_, i64>(0), 1);
    server.stop().expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstate_and_keep_the_connection() {
    let server = start(2);
    let client = connect(server.port()).await;
    for (sql, code) in [
        ("SELECT * FROM missing_table", "42P01"),
        ("SELEC 1", "42601"),
        ("SELECT 1/0", "22012"),
        ("SELECT CAST('x' AS INT)", "22P02"),
        ("SELECT nope()", "42883"),
    ] {
        let error = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(
            error.code().map(|c| c.code()),
            Some(code),
            "{sql}: {error:?}"
        );
        // The extended protocol reports the same code.
        let error = client.query(sql, &[]).await.expect_err(sql);
        assert_eq!(
            error.code().map(|c| c.code()),
            Some(code),
            "{sql} (extended): {error:?}"
        );
        let row = client
            .query_one("SELECT 1::INT", &[])
            .await
            .expect("next query works");
        assert_eq!(row.get::<_, i32>(0), 1);
    }
    server.stop().expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_per_connection_and_the_catalog_is_shared() {
    let server = start(2);
    let first = connect(server.port()).await;
    let second = connect(server.port()).await;
    let dir = tempfile::tempdir().unwrap();
    create_typed_table(&first, dir.path()).await;

    // A table created on one connection is visible on another.
    let rows = second
        .query("SELECT count(*) FROM typed", &[])
        .await
        .expect("shared catalog");
    assert_eq!(rows[0].get::<_, i64>(0), 2);
    let tables = second
        .simple_query("SHOW TABLES")
        .await
        .expect("SHOW TABLES");
    let listed = tables.iter().any(|message| {
        matches!(message, tokio_postgres::SimpleQueryMessage::Row(row)
            if row.get("table_schema") == Some("public") && row.get("table_name") == Some("typed"))
    });
    assert!(listed, "SHOW TABLES lists public.typed");

    first
        .batch_execute("SET datafusion.execution.batch_size = 1234")
        .await
        .expect("SET");
    let value = |messages: Vec<tokio_postgres::SimpleQueryMessage>| {
        messages.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                row.get(row.len() - 1).map(str::to_string)
            }
            _ => None,
        })
    };
    let on_first = value(
        first
            .simple_query("SHOW datafusion.execution.batch_size")
            .await
            .unwrap(),
    );
    let on_second = value(
        second
            .simple_query("SHOW datafusion.execution.batch_size")
            .await
            .unwrap(),
    );
    assert_eq!(on_first.as_deref(), Some("1234"));
    assert_eq!(on_second.as_deref(), Some("8192"));
    server.stop().expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_refused() {
    let server = start(1);
    let error = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=sluice dbname=other",
            server.port()
        ),
        NoTls,
    )
    .await
    .err()
    .expect("connection to another database is refused");
    assert_eq!(error.code().map(|c| c.code()), Some("3D000"), "{error:?}");
    server.stop().expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datafusion_ddl_works_on_both_protocols() {
    let server = SluiceServer::start(Path::new(env!("CARGO_BIN_EXE_sluice")), 1).expect("starts");
    let client = connect(server.port()).await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("w.csv");
    std::fs::write(&csv, "k,word\n1,alpha\n2,beta\n").unwrap();

    // Simple protocol: STORED AS CSV with OPTIONS is DataFusion syntax that the
    // Postgres-dialect parser rejects.
    client
        .simple_query(&format!(
            "CREATE EXTERNAL TABLE csv_simple STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
            csv.display()
        ))
        .await
        .expect("simple protocol");
    // Extended protocol (Parse/Bind/Execute), as drivers send it.
    let rows = client
        .execute(
            &format!(
                "CREATE EXTERNAL TABLE csv_extended STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
                csv.display()
            ),
            &[],
        )
        .await
        .expect("extended protocol");
    assert_eq!(rows, 0);
    for table in ["csv_simple", "csv_extended"] {
        let row = client
            .query_one(&format!("SELECT count(*), max(word) FROM {table}"), &[])
            .await
            .expect(table);
        assert_eq!(row.get::<_, i64>(0), 2);
        assert_eq!(row.get::<_, String>(1), "beta");
    }
    server.stop().expect("stops");
}

/// `COPY … TO STDOUT`, as psql sends it, writes each value as PostgreSQL
/// 15 writes it (the expected texts are PostgreSQL's output for the same
/// values): doubles without `.0` and with `e+XX`, timestamps without a zero
/// fraction.
#[test]
fn copy_to_stdout_writes_values_as_postgres_does() {
    let server = start(1);
    let values = "SELECT 15.0::double precision AS d, 1e20::double precision AS e, \
                  1.5e-7::double precision AS f, 0.1::real AS r, \
                  timestamp '2024-01-02 03:04:05' AS t, \
                  timestamp '2024-01-02 03:04:05.25' AS u, date '2024-01-02' AS day, \
                  CAST(-0.5 AS decimal(12, 2)) AS n, true AS b, CAST(NULL AS int) AS z, \
                  'a\tb,\"c\"' AS s, CAST(-42 AS bigint) AS i";
    for (options, expected) in [
        (
            "",
            "15\t1e+20\t1.5e-07\t0.1\t2024-01-02 03:04:05\t2024-01-02 03:04:05.25\t\
             2024-01-02\t-0.50\tt\t\\N\ta\\tb,\"c\"\t-42\n",
        ),
        (
            "(FORMAT csv)",
            "15,1e+20,1.5e-07,0.1,2024-01-02 03:04:05,2024-01-02 03:04:05.25,\
             2024-01-02,-0.50,t,,\"a\tb,\"\"c\"\"\",-42\n",
        ),
    ] {
        let copy = format!("COPY ({values}) TO STDOUT {options}");
        let written = sluice_sql_tests::psql(server.port(), &[&copy]);
        assert_eq!(written, expected, "{copy}");
    }
    server.stop().expect("stops");
}
