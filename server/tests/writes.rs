//! Writes to managed tables are all-or-nothing: readers during a large
//! `INSERT INTO … SELECT` see the old rows, and a server killed mid-write
//! comes back with exactly the old rows and no stray files, in a local
//! warehouse and in one in object storage (moto's S3 server).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_sql_tests::process::S3Server;
use sluice_sql_tests::{psql, psql_command, SluiceServer};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The local directory of managed table `name`.
fn table_dir(port: u16, name: &str) -> PathBuf {
    let location = psql(
        port,
        &[&format!(
            "SELECT location FROM sluice.tables WHERE table_name = '{name}'"
        )],
    );
    PathBuf::from(
        location
            .trim()
            .strip_prefix("file://")
            .expect("a local table"),
    )
}

#[test]
fn killed_insert_leaves_old_rows_and_no_stray_files() {
    let data_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let f = files.path().display();
    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("starts");
    let port = server.port();
    psql(
        port,
        &[
            &format!(
                "COPY (SELECT i AS id FROM generate_series(1, 200000) AS t(i)) \
                 TO '{f}/ids/part-0.parquet' (FORMAT parquet)"
            ),
            &format!("CREATE EXTERNAL TABLE ids STORED AS PARQUET LOCATION '{f}/ids/'"),
            "CREATE TABLE target AS SELECT id, md5(CAST(id AS VARCHAR)) AS tag \
             FROM ids WHERE id <= 1000",
        ],
    );
    let dir = table_dir(port, "target");
    let committed = files_under(&dir);
    assert!(!committed.is_empty());

    // 20 million rows of hashes (which Parquet cannot compress away, so
    // files appear while the write runs): the write takes many seconds.
    let mut writer = psql_command(
        port,
        &[
            "INSERT INTO target SELECT a.id, md5(CAST(a.id * 1000 + b.id AS VARCHAR)) \
           FROM ids a CROSS JOIN ids b WHERE b.id <= 100",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Readers see the old rows until the write commits; kill the server
    // once the write has files of its own on disk.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert_eq!(psql(port, &["SELECT count(*) FROM target"]), "1000\n");
        if files_under(&dir).len() > committed.len() {
            break;
        }
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the insert finished before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the insert wrote no files");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server); // kill -9
    let _ = writer.wait();

    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("restarts");
    assert_eq!(
        psql(server.port(), &["SELECT count(*), sum(id) FROM target"]),
        "1000|500500\n"
    );
    assert_eq!(files_under(&dir), committed, "stray files remain");

    // A write that fails leaves nothing behind either, without a restart.
    let output = psql_command(
        server.port(),
        &["INSERT INTO target SELECT id, CAST(1 / (id - id) AS VARCHAR) FROM ids"],
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_under(&dir) != committed {
        assert!(Instant::now() < deadline, "{:?}", files_under(&dir));
        std::thread::sleep(Duration::from_millis(50));
    }

    // The table takes writes again after the restart.
    psql(
        server.port(),
        &["INSERT INTO target SELECT id, 'late' FROM ids WHERE id > 199990"],
    );
    assert_eq!(
        psql(server.port(), &["SELECT count(*) FROM target"]),
        "1010\n"
    );
    server.stop().expect("stops");
}

#[test]
fn managed_tables_live_in_an_object_store_warehouse() {
    let s3 = S3Server::start().expect("moto S3 server starts");
    s3.create_bucket("lake").expect("bucket created");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nwarehouse = \"s3://lake/warehouse\"\n\n\
             [storage.s3]\nendpoint = \"{}\"\nallow-http = true\nregion = \"us-east-1\"\n\
             access-key-id = \"sluice-test\"\nsecret-access-key = \"sluice-test-secret\"\n",
            s3.endpoint
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let data_dir = dir.path().join("data");
    let server = SluiceServer::start_in(Path::new(BINARY), &data_dir, &args).expect("starts");
    let port = server.port();
    psql(
        port,
        &[
            "CREATE TABLE sales AS SELECT i AS id, i % 3 AS k FROM generate_series(1, 300) AS t(i)",
            "INSERT INTO sales SELECT id + 1000, k FROM sales WHERE k = 0",
            // Files under the warehouse that no table lists, as a killed
            // write leaves them.
            "COPY (SELECT 1 AS x) TO 's3://lake/warehouse/public/orphan-1/part-0.parquet' \
             (FORMAT parquet)",
            "CREATE EXTERNAL TABLE orphan (x BIGINT) STORED AS PARQUET \
             LOCATION 's3://lake/warehouse/public/orphan-1/'",
        ],
    );
    assert_eq!(psql(port, &["SELECT count(*) FROM orphan"]), "1\n");
    let location = psql(
        port,
        &["SELECT location FROM sluice.tables WHERE table_name = 'sales'"],
    );
    assert!(
        location.starts_with("s3://lake/warehouse/public/sales-"),
        "{location}"
    );
    drop(server); // kill -9

    let server = SluiceServer::start_in(Path::new(BINARY), &data_dir, &args).expect("restarts");
    let port = server.port();
    assert_eq!(
        psql(port, &["SELECT count(*), sum(id) FROM sales"]),
        "400|160300\n"
    );
    // Swept at the start.
    assert_eq!(psql(port, &["SELECT count(*) FROM orphan"]), "0\n");
    psql(port, &["TRUNCATE sales"]);
    assert_eq!(psql(port, &["SELECT count(*) FROM sales"]), "0\n");
    server.stop().expect("stops");
}
