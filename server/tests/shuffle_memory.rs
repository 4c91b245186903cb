//! Stage outputs held in the executors' memory, spilled beyond the budget,
//! or written as Ballista's files: the staged slt files give the same
//! answers with each, and `/metrics` shows where the outputs went and that
//! memory is given back once the jobs are done.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_sql_tests::{run_slt_file, slt_dir, SluiceServer, SmallQueries};

/// The slt files whose queries run staged.
const STAGED_FILES: &[&str] = &["staged_shuffle.slt", "semi_joins.slt"];

/// A metric's value in the Prometheus text `exposed` (0 when not served).
fn metric(exposed: &str, name: &str) -> f64 {
    exposed
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(server: &SluiceServer) -> String {
    let http = server.http_port().expect("the HTTP endpoint is on");
    reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Runs the staged files against `sluice serve` with `shuffle_memory`,
/// returning the metrics once the held memory is back to 0.
async fn run_staged_files(shuffle_memory: &str) -> String {
    let server = SluiceServer::start_with_args(
        Path::new(env!("CARGO_BIN_EXE_sluice")),
        &["--executors", "2", "--shuffle-memory", shuffle_memory],
    )
    .expect("sluice serve starts");
    for file in STAGED_FILES {
        if let Err(report) =
            run_slt_file(server.port(), &slt_dir().join(file), SmallQueries::Cluster).await
        {
            panic!("{file} with --shuffle-memory {shuffle_memory}:\n{report}");
        }
    }
    // Every job has ended (one failed) and its results were read: the held
    // outputs go once Ballista removes the jobs' directories.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exposed = scrape(&server).await;
        if metric(&exposed, "sluice_shuffle_memory_bytes") == 0.0 {
            return exposed;
        }
        assert!(
            Instant::now() < deadline,
            "shuffle memory is still held 10 s after the last query (--shuffle-memory {shuffle_memory})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_spilled_and_file_shuffles_give_the_same_answers() {
    // Default budget: outputs held in memory, none spilled.
    let held = run_staged_files("1GiB").await;
    assert!(held.contains("# TYPE sluice_shuffle_memory_bytes gauge"));
    assert!(metric(&held, "sluice_shuffle_bytes_written_total") > 0.0);
    assert_eq!(metric(&held, "sluice_shuffle_spilled_bytes_total"), 0.0);

    // A one-byte budget: every output is spilled to the work dir.
    let spilled = run_staged_files("1").await;
    assert!(metric(&spilled, "sluice_shuffle_spilled_bytes_total") > 0.0);

    // No budget: Ballista's own shuffle files.
    let files = run_staged_files("0").await;
    assert!(metric(&files, "sluice_shuffle_bytes_written_total") > 0.0);
    assert_eq!(metric(&files, "sluice_shuffle_spilled_bytes_total"), 0.0);
}
