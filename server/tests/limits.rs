//! Resource limits seen from clients: a query over its memory budget fails
//! with 53200 (or spills) while other sessions carry on; connections over
//! the limit get 53300, over-long statements 54000, and the server's default
//! `statement_timeout` cancels long statements with 57014.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use sluice_sql_tests::{connect, SluiceServer, SmallQueries};
use tokio_postgres::error::SqlState;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn a_query_over_its_memory_budget_fails_alone() {
    let files = tempfile::tempdir().unwrap();
    let server = SluiceServer::start_with_args(Path::new(BINARY), &["--query-memory", "8MiB"])
        .expect("starts");
    let port = server.port();
    runtime().block_on(async {
        let client = connect(port).await.unwrap();
        let dir = files.path().display();
        client
            .batch_execute(&format!(
                "COPY (SELECT i AS id, md5(CAST(i AS VARCHAR)) AS tag \
                 FROM generate_series(1, 1000000) AS t(i)) TO '{dir}/big/' (FORMAT parquet); \
                 CREATE EXTERNAL TABLE big STORED AS PARQUET LOCATION '{dir}/big/'"
            ))
            .await
            .unwrap();
        // A hash join building a million hashes does not fit in 8 MiB.
        let other = connect(port).await.unwrap();
        let (join, alongside) = tokio::join!(
            client.query_one(
                "SELECT count(*) FROM big a JOIN big b ON a.tag = b.tag",
                &[]
            ),
            other.query_one("SELECT count(*) FROM big WHERE id % 2 = 0", &[]),
        );
        let error = join.expect_err("the join fits in its budget");
        assert_eq!(error.code(), Some(&SqlState::OUT_OF_MEMORY), "{error:?}");
        assert_eq!(alongside.unwrap().get::<_, i64>(0), 500_000);
        // Sorting more than the budget spills and finishes.
        let sorted = client
            .query_one(
                "SELECT tag FROM (SELECT tag FROM big ORDER BY tag DESC) LIMIT 1",
                &[],
            )
            .await;
        match sorted {
            Ok(row) => assert_eq!(row.get::<_, String>(0).len(), 32),
            Err(e) => assert_eq!(e.code(), Some(&SqlState::OUT_OF_MEMORY), "{e:?}"),
        }
        // Both connections, and new ones, keep working.
        for client in [&client, &other, &connect(port).await.unwrap()] {
            let row = client
                .query_one("SELECT count(*) FROM big", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, i64>(0), 1_000_000);
        }
    });
    server.stop().expect("stops");
}

#[test]
fn connections_and_statements_over_the_limits_are_refused_with_sqlstates() {
    let files = tempfile::tempdir().unwrap();
    let server = SluiceServer::start_with_args(
        Path::new(BINARY),
        &[
            "--max-connections",
            "3",
            "--max-query-size",
            "1KiB",
            "--statement-timeout",
            "1s",
        ],
    )
    .expect("starts");
    let port = server.port();
    runtime().block_on(async {
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(connect(port).await.unwrap());
        }
        let refused = connect(port).await.expect_err("a fourth connection");
        assert_eq!(
            refused.code(),
            Some(&SqlState::TOO_MANY_CONNECTIONS),
            "{refused:?}"
        );
        drop(clients.pop());
        // The slot frees once the server sees the connection close.
        let mut again = None;
        for _ in 0..50 {
            if let Ok(client) = connect(port).await {
                again = Some(client);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = again.expect("a connection once another closed");

        let long = format!("SELECT '{}' AS padding", "x".repeat(2000));
        for result in [
            client.simple_query(&long).await.map(|_| ()),
            client.prepare(&long).await.map(|_| ()),
        ] {
            let error = result.expect_err("a statement over --max-query-size");
            assert_eq!(
                error.code(),
                Some(&SqlState::PROGRAM_LIMIT_EXCEEDED),
                "{error:?}"
            );
        }
        let row = client
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "1s");
        // RESET comes back to the server's default, not to PostgreSQL's 0.
        client
            .batch_execute("SET statement_timeout = 0; RESET statement_timeout")
            .await
            .unwrap();
        let row = client
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "1s");
        let dir = files.path().display();
        client
            .batch_execute(&format!(
                "COPY (SELECT i FROM generate_series(1, 100000) AS t(i)) TO '{dir}/g/' \
                 (FORMAT parquet); \
                 CREATE EXTERNAL TABLE g STORED AS PARQUET LOCATION '{dir}/g/'"
            ))
            .await
            .unwrap();
        // Ten billion pairs: far more than a second's work.
        let slow = client
            .query_one("SELECT count(*) FROM g a, g b WHERE a.i + b.i > 0", &[])
            .await
            .expect_err("the default statement_timeout cancels it");
        assert_eq!(slow.code(), Some(&SqlState::QUERY_CANCELED), "{slow:?}");
        assert_eq!(
            client
                .query_one("SELECT 1 + 1", &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
            2
        );
        // Plans that run in the frontend and compute without ever waiting (a
        // cross join of two generate_series, 40 billion pairs) are
        // interrupted too; while two of them compute, a query on the cluster
        // is answered.
        let runaway = "SELECT count(*) FROM generate_series(1, 200000) AS a(i), \
                       generate_series(1, 200000) AS b(j) WHERE i + j > 0";
        let all = async {
            tokio::join!(
                clients[0].query_one(runaway, &[]),
                clients[1].query_one(runaway, &[]),
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    client.query_one("SELECT count(*) FROM g", &[]).await
                }
            )
        };
        let (first, second, meanwhile) = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("the server answers while frontend plans compute");
        for runaway in [first, second] {
            let error = runaway.expect_err("the default statement_timeout cancels it");
            assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error:?}");
        }
        assert_eq!(meanwhile.unwrap().get::<_, i64>(0), 100_000);
    });
    server.stop().expect("stops");
}

