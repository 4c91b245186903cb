//! The HTTP endpoint of `sluice serve`, read the way Prometheus and a load
//! balancer read it: after a multi-stage query over Parquet, `/metrics`
//! counts the statement, the tasks on both executors, the bytes scanned and
//! shuffled; `/healthz` and `/readyz` answer 200. `EXPLAIN ANALYZE` shows a
//! join's stages; `sluice.queries` keeps its history across restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_sql_tests::{
    connect, create_numbers_table, executor_ids, psql, psql_command, SluiceServer, NUMBERS_JOIN,
};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// The samples of a Prometheus text exposition: (`name{labels}`, value).
fn parse_samples(body: &str) -> Vec<(String, f64)> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of metric `name` whose labels contain `labels`.
fn total(samples: &[(String, f64)], name: &str, labels: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let metric = series.split('{').next().unwrap_or_default();
            metric == name && series.contains(labels)
        })
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_queries_tasks_scans_and_shuffles() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let http = server.http_port().expect("the HTTP endpoint is on");
    let client = connect(server.port()).await.expect("connects");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("numbers");
    create_numbers_table(&client, &data)
        .await
        .expect("COPY and CREATE EXTERNAL TABLE");
    let rows = client.query(NUMBERS_JOIN, &[]).await.unwrap();
    assert_eq!(rows.len(), 10);
    client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .expect_err("no such table");

    let get = |path: &str| reqwest::get(format!("http://127.0.0.1:{http}{path}"));
    let response = get("/metrics").await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = response.text().await.unwrap();
    let samples = parse_samples(&body);
    let value = |name: &str, labels: &str| total(&samples, name, labels);

    // The setup batch (one simple query) and the join; the failed one.
    let finished = value("sluice_queries_total", "state=\"finished\"");
    assert_eq!(finished, 2.0, "{body}");
    let failed = value("sluice_queries_total", "state=\"failed\"");
    assert_eq!(failed, 1.0, "{body}");
    let timed = value("sluice_query_duration_seconds_count", "");
    assert_eq!(timed, 3.0, "{body}");
    assert_eq!(value("sluice_connections", ""), 1.0, "{body}");
    assert_eq!(value("sluice_executors", ""), 2.0, "{body}");
    // Both scans of the join read every row.
    assert!(value("sluice_scan_rows_total", "") >= 200_000.0, "{body}");
    assert!(value("sluice_scan_bytes_total", "") > 0.0, "{body}");
    assert!(
        value("sluice_shuffle_bytes_written_total", "") > 0.0,
        "{body}"
    );
    assert!(value("sluice_shuffle_bytes_read_total", "") > 0.0, "{body}");
    let executors_with_tasks = samples
        .iter()
        .filter(|(series, value)| {
            series.starts_with("sluice_tasks_total{")
                && series.contains("state=\"finished\"")
                && *value > 0.0
        })
        .count();
    assert_eq!(executors_with_tasks, 2, "tasks on both executors: {body}");
    assert_eq!(value("sluice_tasks_running", ""), 0.0, "{body}");
    // Nothing runs now, so nothing holds memory.
    assert_eq!(value("sluice_memory_reserved_bytes", ""), 0.0, "{body}");
    // No label carries query text.
    assert!(!body.contains("numbers"), "{body}");

    // While a long join runs, its tasks and the memory its hash tables hold
    // show; once the statement times out, both go back to zero.
    let scrape = || async {
        let body = get("/metrics").await.unwrap().text().await.unwrap();
        let now = parse_samples(&body);
        (
            total(&now, "sluice_tasks_running", ""),
            total(&now, "sluice_memory_reserved_bytes", ""),
        )
    };
    client
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
    let long = client.query_one(
        "SELECT count(*) FROM numbers a JOIN numbers b ON a.bucket = b.bucket",
        &[],
    );
    let watch = async {
        loop {
            let (running, reserved) = scrape().await;
            if running > 0.0 && reserved > 0.0 {
                return (running, reserved);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (long, seen) = tokio::join!(long, tokio::time::timeout(Duration::from_secs(5), watch));
    long.expect_err("a billion joined rows outlast the statement timeout");
    seen.expect("running tasks holding memory were seen");
    let deadline = Instant::now() + Duration::from_secs(15);
    while scrape().await != (0.0, 0.0) {
        assert!(Instant::now() < deadline, "the cancelled tasks still run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(path).await.unwrap().status(), 200, "{path}");
    }
    drop(client);
    server.stop().expect("stops");
}

/// The plan text of an `EXPLAIN ANALYZE` answer (its `plan` column).
async fn explain_analyze(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.query(sql, &[]).await.expect("EXPLAIN ANALYZE runs");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>("plan_type"), "Plan with Metrics");
    rows[0].get("plan")
}

/// `EXPLAIN ANALYZE` of a join runs it on the cluster and answers with each
/// stage: the executors that ran its tasks, the rows it read and wrote, and
/// its operators' metrics summed over the executors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_shows_stage_rows_and_executors() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let client = connect(server.port()).await.expect("connects");
    let dir = tempfile::tempdir().unwrap();
    create_numbers_table(&client, &dir.path().join("numbers"))
        .await
        .expect("COPY and CREATE EXTERNAL TABLE");
    let executors = executor_ids(&client).await.unwrap();
    assert_eq!(executors.len(), 2);

    let join = NUMBERS_JOIN;
    let report = explain_analyze(&client, &format!("EXPLAIN ANALYZE {join}")).await;
    assert!(
        report.starts_with("Distributed query: 10 rows in "),
        "{report}"
    );
    let stages: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("Stage "))
        .collect();
    assert!(stages.len() >= 2, "{report}");
    // The executors named per stage: every one of the cluster ran tasks.
    let mut ran: Vec<String> = stages
        .iter()
        .flat_map(|line| {
            let (_, list) = line.split_once(" tasks on executors ").expect("executors");
            list.split(", ")
                .map(|entry| entry.split(' ').next().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    ran.sort();
    ran.dedup();
    assert_eq!(ran, executors, "{report}");
    // The first stage scans one side: 100,000 rows in, 100,000 out.
    let first = report
        .lines()
        .skip_while(|line| !line.starts_with("Stage 1:"))
        .nth(1)
        .unwrap();
    assert!(
        first
            .trim_start()
            .starts_with("input_rows=100000, output_rows=100000,"),
        "{report}"
    );
    for shown in [
        "HashJoinExec",
        "DataSourceExec",
        "shuffle_bytes_written=",
        "shuffle_bytes_read=",
        "elapsed_compute=",
        "bytes_scanned=",
    ] {
        assert!(report.contains(shown), "no {shown}: {report}");
    }
    // Stage outputs were read from the executors' memory: how many
    // partitions each reader took from there is a detail for VERBOSE, which
    // shows every metric of every operator.
    assert!(!report.contains("memory_partitions"), "{report}");
    let verbose = explain_analyze(&client, &format!("EXPLAIN ANALYZE VERBOSE {join}")).await;
    assert!(verbose.contains("memory_partitions="), "{verbose}");
    server.stop().expect("stops");
}

/// A join that runs as one stage (the default on the embedded cluster) counts
/// its scans in `/metrics`, and `EXPLAIN ANALYZE` shows the operators the
/// stage ran with their metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_stage_queries_count_scans_and_show_their_operators() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let http = server.http_port().expect("the HTTP endpoint is on");
    let client = connect(server.port()).await.expect("connects");
    let dir = tempfile::tempdir().unwrap();
    create_numbers_table(&client, &dir.path().join("numbers"))
        .await
        .expect("COPY and CREATE EXTERNAL TABLE");
    // Still on the cluster (`sluice.frontend_max_bytes = 0`), but as one stage.
    client
        .batch_execute("RESET sluice.single_stage_max_bytes")
        .await
        .unwrap();
    let plan: String = client
        .query(&format!("EXPLAIN {NUMBERS_JOIN}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>("plan"))
        .collect();
    assert!(plan.contains("SingleStageExec"), "{plan}");

    let scanned = || async {
        let body = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let samples = parse_samples(&body);
        (
            total(&samples, "sluice_scan_bytes_total", ""),
            total(&samples, "sluice_scan_rows_total", ""),
        )
    };
    let (bytes_before, rows_before) = scanned().await;
    assert_eq!(client.query(NUMBERS_JOIN, &[]).await.unwrap().len(), 10);
    // Rows can reach the client before the task reports its end.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (bytes, rows) = scanned().await;
        if bytes > bytes_before && rows - rows_before >= 200_000.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scans counted: {bytes_before} -> {bytes} bytes, {rows_before} -> {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let report = explain_analyze(&client, &format!("EXPLAIN ANALYZE {NUMBERS_JOIN}")).await;
    assert!(report.contains(", 1 stages\n"), "{report}");
    let line = |operator: &str| {
        report
            .lines()
            .find(|line| line.trim_start().starts_with(operator))
            .unwrap_or_else(|| panic!("no {operator}: {report}"))
            .to_string()
    };
    assert!(
        line("HashJoinExec").contains("output_rows=100.0 K"),
        "{report}"
    );
    let scan = line("DataSourceExec");
    assert!(scan.contains("bytes_scanned="), "{report}");
    assert!(scan.contains("output_rows=100.0 K"), "{report}");
    // The stage read what its scans produced.
    assert!(
        report.contains("input_rows=200000, output_rows=10,"),
        "{report}"
    );
    server.stop().expect("stops");
}

/// `sluice.queries` keeps the newest `--query-history` queries across a
/// restart, and a `kill -9`.
#[test]
fn query_history_survives_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    let start = || {
        SluiceServer::start_in(
            Path::new(BINARY),
            data_dir.path(),
            &["--query-history", "3"],
        )
        .expect("starts")
    };
    let history = "SELECT query_id, user_name, state, rows, query_text, error IS NOT NULL \
                   FROM sluice.queries WHERE state <> 'running' ORDER BY query_id";
    let server = start();
    for statement in [
        "SELECT 1",
        "SELECT 2",
        "SELECT * FROM generate_series(1, 5)",
    ] {
        psql(server.port(), &[statement]);
    }
    let failed = psql_command(server.port(), &["SELECT 1/0"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    server.stop().expect("stops");

    let server = start();
    // Three queries kept: the two last of the earlier run and this one.
    let expected = "3|sluice|finished|5|SELECT * FROM generate_series(1, 5)|f\n\
                    4|sluice|failed|0|SELECT 1/0|t\n";
    assert_eq!(psql(server.port(), &[history]), expected);
    // A query's record reaches the file a few milliseconds after its reply
    // (a writer thread appends it); the kill comes once it is there.
    wait_for_history_line(&data_dir.path().join("queries.jsonl"), "{\"id\":5,");
    drop(server); // kill -9

    // The query that read the history was recorded as well; numbering goes on.
    let server = start();
    let shown = psql(server.port(), &[history]);
    assert!(shown.starts_with("4|"), "{shown}");
    assert!(
        shown.ends_with(&format!("5|sluice|finished|2|{history}|f\n")),
        "{shown}"
    );
    server.stop().expect("stops");
}

/// With `SET sluice.progress = on`, psql prints NOTICEs with the stage
/// progress of a long join while it runs.
#[test]
fn psql_users_get_progress_notices() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("numbers");
    let d = data.display();
    let output = psql_command(
        server.port(),
        &[
            "SET sluice.single_stage_max_bytes = 0",
            &format!(
                "COPY (SELECT i AS id, i % 10 AS bucket FROM generate_series(1, 100000) AS t(i)) \
                 TO '{d}/' (FORMAT parquet)"
            ),
            &format!("CREATE EXTERNAL TABLE numbers STORED AS PARQUET LOCATION '{d}/'"),
            "SET sluice.progress = on",
            "SET statement_timeout = '5s'",
            "SELECT count(*) FROM numbers a JOIN numbers b ON a.bucket = b.bucket",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("NOTICE:  progress: "))
        .collect();
    assert!(notices.len() >= 2, "{stderr}");
    assert!(
        notices[0].contains(" of 3 running; stages done "),
        "{stderr}"
    );
    assert!(notices[0].contains(" rows read, "), "{stderr}");
    assert!(
        stderr.contains("canceling statement due to statement timeout"),
        "{stderr}"
    );
    server.stop().expect("stops");
}

/// Waits (up to 30 s) until the query history file has a line starting with
/// `prefix`.
fn wait_for_history_line(file: &Path, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.lines().any(|line| line.starts_with(prefix)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no line {prefix} in {}:\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
