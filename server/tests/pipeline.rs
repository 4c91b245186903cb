//! An ETL pipeline end to end: raw CSV -> cleaned Parquet partitioned by
//! date -> an aggregate table, run by `sluice run` and by a scheduled job;
//! the job history (scheduled, retried, failed, manual and missed runs)
//! survives a restart.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_sql_tests::{psql, psql_command, SluiceServer};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// The pipeline: one day of raw sales cleaned into its date partition (a
/// rerun replaces it), then the totals of every day rebuilt.
const DAILY_SQL: &str = "\
CREATE EXTERNAL TABLE IF NOT EXISTS raw_sales (day DATE, region VARCHAR, amount DOUBLE)
  STORED AS CSV LOCATION '${raw}' OPTIONS ('format.has_header' 'true');

-- Drop rows without an amount or with a negative one; trim region names.
COPY (SELECT upper(trim(region)) AS region, amount FROM raw_sales
      WHERE day = DATE '${run_date}' AND amount IS NOT NULL AND amount >= 0)
  TO '${clean}/day=${run_date}/part-0.parquet' (FORMAT parquet);

CREATE EXTERNAL TABLE IF NOT EXISTS clean_sales (region VARCHAR, amount DOUBLE, day DATE)
  STORED AS PARQUET PARTITIONED BY (day) LOCATION '${clean}/';

CREATE TABLE IF NOT EXISTS daily_totals (day DATE, region VARCHAR, total DOUBLE, sales BIGINT);

INSERT OVERWRITE daily_totals
  SELECT day, region, sum(amount), count(*) FROM clean_sales GROUP BY day, region;
";

const RAW_CSV: &str = "\
day,region,amount
2026-11-01, eu ,10.5
2026-11-01,EU,4.5
2026-11-01,us,7
2026-11-01,us,
2026-11-01,us,-3
2026-11-02,eu,1
2026-11-02,apac,2.25
";

/// Writes the raw CSV and the script into `dir`; returns the script.
fn project(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("raw")).unwrap();
    std::fs::write(dir.join("raw/sales.csv"), RAW_CSV).unwrap();
    std::fs::create_dir_all(dir.join("etl")).unwrap();
    let script = dir.join("etl/daily.sql");
    std::fs::write(&script, DAILY_SQL).unwrap();
    script
}

const TOTALS: &str = "SELECT day, region, CAST(total AS DECIMAL(10, 2)), sales \
                      FROM daily_totals ORDER BY day, region";

