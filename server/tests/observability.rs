//! The HTTP endpoint of `sluice serve`, read the way Prometheus and a load
//! balancer read it: after a multi-stage query over Parquet, `/metrics`
//! counts the statement, the tasks on both executors, the bytes scanned and
//! shuffled; `/healthz` and `/readyz` answer 200.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_sql_tests::{connect, create_numbers_table, SluiceServer};

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
    let rows = client
        .query(
            "SELECT a.bucket, count(*) FROM numbers a JOIN numbers b ON a.id = b.id \
             GROUP BY a.bucket",
            &[],
        )
        .await
        .unwrap();
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
