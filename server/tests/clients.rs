//! Real client programs against a real `sluice serve`: psql and psycopg 3.
//!
//! `.ci/run` installs them (psql from postgresql-client, psycopg into a venv
//! whose interpreter it names in `SLUICE_PYTHON`). A missing client fails the
//! test: it never passes without running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_sql_tests::SluiceServer;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

fn psql(port: u16, args: &[&str], script: &str) -> Output {
    let mut child = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "sluice",
            "-d",
            "sluice",
            "-X",
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql is installed (apt-get install postgresql-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().expect("psql runs")
}

#[test]
fn psql_session_over_parquet() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!(
        r#"\set ON_ERROR_STOP 1
COPY (SELECT i AS id, i % 7 AS k, 'name' || i AS name FROM generate_series(1, 10000) AS t(i)) TO '{d}/a/part-0.parquet' (FORMAT parquet);
COPY (SELECT i AS id, i % 7 AS k, 'name' || i AS name FROM generate_series(10001, 20000) AS t(i)) TO '{d}/a/part-1.parquet' (FORMAT parquet);
COPY (SELECT i AS k, 'cat' || i AS label FROM generate_series(0, 6) AS t(i)) TO '{d}/b/part-0.parquet' (FORMAT parquet);
CREATE EXTERNAL TABLE a STORED AS PARQUET LOCATION '{d}/a/';
CREATE EXTERNAL TABLE b STORED AS PARQUET LOCATION '{d}/b/';
\echo @@join
SELECT b.label, count(*), sum(a.id) FROM a JOIN b ON a.k = b.k GROUP BY b.label ORDER BY 1;
\echo @@explain
EXPLAIN SELECT b.label, count(*) FROM a JOIN b ON a.k = b.k GROUP BY b.label;
\echo @@executors
SELECT count(*) FROM sluice.executors WHERE tasks_completed > 0;
\echo @@dt
\dt
\echo @@d
\d a
"#
    );
    let output = psql(server.port(), &["-A", "-F", "|"], &script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql failed:\n{stdout}\n{stderr}");

    let section = |name: &str| {
        let start = stdout.find(&format!("@@{name}\n")).expect(name) + name.len() + 3;
        let rest = &stdout[start..];
        rest[..rest.find("\n@@").unwrap_or(rest.len())].to_string()
    };
    // sum of ids 1..=20000 with id % 7 == k, counted independently here.
    let mut expected = String::from("label|count|sum\n");
    for k in 0..7_i64 {
        let ids: Vec<i64> = (1..=20000).filter(|i| i % 7 == k).collect();
        expected.push_str(&format!(
            "cat{k}|{}|{}\n",
            ids.len(),
            ids.iter().sum::<i64>()
        ));
    }
    expected.push_str("(7 rows)");
    assert_eq!(section("join").trim(), expected);
    let explain = section("explain");
    assert!(explain.contains("distributed_plan"), "{explain}");
    assert!(explain.matches("Stage[stage_id=").count() >= 2, "{explain}");
    assert!(explain.contains("ShuffleWriterExec"), "{explain}");
    assert_eq!(section("executors").trim(), "count\n2\n(1 row)");
    let dt = section("dt");
    assert!(
        dt.contains("public|a|table") && dt.contains("public|b|table"),
        "{dt}"
    );
    let d = section("d");
    assert!(d.contains("id|bigint") && d.contains("name|text"), "{d}");

    // Without ON_ERROR_STOP a bad statement reports its SQLSTATE and the
    // session goes on; with it, psql stops and exits non-zero.
    let output = psql(
        server.port(),
        &["-A", "-t"],
        "\\set VERBOSITY verbose\nSELECT * FROM missing;\nSELECT 40 + 2;\n",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("42P01"), "{stderr}");
    assert_eq!(stdout.trim(), "42");
    let output = psql(
        server.port(),
        &["-A", "-t", "-v", "ON_ERROR_STOP=1"],
        "SELECT 1/0;\nSELECT 'not reached';\n",
    );
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("not reached"));
    server.stop().expect("stops");
}

fn python() -> PathBuf {
    std::env::var_os("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql-tests/clients")
}

/// Runs a client program (`program` with `args`, then the server's port and
/// a scratch directory) against a fresh server, and checks it printed
/// `<name>: ok`.
fn run_client(program: &Path, args: &[PathBuf], name: &str) {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(program)
        .args(args)
        .arg(server.port().to_string())
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{} runs (.ci/run installs it): {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(&format!("{name}: ok")), "{stdout}");
    server.stop().expect("stops");
}

/// Runs `sql-tests/clients/<script>` with the venv's Python.
fn run_python_client(script: &str, name: &str) {
    run_client(&python(), &[clients_dir().join(script)], name);
}

#[test]
fn psycopg3_binds_parameters_and_reads_typed_values() {
    run_python_client("psycopg_types.py", "psycopg");
}

#[test]
fn sqlalchemy_inspects_the_catalog_and_pandas_reads_100k_rows() {
    run_python_client("sqlalchemy_pandas.py", "sqlalchemy+pandas");
}

#[test]
fn cancel_timeout_and_disconnect_stop_queries_and_their_jobs() {
    run_python_client("cancel.py", "cancel");
}

#[test]
fn pgjdbc_browses_metadata_streams_1m_rows_and_cancels() {
    // Debian's libpostgresql-jdbc-java; SLUICE_JDBC_JAR points elsewhere.
    let jar = std::env::var_os("SLUICE_JDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"));
    run_client(
        Path::new("java"),
        &[
            PathBuf::from("-cp"),
            jar,
            clients_dir().join("JdbcClient.java"),
        ],
        "jdbc",
    );
}

#[test]
fn node_postgres_binds_parameters_and_types_values() {
    // `npm ci` in sql-tests/clients/node installs pg (.ci/run does).
    run_client(
        Path::new("node"),
        &[clients_dir().join("node/node_pg.js")],
        "node-postgres",
    );
}
