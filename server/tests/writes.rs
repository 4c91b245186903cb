//! Writes to managed tables are all-or-nothing: readers during a large
//! `INSERT INTO … SELECT` see the old rows, and a server killed mid-write
//! comes back with exactly the old rows and no stray files, in a local
//! warehouse and in one in object storage (moto's S3 server). Writes run a
//! writer in every task of their last stage and still commit as one.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
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

/// Kills `server` (`kill -9`) once the write `writer` runs has put files of
/// its own under `dir` (which held `committed` files), checking meanwhile
/// that `query` still answers `expected`.
fn kill_once_writing(
    server: SluiceServer,
    mut writer: std::process::Child,
    dir: &Path,
    committed: usize,
    query: &str,
    expected: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert_eq!(psql(server.port(), &[query]), expected);
        if files_under(dir).len() > committed {
            break;
        }
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the write finished before it could be interrupted"
        );
        assert!(Instant::now() < deadline, "the write made no files");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server); // kill -9
    let _ = writer.wait();
}

/// 20 million rows of hashes (which Parquet cannot compress away, so files
/// appear while the write runs) from table `ids`: a write of them takes many
/// seconds.
const LARGE_ROWS: &str = "SELECT a.id, md5(CAST(a.id * 1000 + b.id AS VARCHAR)) AS tag \
     FROM ids a CROSS JOIN ids b WHERE b.id <= 100";

/// Statements creating table `ids` (1..=200000) over Parquet in `files`.
fn ids_table(files: &Path) -> [String; 2] {
    let f = files.display();
    [
        format!(
            "COPY (SELECT i AS id FROM generate_series(1, 200000) AS t(i)) \
             TO '{f}/ids/part-0.parquet' (FORMAT parquet)"
        ),
        format!("CREATE EXTERNAL TABLE ids STORED AS PARQUET LOCATION '{f}/ids/'"),
    ]
}

