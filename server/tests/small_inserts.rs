//! One-row INSERTs add up to few files, and acknowledged means durable:
//! psycopg's pipelined `executemany` (outside and inside a transaction
//! block) is acknowledged once its rows are committed, so a `kill -9` right
//! after loses none of them, while rows of a block never committed are gone.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sluice_sql_tests::{psql, SluiceServer};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// Rows of each batch the client writes.
const ROWS: u64 = 3000;

fn python() -> PathBuf {
    std::env::var_os("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The Parquet files under the directory of managed table `name`.
fn parquet_files(port: u16, name: &str) -> usize {
    let location = psql(
        port,
        &[&format!(
            "SELECT location FROM sluice.tables WHERE table_name = '{name}'"
        )],
    );
    let dir = PathBuf::from(location.trim().strip_prefix("file://").unwrap());
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| {
                let path = entry.path();
                if path.is_dir() {
                    count(&path)
                } else {
                    usize::from(path.extension().is_some_and(|e| e == "parquet"))
                }
            })
            .sum()
    }
    count(&dir)
}

#[test]
fn acknowledged_inserts_survive_kill_9_in_few_files() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("starts");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql-tests/clients/psycopg_small_inserts.py");
    let mut client = Command::new(python())
        .arg(&script)
        .arg(server.port().to_string())
        .arg(ROWS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python runs (.ci/run installs the venv)");
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    for expected in ["acknowledged", "pending"] {
        let line = lines.next().map(Result::unwrap);
        assert_eq!(line.as_deref(), Some(expected), "the client stopped early");
    }
    drop(server); // kill -9, the client's last block still open
    let _ = client.kill();
    let _ = client.wait();

    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("restarts");
    let rows = 2 * ROWS;
    assert_eq!(
        psql(
            server.port(),
            &["SELECT count(*), sum(id), min(id) FROM acked"]
        ),
        format!("{rows}|{}|1\n", rows * (rows + 1) / 2),
        "every acknowledged row, none of the failed batch or the open block"
    );
    // One file per committed batch, not one per INSERT.
    let files = parquet_files(server.port(), "acked");
    assert!(files <= 3, "{files} files for two batches");
    server.stop().expect("stops");
}

#[test]
fn single_row_writes_are_compacted_into_few_segments() {
    let server = SluiceServer::start(Path::new(BINARY), 1).expect("starts");
    let port = server.port();
    let inserts: Vec<String> = (1..=60)
        .map(|i| format!("INSERT INTO c VALUES ({i}, 'row {i}')"))
        .collect();
    let mut statements = vec!["CREATE TABLE c (id bigint, label varchar)"];
    statements.extend(inserts.iter().map(String::as_str));
    // psql sends each as a query of its own: 60 commits, 60 segments
    // without compaction.
    psql(port, &statements);
    let segments = || {
        psql(
            port,
            &["SELECT segments FROM sluice.tables WHERE table_name = 'c'"],
        )
        .trim()
        .parse::<usize>()
        .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while segments() > 16 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} segments",
            segments()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        psql(port, &["SELECT count(*), sum(id), max(label) FROM c"]),
        "60|1830|row 9\n"
    );
    server.stop().expect("stops");
}