/// A cancelled query stops computing: its cores fall idle within seconds,
/// whether it ran as one stage (the embedded default), split into stages,
/// or on the frontend's compute threads. A count over a join on a key of
/// ten values (10^11 joined rows, many minutes' work) sends nothing until
/// its end, and its aggregate polls the
/// join without ever waiting: aborting the task that drives it used to
/// leave it running for many minutes.
#[test]
fn a_cancelled_query_stops_computing() {
    let files = tempfile::tempdir().unwrap();
    let dir = files.path().display().to_string();
    let cluster = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let frontend =
        SluiceServer::start_with_small_queries(Path::new(BINARY), 2, SmallQueries::Frontend)
            .expect("starts");
    // Each server, the placement's name, a statement choosing it, and the
    // operator EXPLAIN shows for it.
    let runs = [
        (&cluster, "single_stage", "", "SingleStageExec"),
        (
            &cluster,
            "stages",
            "SET sluice.single_stage_max_bytes = 0",
            "ShuffleWriterExec",
        ),
        (&frontend, "frontend", "", "FrontendComputeExec"),
    ];
    runtime().block_on(async {
        for (server, name, setup, operator) in runs {
            let client = connect(server.port()).await.unwrap();
            client
                .batch_execute(&format!(
                    "COPY (SELECT i AS id, i % 10 AS bucket FROM generate_series(1, 1000000) AS t(i)) \
                     TO '{dir}/{name}/' (FORMAT parquet); \
                     CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{dir}/{name}/'; \
                     {setup}"
                ))
                .await
                .unwrap();
            let join = format!("SELECT count(*) FROM {name} a JOIN {name} b ON a.bucket = b.bucket");
            let plan = client.query(&format!("EXPLAIN {join}"), &[]).await.unwrap();
            let plan: String = plan.iter().map(|row| row.get::<_, String>(1)).collect();
            assert!(plan.contains(operator), "{name}: {plan}");
            let cancel = client.cancel_token();
            let canceller = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                cancel.cancel_query(tokio_postgres::NoTls).await
            });
            let error = client
                .query_one(&join, &[])
                .await
                .expect_err("10^11 joined rows outlast the cancel");
            assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{name}: {error:?}");
            canceller.await.unwrap().unwrap();
            wait_until_idle(server.pid(), name).await;
        }
    });
    cluster.stop().expect("stops");
    frontend.stop().expect("stops");
}

/// Waits (up to 30 s) for a second in which process `pid` uses under a
/// fifth of a core; a query still computing keeps both cores busy.
async fn wait_until_idle(pid: u32, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut busy = Vec::new();
    loop {
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = cpu_seconds(pid) - before;
        if used < 0.2 {
            return;
        }
        busy.push(format!("{used:.2}"));
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the server computes on after the cancel (CPU seconds per second: {})",
            busy.join(", ")
        );
    }
}

/// User and system CPU time process `pid` has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces), from the state on:
    // utime and stime are the 12th and 13th, in clock ticks (USER_HZ, 100).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}
