//! Real client programs against a real `sluice serve`: psql, psycopg 3,
//! SQLAlchemy + pandas, pgjdbc and node-postgres.
//!
//! `.ci/run` installs them (psql from postgresql-client, pgjdbc from
//! libpostgresql-jdbc-java, the Python ones into a venv whose interpreter it
//! names in `SLUICE_PYTHON`, pg with npm). A missing client fails the test: it
//! never passes without running.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

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
SET sluice.frontend_max_bytes = 4194304;
\echo @@explain_frontend
EXPLAIN SELECT b.label, count(*) FROM a JOIN b ON a.k = b.k GROUP BY b.label;
SET sluice.frontend_max_bytes = 0;
\echo @@explain_single
EXPLAIN SELECT b.label, count(*) FROM a JOIN b ON a.k = b.k GROUP BY b.label;
\echo @@explain_scan
EXPLAIN SELECT * FROM a WHERE id > 5;
\echo @@explain_semi
EXPLAIN SELECT b.label, a.id FROM b JOIN a ON a.k = b.k WHERE a.id IN (SELECT id FROM a GROUP BY id HAVING count(*) > 1);
\echo @@explain_key_filter
EXPLAIN SELECT b.label, a.id FROM a, b WHERE a.k = b.k AND b.label = 'cat3' AND a.id > (SELECT avg(a2.id) FROM a AS a2 WHERE a2.k = b.k);
\echo @@explain_volatile_keys
EXPLAIN SELECT b.label, a.id FROM a, b WHERE a.k = b.k AND b.k < random() * 7 AND a.id > (SELECT avg(a2.id) FROM a AS a2 WHERE a2.k = b.k);
\echo @@explain_no_key_filter
EXPLAIN WITH t AS (SELECT k, count(*) AS n FROM a GROUP BY k) SELECT b.label, t.n FROM b, t WHERE t.k = b.k AND t.n = (SELECT max(n) FROM t);
SET sluice.single_stage_collect_bytes = 0;
\echo @@explain_partitioned
EXPLAIN SELECT b.label, count(*) FROM a JOIN b ON a.k = b.k GROUP BY b.label;
RESET sluice.single_stage_collect_bytes;
SET sluice.single_stage_max_bytes = 0;
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
    // Small enough for the frontend by default: no job, no stage.
    let explain = section("explain_frontend");
    assert!(
        explain.contains("physical_plan|FrontendComputeExec: input_bytes="),
        "{explain}"
    );
    assert!(!explain.contains("Stage[stage_id="), "{explain}");
    assert!(!explain.contains("distributed_plan"), "{explain}");
    let explain = section("explain_single");
    assert_eq!(explain.matches("Stage[stage_id=").count(), 1, "{explain}");
    assert!(explain.contains("SingleStageExec"), "{explain}");
    // Planned as single-node DataFusion plans it: the join's build side
    // narrows the probe side's scan through a dynamic filter.
    let (_, distributed) = explain
        .split_once("distributed_plan")
        .unwrap_or_else(|| panic!("no distributed plan: {explain}"));
    assert!(distributed.contains("DynamicFilter"), "{explain}");
    // The small side is hashed once for both partitions ...
    assert!(distributed.contains("mode=CollectLeft"), "{explain}");
    // ... unless `sluice.single_stage_collect_bytes` is below its size.
    let explain = section("explain_partitioned");
    assert!(explain.contains("SingleStageExec"), "{explain}");
    assert!(explain.contains("mode=Partitioned"), "{explain}");
    // A scan without exchanges is one stage of a task per file already.
    let explain = section("explain_scan");
    assert_eq!(explain.matches("Stage[stage_id=").count(), 1, "{explain}");
    assert!(!explain.contains("SingleStageExec"), "{explain}");
    assert!(explain.contains("partitions=2"), "{explain}");
    // The IN subquery filters `a` before the join, not the join's rows.
    let explain = section("explain_semi");
    let position = |needle: &str| {
        explain
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle}: {explain}"))
    };
    assert!(
        position("Inner Join") < position("LeftSemi Join"),
        "{explain}"
    );
    // The subquery averages only the keys of the filtered `b`: its aggregate
    // reads `a` through a semi join with them.
    let explain = section("explain_key_filter");
    let (logical, _) = explain
        .split_once("physical_plan")
        .unwrap_or_else(|| panic!("no physical plan: {explain}"));
    let (_, below_aggregate) = logical
        .split_once("Aggregate: groupBy=[[a2.k]]")
        .unwrap_or_else(|| panic!("no grouped subquery: {explain}"));
    assert!(
        below_aggregate.contains("LeftSemi Join: a2.k = __sluice_group_keys"),
        "{explain}"
    );
    // A filter that may keep other rows when read again gives no key set.
    let explain = section("explain_volatile_keys");
    assert!(explain.contains("Aggregate: groupBy=[[a2.k]]"), "{explain}");
    assert!(!explain.contains("__sluice_group_keys"), "{explain}");
    // Against all of `b` the groups stay as they are (TPC-H q15's shape,
    // whose cross join leaves a `true` filter on the scan).
    let explain = section("explain_no_key_filter");
    assert!(explain.contains("Aggregate: groupBy=[[a.k]]"), "{explain}");
    assert!(!explain.contains("__sluice_group_keys"), "{explain}");
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

    // Errors read as PostgreSQL words them; DataFusion's detail is a DETAIL
    // or HINT line.
    let output = psql(
        server.port(),
        &["-A", "-t"],
        "SELECT * FROM nope;\nSELECT x FROM a;\nSELECT 1/0;\nselec 1;\n",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("ERROR:"))
        .collect();
    assert_eq!(
        errors,
        [
            "ERROR:  relation \"nope\" does not exist",
            "ERROR:  column \"x\" does not exist",
            "ERROR:  division by zero",
            "ERROR:  syntax error at or near \"selec\"",
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT:  The columns in scope are a.id,"),
        "{stderr}"
    );
    assert!(
        stderr.contains("DETAIL:  Expected: an SQL statement, found: selec"),
        "{stderr}"
    );
    server.stop().expect("stops");
}

