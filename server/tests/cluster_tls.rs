//! A cluster of separate processes secured by mutual TLS: `sluice scheduler`,
//! two `sluice executor`s and a `sluice serve --scheduler` frontend, each
//! given the cluster CA and a certificate it signed through `[cluster]` in
//! a shared config file.
//!
//! A multi-stage query runs across both executors and `sluice.executors`
//! reads the scheduler and the executors over TLS. The scheduler's and an
//! executor's listeners answer a client holding a cluster certificate and
//! refuse plaintext, clients without a certificate and clients whose
//! certificate another CA signed; a frontend with such a certificate cannot
//! run a query.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_sql_tests::certs::{TestCa, TestCertificate};
use sluice_sql_tests::process::{start_executor, start_scheduler};
use sluice_sql_tests::{connect, create_numbers_table, SluiceServer};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// A config file for every role: failure timings and the role's TLS files.
fn write_config(path: &Path, ca: &Path, identity: &TestCertificate) -> PathBuf {
    std::fs::write(
        path,
        format!(
            "[cluster]\nheartbeat-interval-seconds = 1\nexecutor-timeout-seconds = 4\n\
             tls-ca = {:?}\ntls-cert = {:?}\ntls-key = {:?}\n",
            ca.display().to_string(),
            identity.cert.display().to_string(),
            identity.key.display().to_string()
        ),
    )
    .unwrap();
    path.to_path_buf()
}

/// An HTTPS client trusting `ca`, presenting `identity` if given.
fn https_client(ca: &Path, identity: Option<&TestCertificate>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap())
        .timeout(Duration::from_secs(5));
    if let Some(identity) = identity {
        let mut pem = std::fs::read(&identity.cert).unwrap();
        pem.extend(std::fs::read(&identity.key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// Whether `client` gets an HTTP answer (any status) from `url`.
async fn answers(client: &reqwest::Client, url: &str) -> bool {
    client.get(url).send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_speak_only_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster-ca");
    let member = ca.issue(dir.path(), "member");
    let other_ca = TestCa::new(dir.path(), "other-ca");
    let stranger = other_ca.issue(dir.path(), "stranger");
    let config = write_config(&dir.path().join("sluice.toml"), &ca.cert, &member);

    let (_scheduler, scheduler_port) =
        start_scheduler(Path::new(BINARY), 0, Some(&config)).expect("scheduler starts");
    let _executors: Vec<_> = (0..2)
        .map(|i| {
            start_executor(
                Path::new(BINARY),
                scheduler_port,
                2,
                &dir.path().join(format!("work-{i}")),
                Some(&config),
            )
            .expect("executor starts")
        })
        .collect();
    let scheduler = format!("127.0.0.1:{scheduler_port}");
    let frontend = SluiceServer::start_with_args(
        Path::new(BINARY),
        &[
            "--scheduler",
            &scheduler,
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .expect("frontend starts");
    let client = connect(frontend.port()).await.expect("connects");

    // Both executors registered over TLS (they poll the scheduler).
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query("SELECT executor_id FROM sluice.executors", &[])
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "executors did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Data written by the executors, then a join and aggregate over it: a
    // multi-stage job whose shuffles and results travel over Flight with TLS.
    let data = dir.path().join("numbers");
    create_numbers_table(&client, &data)
        .await
        .expect("COPY and CREATE EXTERNAL TABLE");
    let rows = client
        .query(
            "SELECT a.bucket, count(*), sum(b.id) FROM numbers a JOIN numbers b ON a.id = b.id \
             GROUP BY a.bucket ORDER BY a.bucket",
            &[],
        )
        .await
        .expect("join runs on the cluster");
    assert_eq!(rows.len(), 10);
    for row in &rows {
        let (bucket, count, sum): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        // Ids 1..=100000 with id % 10 == bucket: 10,000 of them.
        let first = if bucket == 0 { 10 } else { bucket };
        assert_eq!(count, 10_000, "bucket {bucket}");
        assert_eq!(
            sum,
            10_000 * first + 10 * (10_000 * 9_999 / 2),
            "bucket {bucket}"
        );
    }
    let executors = client
        .query(
            "SELECT flight_port, tasks_completed, tasks_running FROM sluice.executors \
             ORDER BY executor_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(executors.len(), 2);
    for executor in &executors {
        let tasks: Option<i64> = executor.get(1);
        assert!(
            tasks.unwrap_or(0) > 0,
            "each executor ran tasks (read over TLS): {tasks:?}"
        );
        let running: Option<i64> = executor.get(2);
        assert_eq!(running, Some(0), "no task runs now (read over TLS)");
    }
    let flight_port: i32 = executors[0].get(0);

    // The listeners: a member gets answers; plaintext, no certificate and a
    // stranger's certificate get none.
    let member_client = https_client(&ca.cert, Some(&member));
    let anonymous = https_client(&ca.cert, None);
    let stranger_client = https_client(&ca.cert, Some(&stranger));
    let plain = reqwest::Client::new();
    for (listener, port) in [
        ("scheduler", scheduler_port),
        ("executor", flight_port as u16),
    ] {
        let url = format!("https://127.0.0.1:{port}/api/executors");
        assert!(answers(&member_client, &url).await, "{listener}: member");
        assert!(
            !answers(&anonymous, &url).await,
            "{listener}: no certificate"
        );
        assert!(
            !answers(&stranger_client, &url).await,
            "{listener}: stranger"
        );
        let url = format!("http://127.0.0.1:{port}/api/executors");
        assert!(!answers(&plain, &url).await, "{listener}: plaintext");
    }

    // A frontend whose certificate another CA signed starts, but cannot
    // reach the cluster.
    let stranger_config = write_config(&dir.path().join("stranger.toml"), &ca.cert, &stranger);
    let outsider = SluiceServer::start_with_args(
        Path::new(BINARY),
        &[
            "--scheduler",
            &scheduler,
            "--config",
            stranger_config.to_str().unwrap(),
        ],
    )
    .expect("frontend starts");
    let outsider_client = connect(outsider.port()).await.expect("connects");
    outsider_client
        .batch_execute(&format!(
            "CREATE EXTERNAL TABLE numbers STORED AS PARQUET LOCATION '{}/'",
            data.display()
        ))
        .await
        .expect("planning needs no cluster");
    let refused = outsider_client
        .query("SELECT count(*) FROM numbers", &[])
        .await
        .expect_err("a stranger's query ran");
    let code = refused.code().map(|code| code.code().to_string());
    assert_eq!(code.as_deref(), Some("08006"), "{refused:?}");
    outsider.stop().expect("stops");
    frontend.stop().expect("stops");
}
