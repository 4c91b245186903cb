//! The embedded cluster as a user drives it: scans split across executors give
//! correct counts, every executor does work, flags/env/config file shape the
//! cluster, bad configuration fails clearly, SIGTERM shuts down cleanly.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use sluice_sql_tests::SluiceServer;
use tokio_postgres::Client;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

async fn connect(port: u16) -> Client {
    sluice_sql_tests::connect(port).await.expect("connects")
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Writes `files` Parquet files of `rows_per_file` rows each and creates table
/// `name` over them.
async fn create_table(client: &Client, dir: &Path, name: &str, files: i64, rows_per_file: i64) {
    for file in 0..files {
        let (first, last) = (file * rows_per_file + 1, (file + 1) * rows_per_file);
        client
            .batch_execute(&format!(
                "COPY (SELECT i AS id, i % 13 AS g FROM generate_series({first}, {last}) AS t(i)) \
                 TO '{}/{name}/part-{file}.parquet' (FORMAT parquet)",
                dir.display()
            ))
            .await
            .expect("fixture written");
    }
    client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{}/{name}/'",
            dir.display()
        ))
        .await
        .expect("table created");
}

/// Row counts and sums over a table split into several files must be exact
/// whatever the number of executors (on DataFusion 54 each scan task read the
/// whole table: apache/datafusion-ballista#1907).
async fn check_counts(executors: usize) {
    let server = SluiceServer::start(Path::new(BINARY), executors).expect("starts");
    let client = connect(server.port()).await;
    let dir = tempfile::tempdir().unwrap();
    create_table(&client, dir.path(), "numbers", 6, 5000).await;
    // Spread every job over the executors (small jobs run as a single stage
    // by default; checked at the end).
    client
        .batch_execute("SET sluice.single_stage_max_bytes = 0")
        .await
        .unwrap();

    assert_eq!(count(&client, "SELECT count(*) FROM numbers").await, 30_000);
    assert_eq!(
        count(&client, "SELECT CAST(sum(id) AS BIGINT) FROM numbers").await,
        30_000 * 30_001 / 2
    );
    let groups = client
        .query("SELECT g, count(*) FROM numbers GROUP BY g ORDER BY g", &[])
        .await
        .unwrap();
    assert_eq!(groups.len(), 13);
    let total: i64 = groups.iter().map(|row| row.get::<_, i64>(1)).sum();
    assert_eq!(total, 30_000);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM numbers a JOIN numbers b ON a.id = b.id"
        )
        .await,
        30_000
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice.executors").await,
        executors as i64
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sluice.executors WHERE tasks_completed > 0"
        )
        .await,
        executors as i64,
        "every executor ran tasks"
    );
    let stages = count(
        &client,
        "SELECT max(stages) FROM sluice.queries WHERE query_text LIKE '%JOIN numbers b%'",
    )
    .await;
    assert!(
        stages >= 3,
        "the join ran as a multi-stage job ({stages} stages)"
    );

    // Under the default threshold the same join is one stage, same answer.
    client
        .batch_execute("RESET sluice.single_stage_max_bytes")
        .await
        .unwrap();
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM numbers a JOIN numbers b ON a.id = b.id WHERE 'single' <> ''"
        )
        .await,
        30_000
    );
    let stages = count(
        &client,
        "SELECT max(stages) FROM sluice.queries WHERE query_text LIKE '%''single''%' \
         AND query_text NOT LIKE '%sluice.queries%'",
    )
    .await;
    assert_eq!(stages, 1, "the small join ran as a single stage");
    server.stop().expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_with_two_executors() {
    check_counts(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_exact_with_three_executors() {
    check_counts(3).await;
}

#[test]
fn sigterm_stops_the_server_and_removes_work_dirs() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &["--executors", "2"])
        .expect("starts");
    let work = data_dir.path().join("work");
    assert!(work.join("executor-0").is_dir() && work.join("executor-1").is_dir());
    let port = server.port();
    let status = server.stop().expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(!work.exists(), "{} removed at shutdown", work.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the Postgres port is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_and_flags_shape_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[serve]\nexecutors = 3\nslots = 2\n").unwrap();
    let config = config.display().to_string();

    // The file alone.
    let server =
        SluiceServer::start_with_args(Path::new(BINARY), &["--config", &config]).expect("starts");
    let client = connect(server.port()).await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice.executors").await,
        3
    );
    assert_eq!(
        count(
            &client,
            "SELECT CAST(min(task_slots) AS BIGINT) FROM sluice.executors"
        )
        .await,
        2
    );
    server.stop().expect("stops");

    // A flag wins over the file.
    let server = SluiceServer::start_with_args(
        Path::new(BINARY),
        &["--config", &config, "--executors", "1"],
    )
    .expect("starts");
    let client = connect(server.port()).await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice.executors").await,
        1
    );
    server.stop().expect("stops");
}

#[test]
fn bad_configuration_fails_with_a_clear_message() {
    for (args, expected) in [
        (
            vec!["serve", "--executors", "0"],
            "executors must be at least 1",
        ),
        (
            vec!["serve", "--listen", "not-an-address"],
            "not a HOST:PORT address",
        ),
        (
            vec!["serve", "--config", "/nonexistent/sluice.toml"],
            "reading config file",
        ),
    ] {
        let output = Command::new(BINARY).args(&args).output().expect("runs");
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "executorz = 2\n").unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field"));
}

/// Job directories (named after Ballista job ids) left in the executors' work
/// dirs; DataFusion's spill dirs (`datafusion-*`) do not count.
fn job_dirs(data_dir: &Path) -> Vec<String> {
    let mut jobs = Vec::new();
    for executor in std::fs::read_dir(data_dir.join("work")).unwrap() {
        for entry in std::fs::read_dir(executor.unwrap().path()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.starts_with("datafusion") {
                jobs.push(name);
            }
        }
    }
    jobs
}

/// A client that reads its result slowly, a portal at a time, still gets all
/// of it after the result retention time has passed; once it has read
/// everything the executors delete the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowly_read_results_are_kept_until_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, "[cluster]\nresult-retention-seconds = 1\n").unwrap();
    let data_dir = dir.path().join("data");
    let server = SluiceServer::start_in(
        Path::new(BINARY),
        &data_dir,
        &["--config", config.to_str().unwrap()],
    )
    .expect("starts");
    let mut client = connect(server.port()).await;
    create_table(&client, dir.path(), "slow", 2, 20_000).await;

    let transaction = client.transaction().await.unwrap();
    let statement = transaction
        .prepare("SELECT id FROM slow ORDER BY id")
        .await
        .unwrap();
    let portal = transaction.bind(&statement, &[]).await.unwrap();
    let first = transaction.query_portal(&portal, 1000).await.unwrap();
    assert_eq!(first.len(), 1000);
    assert!(
        !job_dirs(&data_dir).is_empty(),
        "the result waits on an executor"
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut ids: Vec<i64> = first.iter().map(|row| row.get(0)).collect();
    loop {
        let rows = transaction.query_portal(&portal, 5000).await.unwrap();
        if rows.is_empty() {
            break;
        }
        ids.extend(rows.iter().map(|row| row.get::<_, i64>(0)));
    }
    assert_eq!(ids, (1..=40_000).collect::<Vec<i64>>());
    transaction.commit().await.unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !job_dirs(&data_dir).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        job_dirs(&data_dir),
        Vec::<String>::new(),
        "read results are deleted"
    );
    server.stop().expect("stops");
}
