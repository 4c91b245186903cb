//! The web UI in a real browser: headless Chromium (Debian's `chromium`, or
//! the one `SLUICE_CHROMIUM` names) loads the pages of a running
//! `sluice serve`, and the test reads the DOM it built: the executors, a
//! running query with its progress, a query that just ran, and that query's
//! page with its stage graph and the executors of each stage.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_sql_tests::{connect, create_numbers_table, executor_ids, SluiceServer, NUMBERS_JOIN};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// A join of a billion rows: still running when the page is loaded.
const LONG_JOIN: &str = "SELECT count(*) FROM numbers a JOIN numbers b ON a.bucket = b.bucket";

fn chromium() -> PathBuf {
    std::env::var_os("SLUICE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The DOM Chromium built for `url`, serialized.
async fn dump_dom(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let output = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--dump-dom", &url])
            .output()
            .expect("chromium is installed (apt-get install chromium)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// The part of `dom` after the heading `title` and before the next heading.
fn section<'a>(dom: &'a str, title: &str) -> &'a str {
    let start = dom
        .find(&format!("<h2>{title}</h2>"))
        .unwrap_or_else(|| panic!("no section {title}: {dom}"));
    let rest = &dom[start + title.len() + 9..];
    &rest[..rest.find("<h2>").unwrap_or(rest.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_shows_queries_stages_and_executors() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let ui = format!(
        "http://127.0.0.1:{}",
        server.http_port().expect("HTTP is on")
    );
    let client = connect(server.port()).await.expect("connects");
    let dir = tempfile::tempdir().unwrap();
    create_numbers_table(&client, &dir.path().join("numbers"))
        .await
        .expect("COPY and CREATE EXTERNAL TABLE");
    let executors = executor_ids(&client).await.unwrap();
    assert_eq!(executors.len(), 2);
    // Through the extended protocol, as drivers send it: shown as sent.
    assert_eq!(client.query(NUMBERS_JOIN, &[]).await.unwrap().len(), 10);
    let id: i64 = client
        .query_one(
            "SELECT query_id FROM sluice.queries WHERE query_text = $1 AND rows = 10",
            &[&NUMBERS_JOIN],
        )
        .await
        .unwrap()
        .get(0);

    // The overview: both executors, and the join among the recent queries.
    let dom = dump_dom(format!("{ui}/")).await;
    let listed = section(&dom, "Executors");
    for executor in &executors {
        assert!(listed.contains(executor.as_str()), "{executor}: {dom}");
    }
    let recent = section(&dom, "Recent queries");
    assert!(recent.contains(NUMBERS_JOIN), "{dom}");
    assert!(recent.contains(&format!("href=\"/query/{id}\"")), "{dom}");

    // The join's page: its stage graph and the executors of each stage.
    let page = dump_dom(format!("{ui}/query/{id}")).await;
    assert!(page.contains(NUMBERS_JOIN), "{page}");
    assert!(page.contains("<svg"), "{page}");
    for stage in ["Stage 1 · Successful", "Stage 2 · Successful"] {
        assert!(page.contains(stage), "{stage}: {page}");
    }
    for executor in &executors {
        assert!(page.contains(executor.as_str()), "{executor}: {page}");
    }

    // A query still running is listed with its progress.
    client
        .batch_execute("SET statement_timeout = '20s'")
        .await
        .unwrap();
    let long = tokio::spawn(async move {
        let result = client.simple_query(LONG_JOIN).await;
        (client, result)
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dom = dump_dom(format!("{ui}/")).await;
        let running = section(&dom, "Running queries");
        // Stages done / total: the job was split and planned.
        if running.contains(LONG_JOIN) && running.contains(" / 3") {
            break;
        }
        assert!(Instant::now() < deadline, "no running query: {dom}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    long.abort();
    server.stop().expect("stops");
}