/// psql's `\copy … from` of a CSV file: every row, a header skipped; a file
/// with a bad value on its last line loads nothing and names the line.
#[test]
fn psql_copy_from_loads_csv_files_all_or_nothing() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    let bad = dir.path().join("bad.csv");
    let mut rows = String::from("id,name,day\n");
    for i in 1..=5000 {
        rows.push_str(&format!(
            "{i},\"name {i}, quoted\",2024-01-{:02}\n",
            i % 28 + 1
        ));
    }
    std::fs::write(&good, &rows).unwrap();
    std::fs::write(&bad, "1,a,2024-01-01\n2,b,2024-01-02\n3,c,2024-13-45\n").unwrap();
    let script = format!(
        "\\set ON_ERROR_STOP 1\n\
         CREATE TABLE loaded (id bigint, name varchar, day date);\n\
         \\copy loaded from '{}' csv header\n\
         SELECT count(*), sum(id), min(name), max(day) FROM loaded;\n",
        good.display()
    );
    let output = psql(server.port(), &["-A", "-t"], &script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("COPY 5000"), "{stdout}");
    assert!(
        stdout.contains("5000|12502500|name 1, quoted|2024-01-28"),
        "{stdout}"
    );

    let script = format!(
        "\\copy loaded from '{}' csv\nSELECT count(*) FROM loaded;\n",
        bad.display()
    );
    let output = psql(server.port(), &["-A", "-t"], &script);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid input syntax for type date: \"2024-13-45\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("COPY loaded, line 3, column day"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "5000");

    // An external table over a directory takes the rows as new files, all
    // or nothing: a failed COPY leaves no file behind.
    let external = dir.path().join("external");
    std::fs::create_dir(&external).unwrap();
    let script = format!(
        "\\set ON_ERROR_STOP 1\n\
         CREATE EXTERNAL TABLE outside (id bigint, name varchar, day date) \
         STORED AS PARQUET LOCATION '{}/';\n\
         \\copy outside from '{}' csv header\n\
         SELECT count(*), sum(id), max(day) FROM outside;\n",
        external.display(),
        good.display()
    );
    let output = psql(server.port(), &["-A", "-t"], &script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("5000|12502500|2024-01-28"), "{stdout}");
    let files = || std::fs::read_dir(&external).unwrap().count();
    assert_eq!(files(), 1);
    let script = format!(
        "\\copy outside from '{}' csv\nSELECT count(*) FROM outside;\n",
        bad.display()
    );
    let output = psql(server.port(), &["-A", "-t"], &script);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("COPY outside, line 3, column day"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "5000");
    assert_eq!(
        files(),
        1,
        "the failed COPY left files in {}",
        external.display()
    );
    server.stop().expect("stops");
}