#[test]
fn killed_insert_leaves_old_rows_and_no_stray_files() {
    let data_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("starts");
    let port = server.port();
    let [copy_ids, create_ids] = ids_table(files.path());
    psql(
        port,
        &[
            &copy_ids,
            &create_ids,
            "CREATE TABLE target AS SELECT id, md5(CAST(id AS VARCHAR)) AS tag \
             FROM ids WHERE id <= 1000",
        ],
    );
    let dir = table_dir(port, "target");
    let committed = files_under(&dir);
    assert!(!committed.is_empty());

    let writer = psql_command(port, &[&format!("INSERT INTO target {LARGE_ROWS}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Readers see the old rows until the write commits.
    kill_once_writing(
        server,
        writer,
        &dir,
        committed.len(),
        "SELECT count(*) FROM target",
        "1000\n",
    );

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

/// A write over the cluster has a writer per partition of its input (here
/// two Parquet file groups), each in its own task: a managed table lists
/// each task's directory, while a directory `COPY` (partitioned too) and an
/// `INSERT` into a table over files publish the tasks' files together.
#[test]
fn writes_run_a_writer_per_task() {
    let data_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let f = files.path().display();
    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("starts");
    let port = server.port();
    let staged = "SET sluice.single_stage_max_bytes = 0";
    psql(
        port,
        &[
            &format!(
                "COPY (SELECT i AS id, i % 10 AS bucket FROM generate_series(1, 100000) AS t(i)) \
                 TO '{f}/numbers/' (FORMAT parquet)"
            ),
            &format!("CREATE EXTERNAL TABLE numbers STORED AS PARQUET LOCATION '{f}/numbers/'"),
            &format!(
                "CREATE EXTERNAL TABLE appended (id BIGINT, bucket BIGINT) \
                 STORED AS PARQUET LOCATION '{f}/appended/'"
            ),
        ],
    );
    let tags = psql(
        port,
        &[
            staged,
            "CREATE TABLE copied AS SELECT * FROM numbers",
            "INSERT INTO appended SELECT * FROM numbers WHERE bucket < 5",
            &format!(
                "COPY (SELECT * FROM numbers) TO '{f}/by_bucket/' \
                 (FORMAT parquet, PARTITION_BY (bucket))"
            ),
        ],
    );
    assert_eq!(tags, "SET\nSELECT 100000\nINSERT 0 50000\nCOPY 100000\n");

    // `<write>/<task>/<file>` under the managed table's directory.
    let dir = table_dir(port, "copied");
    let committed = files_under(&dir);
    let tasks: HashSet<&str> = committed
        .iter()
        .filter_map(|file| file.split('/').nth(1))
        .collect();
    assert!(tasks.len() >= 2, "one writer: {committed:?}");
    // DataFusion names a writer's files `<writer id>_<n>.<ext>`.
    let writers = |files: &[String]| -> HashSet<String> {
        files
            .iter()
            .map(|file| {
                file.rsplit('/')
                    .next()
                    .unwrap()
                    .split('_')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let appended = files_under(&files.path().join("appended"));
    assert!(
        appended.iter().all(|file| !file.contains('/')),
        "{appended:?}"
    );
    assert!(writers(&appended).len() >= 2, "one writer: {appended:?}");
    let by_bucket = files_under(&files.path().join("by_bucket"));
    for bucket in 0..10 {
        let files: Vec<String> = by_bucket
            .iter()
            .filter(|file| file.starts_with(&format!("bucket={bucket}/")))
            .cloned()
            .collect();
        assert!(writers(&files).len() >= 2, "one writer: {by_bucket:?}");
    }
    let check = |port| {
        psql(
            port,
            &[
                &format!(
                    "CREATE EXTERNAL TABLE IF NOT EXISTS by_bucket STORED AS PARQUET \
                     LOCATION '{f}/by_bucket/'"
                ),
                "SELECT count(*), sum(id) FROM copied",
                "SELECT count(*), max(bucket) FROM appended",
                "SELECT count(*), count(DISTINCT bucket) FROM by_bucket",
            ],
        )
    };
    let expected = "CREATE TABLE\n100000|5000050000\n50000|4\n100000|10\n";
    assert_eq!(check(port), expected);

    // The managed table's task directories are its segments: a restart
    // (which sweeps what no table lists) keeps them all.
    server.stop().expect("stops");
    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("restarts");
    assert_eq!(files_under(&dir), committed);
    assert_eq!(check(server.port()), expected);
    server.stop().expect("stops");
}

#[test]
fn killed_copy_leaves_its_directory_unchanged() {
    let data_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let out = files.path().join("out");
    let o = out.display();
    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("starts");
    let port = server.port();
    let [copy_ids, create_ids] = ids_table(files.path());
    psql(
        port,
        &[
            &copy_ids,
            &create_ids,
            &format!("COPY (SELECT id, 'first' AS tag FROM ids WHERE id <= 1000) TO '{o}/' (FORMAT parquet)"),
            &format!("CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION '{o}/'"),
        ],
    );
    let committed = files_under(&out);
    assert_eq!(committed.len(), 1, "{committed:?}");

    let writer = psql_command(
        port,
        &[&format!("COPY ({LARGE_ROWS}) TO '{o}/' (FORMAT parquet)")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Readers of the directory see its old files while the COPY writes.
    kill_once_writing(
        server,
        writer,
        &out,
        committed.len(),
        "SELECT count(*) FROM out",
        "1000\n",
    );

    let server = SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &[]).expect("restarts");
    assert_eq!(
        files_under(&out),
        committed,
        "the killed COPY's files remain"
    );
    assert_eq!(
        files_under(&data_dir.path().join("copies")),
        Vec::<String>::new()
    );
    assert_eq!(psql(server.port(), &["SELECT count(*) FROM out"]), "1000\n");

    // A COPY that fails leaves the directory as it was; one that succeeds
    // adds its files, partitioned ones included.
    let failed = psql_command(
        server.port(),
        &[&format!("COPY (SELECT id, CAST(1 / (id - 150000) AS VARCHAR) AS tag FROM ids) TO '{o}/' (FORMAT parquet)")],
    )
    .output()
    .unwrap();
    assert!(!failed.status.success());
    assert_eq!(files_under(&out), committed);
    psql(
        server.port(),
        &[
            &format!("COPY (SELECT id, 'second' AS tag FROM ids WHERE id <= 10) TO '{o}/' (FORMAT parquet)"),
            &format!("COPY (SELECT id, tag FROM out) TO '{o}/by_tag/' (FORMAT parquet, PARTITION_BY (tag))"),
        ],
    );
    assert_eq!(
        psql(
            server.port(),
            &["SELECT tag, count(*) FROM out GROUP BY tag ORDER BY tag"]
        ),
        "first|1000\nsecond|10\n"
    );
    let written = files_under(&out);
    assert!(
        written.iter().all(|f| !f.contains("_sluice-copy-")),
        "{written:?}"
    );
    assert!(
        written.iter().any(|f| f.starts_with("by_tag/tag=second/")),
        "{written:?}"
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
            "[serve]\nwarehouse = \"s3://lake/warehouse\"\n\n{}",
            s3.storage_section()
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
