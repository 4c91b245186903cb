//! A real Prometheus server (Debian's `prometheus`, or `SLUICE_PROMETHEUS`)
//! scrapes a running `sluice serve` every second; after a multi-stage query
//! its HTTP query API returns the Sluice series with values. The compose
//! cluster's `docker/prometheus.yml` passes `promtool`, and every query of the
//! Grafana dashboard in `docker/grafana/` runs and reads served metrics.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_sql_tests::{connect, create_numbers_table, SluiceServer, NUMBERS_JOIN};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target` every
    /// second, with its data in `dir`.
    fn start(dir: &Path, target: &str) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: sluice\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = sluice_scheduler::ports::free_port([127, 0, 0, 1].into()).unwrap();
        let program = std::env::var("SLUICE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let child = Command::new(&program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} runs (.ci/run installs it): {e}"));
        Self { child, port }
    }

    /// The values of the series `query` (PromQL) returns now.
    async fn query(&self, query: &str) -> Vec<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(response) = reqwest::Client::new()
            .get(&url)
            .query(&[("query", query)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let Ok(text) = response.text().await else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Vec::new();
        };
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|series| series["value"][1].as_str()?.parse().ok())
            .collect()
    }

    /// Whether Prometheus runs `query` (valid PromQL over known functions).
    async fn accepts(&self, query: &str) -> bool {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(response) = reqwest::Client::new()
            .get(&url)
            .query(&[("query", query)])
            .send()
            .await
        else {
            return false;
        };
        let text = response.text().await.unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .map(|body| body["status"] == "success")
            .unwrap_or(false)
    }

    /// The values of `query` once it returns at least one series matching
    /// `accept`, within 60 s.
    async fn wait_for(&self, query: &str, accept: impl Fn(&[f64]) -> bool) -> Vec<f64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let values = self.query(query).await;
            if !values.is_empty() && accept(&values) {
                return values;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never returned an accepted value for {query}: {values:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_series_of_a_query() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let http = server.http_port().expect("the HTTP endpoint is on");
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), &format!("127.0.0.1:{http}"));

    let client = connect(server.port()).await.expect("connects");
    let data = dir.path().join("numbers");
    create_numbers_table(&client, &data)
        .await
        .expect("COPY and CREATE EXTERNAL TABLE");
    let rows = client.query(NUMBERS_JOIN, &[]).await.unwrap();
    assert_eq!(rows.len(), 10);

    let positive = |values: &[f64]| values.iter().all(|value| *value > 0.0);
    prometheus
        .wait_for("sluice_queries_total{state=\"finished\"}", |v| v[0] >= 2.0)
        .await;
    prometheus
        .wait_for("sluice_scan_bytes_total", positive)
        .await;
    prometheus
        .wait_for("sluice_shuffle_bytes_written_total", positive)
        .await;
    prometheus
        .wait_for("sluice_shuffle_bytes_read_total", positive)
        .await;
    prometheus
        .wait_for("sluice_executors", |v| v[0] == 2.0)
        .await;
    // A series per executor, each with finished tasks.
    let tasks = prometheus
        .wait_for("sluice_tasks_total{state=\"finished\"}", |v| v.len() == 2)
        .await;
    assert!(positive(&tasks), "{tasks:?}");
    prometheus
        .wait_for(
            "histogram_quantile(0.5, sluice_query_duration_seconds_bucket)",
            |v| v[0] > 0.0,
        )
        .await;
    // The compose cluster's Prometheus configuration is valid, and every
    // query of its Grafana dashboard runs and reads metrics Sluice serves.
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(repository.join("docker/prometheus.yml"))
        .output()
        .expect("promtool runs (Debian's prometheus package has it)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let exposed = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repository.join("docker/grafana/dashboards/sluice.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for target in panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
    {
        let expr = target["expr"].as_str().expect("a PromQL expression");
        assert!(prometheus.accepts(expr).await, "Prometheus refuses {expr}");
        for metric in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("sluice_"))
        {
            let family = metric.trim_end_matches("_bucket");
            assert!(
                exposed.contains(&format!("# TYPE {family} ")),
                "{expr}: {metric} is not served"
            );
        }
    }
    drop(client);
    server.stop().expect("stops");
}