#[test]
fn sluice_run_builds_the_pipeline_day_by_day() {
    let dir = tempfile::tempdir().unwrap();
    let script = project(dir.path());
    let d = dir.path().display();
    let server = SluiceServer::start_with_args(Path::new(BINARY), &[]).expect("starts");
    for day in ["2026-11-01", "2026-11-02", "2026-11-01"] {
        let output = Command::new(BINARY)
            .arg("run")
            .arg(&script)
            .args(["--port", &server.port().to_string()])
            .args(["--var", &format!("run_date={day}")])
            .args(["--var", &format!("raw={d}/raw/sales.csv")])
            .args(["--var", &format!("clean={d}/clean")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("ran 5 statements"), "{stdout}");
    }
    // Rerunning a day replaced its partition instead of adding to it.
    assert_eq!(
        psql(server.port(), &[TOTALS]),
        "2026-11-01|EU|15.00|2\n2026-11-01|US|7.00|1\n2026-11-02|APAC|2.25|1\n2026-11-02|EU|1.00|1\n"
    );
    let mut partitions: Vec<_> = std::fs::read_dir(dir.path().join("clean"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    partitions.sort();
    assert_eq!(partitions, ["day=2026-11-01", "day=2026-11-02"]);
    server.stop().expect("stops");
}

/// Waits until `query` prints `expected`.
fn wait_for(port: u16, query: &str, expected: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let output = psql(port, &[query]);
        if output == expected {
            return output;
        }
        assert!(Instant::now() < deadline, "{what}: {query} gave {output:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn scheduled_jobs_run_retry_and_keep_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("etl/broken.sql"),
        "SELECT 1;\nINSERT INTO no_such_table VALUES (1);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("etl/slow.sql"),
        "SELECT count(*) FROM generate_series(1, 2000000000);\n",
    )
    .unwrap();
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(
        &jobs,
        format!(
            r#"
[[job]]
name = "daily"
script = "etl/daily.sql"
schedule = "*/2 * * * * *"
vars = {{ raw = "{d}/raw/sales.csv", clean = "{d}/clean" }}
retries = 1
timeout = "60s"
allow_overlap = false

[[job]]
name = "broken"
script = "etl/broken.sql"
schedule = "0 0 1 1 *"
retries = 2
retry_delay = "200ms"

[[job]]
name = "slow"
script = "etl/slow.sql"
schedule = "0 0 1 1 *"
timeout = "1s"
"#
        ),
    )
    .unwrap();
    let jobs_flag = jobs.display().to_string();
    let server =
        SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &["--jobs", &jobs_flag])
            .expect("starts");
    let port = server.port();
    wait_for(
        port,
        "SELECT count(*) > 0 FROM sluice.job_runs \
         WHERE job = 'daily' AND trigger = 'schedule' AND state = 'finished'",
        "t\n",
        "a scheduled run of daily finished",
    );
    // The scheduled run's ${run_date} is today: no sales that day, so it
    // wrote an empty partition and rebuilt the totals (rows_written counts
    // both).
    assert_eq!(
        psql(
            port,
            &[
                "SELECT bool_and(rows_written IS NOT NULL AND error IS NULL AND attempt = 1) \
               FROM sluice.job_runs WHERE job = 'daily' AND state = 'finished'"
            ]
        ),
        "t\n"
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(dir.path().join(format!("clean/day={today}")).is_dir());

    // A job triggered now: its failures are retried, then reported.
    let output = psql_command(port, &["CALL sluice.run_job('broken')"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("job 'broken' failed"), "{stderr}");
    assert!(stderr.contains("no_such_table"), "{stderr}");
    assert_eq!(
        psql(
            port,
            &[
                "SELECT attempt, state, trigger, error LIKE '%broken.sql:2:%42P01%' \
               FROM sluice.job_runs WHERE job = 'broken' ORDER BY attempt"
            ]
        ),
        "1|failed|manual|t\n2|failed|manual|t\n3|failed|manual|t\n"
    );
    // An attempt over its timeout fails (and its query is cancelled).
    let output = psql_command(port, &["CALL sluice.run_job('slow')"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timed out after 1s"), "{stderr}");
    assert_eq!(
        psql(
            port,
            &["SELECT state, attempt FROM sluice.job_runs WHERE job = 'slow'"]
        ),
        "failed|1\n"
    );
    let output = psql_command(port, &["CALL sluice.run_job('nope')"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("no job named 'nope'"));
    let before = psql(port, &["SELECT count(*) FROM sluice.job_runs"]);
    drop(server); // kill -9

    // Down for longer than the schedule's period: the missed run is started
    // once at the restart, and the history is still there.
    std::thread::sleep(Duration::from_secs(3));
    let server =
        SluiceServer::start_in(Path::new(BINARY), data_dir.path(), &["--jobs", &jobs_flag])
            .expect("restarts");
    let port = server.port();
    let after = psql(port, &["SELECT count(*) FROM sluice.job_runs"]);
    assert!(
        after.trim().parse::<u64>().unwrap() >= before.trim().parse::<u64>().unwrap(),
        "{before} -> {after}"
    );
    wait_for(
        port,
        "SELECT count(*) FROM sluice.job_runs WHERE job = 'daily' AND trigger = 'missed' \
         AND state = 'finished'",
        "1\n",
        "the missed run",
    );
    assert_eq!(
        psql(
            port,
            &["SELECT count(*) FROM sluice.job_runs WHERE job = 'broken'"]
        ),
        "3\n"
    );
    server.stop().expect("stops");
}
