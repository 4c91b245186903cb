//! `sluice run FILE.sql` as a data engineer runs it: against a running
//! `sluice serve` and with `--embedded`, with `--var` values, stopping at the
//! first failing statement with its file, line and SQLSTATE.

use std::path::Path;
use std::process::{Command, Output};

use sluice_sql_tests::{psql, SluiceServer};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

fn sluice_run(script: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("run")
        .arg(script)
        .args(args)
        .output()
        .expect("sluice runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The one value `sql` returns, read with psql.
fn scalar(port: u16, sql: &str) -> String {
    psql(port, &[sql]).trim().to_string()
}

const PIPELINE: &str = "\
-- Sales for one region and day.
COPY (SELECT i AS id, CASE WHEN i % 2 = 0 THEN 'EU' ELSE 'US' END AS region, i * 10 AS amount
      FROM generate_series(1, 1000) AS t(i))
  TO '${dir}/sales/part-0.parquet' (FORMAT parquet);

CREATE EXTERNAL TABLE sales_${suffix} STORED AS PARQUET LOCATION '${dir}/sales/';

/* a comment; with a semicolon */
SELECT region, count(*), sum(amount) FROM sales_${suffix}
WHERE region = '${region}' GROUP BY region;
";

#[test]
fn a_script_runs_against_a_server_with_variables() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pipeline.sql");
    std::fs::write(&script, PIPELINE).unwrap();
    let data = dir.path().display().to_string();
    let port = server.port().to_string();
    let output = sluice_run(
        &script,
        &[
            "--port",
            &port,
            "--var",
            &format!("dir={data}"),
            "--var",
            "suffix=daily",
            "--var",
            "region=EU",
        ],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    let name = script.display().to_string();
    assert!(
        stdout.contains(&format!("[1/3] {name}:2  COPY (SELECT")),
        "{stdout}"
    );
    assert!(stdout.contains("      1000 rows in "), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "[2/3] {name}:6  CREATE EXTERNAL TABLE sales_daily"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("      done in "), "{stdout}");
    assert!(
        stdout.contains(&format!("[3/3] {name}:9  SELECT region")),
        "{stdout}"
    );
    assert!(stdout.contains("      1 rows in "), "{stdout}");
    assert!(
        stdout.contains(&format!("ran 3 statements from {name} in ")),
        "{stdout}"
    );
    // The table the script made is the server's.
    assert_eq!(
        scalar(
            server.port(),
            "SELECT sum(amount) FROM sales_daily WHERE region = 'EU'"
        ),
        "2505000"
    );
    server.stop().expect("stops");
}

#[test]
fn the_first_failing_statement_stops_the_script() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("broken.sql");
    std::fs::write(
        &script,
        "SELECT 1;\n\nSELECT amount\n  FROM no_such_table;\nCREATE VIEW after_failure AS SELECT 1;\n",
    )
    .unwrap();
    let port = server.port().to_string();
    let output = sluice_run(&script, &["--port", &port]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let name = script.display().to_string();
    assert!(
        stderr.contains(&format!("{name}:3: ERROR 42P01: ")),
        "{stderr}"
    );
    assert!(stderr.contains("no_such_table"), "{stderr}");
    assert!(!stdout.contains("[3/3]"), "{stdout}");
    assert_eq!(
        scalar(
            server.port(),
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'after_failure'"
        ),
        "0"
    );
    server.stop().expect("stops");
}

#[test]
fn a_missing_variable_stops_the_script_before_it_starts() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("vars.sql");
    std::fs::write(
        &script,
        "CREATE VIEW early AS SELECT 1 AS one;\nSELECT * FROM t WHERE day = '${run_date}';\n",
    )
    .unwrap();
    let port = server.port().to_string();
    let output = sluice_run(&script, &["--port", &port]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("${run_date}"), "{stderr}");
    assert!(text(&output.stdout).is_empty());
    assert_eq!(
        scalar(
            server.port(),
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'early'"
        ),
        "0"
    );
    server.stop().expect("stops");
}

#[test]
fn a_script_runs_on_an_embedded_server() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pipeline.sql");
    std::fs::write(&script, PIPELINE).unwrap();
    let data = dir.path().display().to_string();
    let output = sluice_run(
        &script,
        &[
            "--embedded",
            "--var",
            &format!("dir={data}"),
            "--var",
            "suffix=x",
            "--var",
            "region=US",
        ],
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("ran 3 statements"), "{stdout}");
    assert!(dir.path().join("sales/part-0.parquet").is_file());
}

#[test]
fn dry_run_plans_every_statement_and_runs_none() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pipeline.sql");
    std::fs::write(&script, PIPELINE).unwrap();
    let data = dir.path().display().to_string();
    let port = server.port().to_string();
    let vars = [
        "--var",
        &format!("dir={data}"),
        "--var",
        "suffix=dry",
        "--var",
        "region=EU",
    ];
    let output = sluice_run(
        &script,
        &[&["--dry-run", "--port", &port][..], &vars].concat(),
    );
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("planned 3 statements"), "{stdout}");
    // The SELECT reads the table the script creates: not checkable yet.
    assert!(stdout.contains("not checked"), "{stdout}");
    // Nothing ran: no file, no table.
    assert!(!dir.path().join("sales").exists());
    assert_eq!(
        scalar(
            server.port(),
            "SELECT count(*) FROM sluice.tables WHERE table_name = 'sales_dry'"
        ),
        "0"
    );

    // A statement that cannot plan fails the dry run with its line.
    std::fs::write(&script, "SELECT 1;\n\nSELECT * FROM missing_table;\n").unwrap();
    let output = sluice_run(&script, &["--dry-run", "--port", &port]);
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("pipeline.sql:3: ERROR 42P01"), "{stderr}");
}

/// A long statement's stage progress (the server's `sluice.progress`
/// notices) is shown while it runs: as plain lines on stderr when it is not
/// a terminal. The join counts 5e9 rows, several times what fits in the
/// statement timeout, so the statement is still running when it fires.
#[test]
fn a_long_statement_shows_its_stage_progress() {
    let server = SluiceServer::start(Path::new(BINARY), 2).expect("starts");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = dir.path().join("long.sql");
    std::fs::write(
        &script,
        format!(
            "COPY (SELECT i AS id, i % 2 AS bucket FROM generate_series(1, 100000) AS t(i))\n\
             TO '{d}/numbers/' (FORMAT parquet);\n\
             CREATE EXTERNAL TABLE numbers STORED AS PARQUET LOCATION '{d}/numbers/';\n\
             SET sluice.single_stage_max_bytes = 0;\n\
             SET statement_timeout = '9s';\n\
             SELECT count(*) FROM numbers a JOIN numbers b ON a.bucket = b.bucket;\n"
        ),
    )
    .unwrap();
    let port = server.port().to_string();
    let output = sluice_run(&script, &["--port", &port]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let name = script.display().to_string();
    let progress = format!("[5/5] {name}:6: stage ");
    let line = stderr
        .lines()
        .find(|line| line.starts_with(&progress))
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    assert!(line.contains(" of 3 running; stages done "), "{line}");
    assert!(stderr.contains("57014"), "{stderr}");
    server.stop().expect("stops");
}