#[test]
fn psql_meta_commands_read_the_real_catalog() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let out = dir.path().join("out.csv");
    let script = format!(
        r#"\set ON_ERROR_STOP 1
COPY (SELECT i AS id, 'n' || i AS name, i % 2 = 0 AS even FROM generate_series(1, 5) AS t(i)) TO '{d}/m/part-0.parquet' (FORMAT parquet);
CREATE EXTERNAL TABLE meta_t STORED AS PARQUET LOCATION '{d}/m/';
\echo @@l
\l
\echo @@dn
\dn
\echo @@dt
\dt public.*
\echo @@df
\df
\echo @@x
\x on
SELECT id, name FROM meta_t WHERE id = 2;
\x off
\echo @@timing
\timing on
SELECT count(*) FROM meta_t;
\timing off
\echo @@stdout
COPY (SELECT id, name, even FROM meta_t WHERE id <= 2 ORDER BY id) TO STDOUT (FORMAT csv, HEADER);
\echo @@copy
\copy (SELECT id, name FROM meta_t ORDER BY id) TO '{out}' (FORMAT csv, HEADER)
\echo @@end
"#,
        out = out.display()
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
    assert!(
        section("l").lines().any(|l| l.starts_with("sluice|")),
        "{stdout}"
    );
    let schemas = section("dn");
    assert!(
        schemas.contains("public|") && schemas.contains("sluice|"),
        "{schemas}"
    );
    assert!(section("dt").contains("public|meta_t|table"), "{stdout}");
    // No user-defined functions: the list is empty, with its header.
    assert!(section("df").contains("(0 rows)"), "{stdout}");
    let expanded = section("x");
    assert!(
        expanded.contains("id|2") && expanded.contains("name|n2"),
        "{expanded}"
    );
    let timing = section("timing");
    assert!(
        timing.contains("count\n5") && timing.contains("Time: "),
        "{timing}"
    );
    assert_eq!(section("stdout").trim(), "id,name,even\n1,n1,f\n2,n2,t");
    assert_eq!(section("copy").trim(), "COPY 5");
    let copied = std::fs::read_to_string(&out).expect("\\copy wrote the file");
    assert_eq!(copied.lines().count(), 6, "{copied}");
    assert!(copied.starts_with("id,name\n1,n1\n"), "{copied}");
    server.stop().expect("stops");
}

#[test]
fn psql_ctrl_c_cancels_the_running_query() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let setup = format!(
        "\\set ON_ERROR_STOP 1\n\
         COPY (SELECT i AS id, i % 5 AS k FROM generate_series(1, 100000) AS t(i)) TO '{d}/c/part-0.parquet' (FORMAT parquet);\n"
    );
    assert!(psql(server.port(), &[], &setup).status.success());
    // psql keeps the session in one process: the table must exist in it, so
    // the CREATE and the long join go in one script.
    let child = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["-U", "sluice", "-d", "sluice", "-X", "-c"])
        .arg(format!(
            "CREATE EXTERNAL TABLE ctrl_c STORED AS PARQUET LOCATION '{d}/c/'"
        ))
        .args([
            "-c",
            "SELECT count(*) FROM ctrl_c a JOIN ctrl_c b ON a.k = b.k",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql runs");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let interrupted = std::time::Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let output = child.wait_with_output().expect("psql ends");
    let waited = interrupted.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(
        waited < std::time::Duration::from_secs(2),
        "took {waited:?}"
    );
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
fn psycopg3_named_cursors_fetch_in_chunks() {
    run_python_client("psycopg_named_cursor.py", "psycopg named cursor");
}

#[test]
fn psycopg3_copy_reads_binary_and_text_rows() {
    run_python_client("psycopg_copy.py", "psycopg copy");
}

#[test]
fn psycopg3_copy_from_stdin_loads_text_and_csv_all_or_nothing() {
    run_python_client("psycopg_copy_from.py", "psycopg copy from");
}

#[test]
fn psycopg3_prepared_inserts_match_planned_ones() {
    run_python_client("psycopg_insert_values.py", "psycopg insert values");
}

#[test]
fn pandas_to_sql_writes_in_every_mode() {
    run_python_client("pandas_to_sql.py", "pandas to_sql");
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
