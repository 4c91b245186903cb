//! A cluster of separate processes, as it runs on several hosts: one
//! `sluice scheduler`, three `sluice executor`s and one `sluice serve
//! --scheduler` frontend on loopback, with TPC-H data in a real S3-compatible
//! server (moto). Only the frontend is given the S3 settings: the scheduler
//! and executors get them with each job.
//!
//! Drives what an operator sees: a join + aggregate over S3 is correct,
//! `sluice.executors` lists the executors with their tasks, `kill -9` of an
//! executor mid-query (the stage outputs held in the executors' memory, no
//! shuffle file written) still gives the right answer and the dead executor
//! drops out within 10 s, an executor started later gets work, and a killed
//! scheduler makes queries fail fast with SQLSTATE 08006 until it is back.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_sql_tests::process::{start_executor, start_scheduler, ChildProcess, S3Server};
use sluice_sql_tests::SluiceServer;
use tokio_postgres::Client;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// Rows per nation of a join + aggregate over customer, orders and nation.
const JOIN_AGGREGATE: &str =
    "SELECT n_name, count(*) AS orders, CAST(sum(o_totalprice) AS VARCHAR) \
     FROM orders JOIN customer ON o_custkey = c_custkey JOIN nation ON c_nationkey = n_nationkey \
     GROUP BY n_name ORDER BY n_name";

/// A self-join that runs for seconds in a debug build (36 million joined rows).
const LONG_JOIN: &str = "SELECT count(*), CAST(sum(a.l_quantity * b.l_discount) AS VARCHAR) \
     FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey";

fn binary() -> &'static Path {
    Path::new(BINARY)
}

/// The number of job directories in `work_dirs` and every file under them.
fn work_dir_contents(work_dirs: &[PathBuf]) -> (usize, Vec<PathBuf>) {
    fn files_under(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut job_dirs = 0;
    let mut files = Vec::new();
    for work_dir in work_dirs {
        for entry in std::fs::read_dir(work_dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                job_dirs += 1;
                files_under(&entry.path(), &mut files);
            }
        }
    }
    (job_dirs, files)
}

/// `sluice tpch gen --sf 0.01` straight into the S3 server.
fn generate_tpch(s3: &S3Server, url: &str) {
    let output = Command::new(BINARY)
        .args([
            "tpch",
            "gen",
            "--sf",
            "0.01",
            "--files-per-table",
            "3",
            "--out",
            url,
        ])
        .envs(s3.env())
        .output()
        .expect("sluice tpch gen runs");
    assert!(
        output.status.success(),
        "tpch gen to {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A config file giving the frontend the S3 server, and the cluster timings.
fn write_config(dir: &Path, s3: &S3Server) -> PathBuf {
    let path = dir.join("sluice.toml");
    std::fs::write(
        &path,
        format!(
            "[cluster]\nheartbeat-interval-seconds = 1\nexecutor-timeout-seconds = 4\n\n\
             [storage.s3]\nendpoint = \"{}\"\nallow-http = true\nregion = \"us-east-1\"\n\
             access-key-id = \"sluice-test\"\nsecret-access-key = \"sluice-test-secret\"\n",
            s3.endpoint
        ),
    )
    .unwrap();
    path
}

/// How long any one query of this test may take (a hang fails the test).
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    tokio::time::timeout(QUERY_TIMEOUT, client.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql}: no answer within {QUERY_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// (executor id, tasks completed) of every live executor.
async fn executors(client: &Client) -> Vec<(String, i64)> {
    rows(
        client,
        "SELECT executor_id, tasks_completed FROM sluice.executors ORDER BY executor_id",
    )
    .await
    .into_iter()
    .map(|row| (row[0].clone(), row[1].parse().unwrap_or(-1)))
    .collect()
}

async fn wait_for_executors(
    client: &Client,
    expected: usize,
    within: Duration,
) -> Vec<(String, i64)> {
    let deadline = Instant::now() + within;
    loop {
        let live = executors(client).await;
        if live.len() == expected || Instant::now() > deadline {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_over_s3_survive_executor_and_scheduler_loss() {
    let s3 = S3Server::start().expect("moto S3 server starts");
    s3.create_bucket("warehouse").expect("bucket created");
    generate_tpch(&s3, "s3://warehouse/tpch/sf001");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &s3);

    let (scheduler, scheduler_port) =
        start_scheduler(binary(), 0, Some(&config)).expect("scheduler starts");
    let mut workers: Vec<ChildProcess> = (0..3)
        .map(|i| {
            start_executor(
                binary(),
                scheduler_port,
                1,
                &dir.path().join(format!("work-{i}")),
                Some(&config),
            )
            .expect("executor starts")
        })
        .collect();
    let frontend = SluiceServer::start_with_args(
        binary(),
        &[
            "--scheduler",
            &format!("127.0.0.1:{scheduler_port}"),
            "--config",
            config.to_str().unwrap(),
            // Stages across the executors even for this small data set: the
            // executors are separate processes, so a job over the budget is
            // split (the embedded cluster would run it as one stage).
            "--single-stage-max-bytes",
            "1",
        ],
    )
    .expect("frontend starts");
    let client = sluice_sql_tests::connect(frontend.port())
        .await
        .expect("connects");
    assert_eq!(
        wait_for_executors(&client, 3, Duration::from_secs(10))
            .await
            .len(),
        3
    );

    let register = Command::new(BINARY)
        .args(["tpch", "register", "--port", &frontend.port().to_string()])
        .args(["--data", "s3://warehouse/tpch/sf001"])
        .output()
        .expect("tpch register runs");
    assert!(
        register.status.success(),
        "{}",
        String::from_utf8_lossy(&register.stderr)
    );

    // Join + aggregate over S3, split into stages over three executors.
    let per_nation = rows(&client, JOIN_AGGREGATE).await;
    assert_eq!(per_nation.len(), 25);
    let total: i64 = per_nation
        .iter()
        .map(|row| row[1].parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 15_000, "every order of SF 0.01 is counted once");
    assert_eq!(per_nation[0][0], "ALGERIA");
    let expected_long = rows(&client, LONG_JOIN).await;
    let busy = executors(&client).await;
    assert_eq!(busy.len(), 3);
    assert!(
        busy.iter().all(|(_, tasks)| *tasks > 0),
        "every executor ran tasks: {busy:?}"
    );

    // Secrets reach the cluster but are never shown.
    let secret = rows(&client, "SHOW storage.s3.aws_secret_access_key").await;
    assert_eq!(secret[0][1], "********");

    // kill -9 of an executor while a multi-stage query runs.
    let query = {
        let port = frontend.port();
        tokio::spawn(async move {
            let client = sluice_sql_tests::connect(port).await.expect("connects");
            let result = rows(&client, LONG_JOIN).await;
            (result, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Its stages' outputs are held in the executors' memory: the job has
    // directories in the work dirs (Ballista removes them to release the
    // outputs) but no shuffle file.
    let work_dirs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("work-{i}")))
        .collect();
    let (job_dirs, files) = work_dir_contents(&work_dirs);
    assert!(job_dirs > 0, "the staged query has job directories");
    assert!(files.is_empty(), "shuffle files written: {files:?}");
    let victim = workers.remove(0);
    let killed_at = Instant::now();
    victim.kill();
    // While the query recovers, the dead executor leaves sluice.executors.
    let live = wait_for_executors(&client, 2, Duration::from_secs(10)).await;
    assert_eq!(
        live.len(),
        2,
        "the dead executor drops out within 10 s of its death"
    );
    let (after_kill, finished_at) = query.await.expect("query task");
    assert!(
        finished_at > killed_at,
        "the query was still running when the executor died"
    );
    assert_eq!(
        after_kill, expected_long,
        "the answer survives the lost executor"
    );

    // An executor that joins a running cluster gets work.
    workers.push(
        start_executor(
            binary(),
            scheduler_port,
            1,
            &dir.path().join("work-late"),
            Some(&config),
        )
        .expect("late executor starts"),
    );
    let before: Vec<String> = live.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        wait_for_executors(&client, 3, Duration::from_secs(10))
            .await
            .len(),
        3
    );
    for _ in 0..4 {
        assert_eq!(rows(&client, JOIN_AGGREGATE).await, per_nation);
    }
    let late = executors(&client)
        .await
        .into_iter()
        .find(|(id, _)| !before.contains(id))
        .expect("the late executor is listed");
    assert!(late.1 > 0, "the late executor ran tasks: {late:?}");

    // Scheduler killed: queries fail fast with a connection SQLSTATE ...
    scheduler.kill();
    let started = Instant::now();
    let error = tokio::time::timeout(QUERY_TIMEOUT, client.simple_query(JOIN_AGGREGATE))
        .await
        .expect("an answer")
        .expect_err("no scheduler, no query");
    assert!(started.elapsed() < Duration::from_secs(10));
    let db_error = error
        .as_db_error()
        .expect("a server error, not a lost connection");
    assert_eq!(db_error.code().code(), "08006", "{}", db_error.message());
    // ... and work again once it is back on the same address, without
    // restarting the frontend (executors re-register on their next heartbeat).
    let (_scheduler, _) =
        start_scheduler(binary(), scheduler_port, Some(&config)).expect("scheduler restarts");
    wait_for_executors(&client, 3, Duration::from_secs(10)).await;
    assert_eq!(rows(&client, JOIN_AGGREGATE).await, per_nation);
    frontend.stop().expect("frontend stops");
}

/// The single-stage choice follows the live task slots: on one executor with
/// one slot every job runs as one stage (its stages could only run one after
/// another), whatever the budget; once a second executor joins, a job over
/// the budget is split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_stage_choice_and_the_stage_partitions_follow_the_live_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (_scheduler, scheduler_port) =
        start_scheduler(binary(), 0, None).expect("scheduler starts");
    let mut workers = vec![start_executor(
        binary(),
        scheduler_port,
        1,
        &dir.path().join("work-0"),
        None,
    )
    .expect("executor starts")];
    let frontend = SluiceServer::start_with_args(
        binary(),
        &[
            "--scheduler",
            &format!("127.0.0.1:{scheduler_port}"),
            "--single-stage-max-bytes",
            "1",
        ],
    )
    .expect("frontend starts");
    let client = sluice_sql_tests::connect(frontend.port())
        .await
        .expect("connects");
    wait_for_executors(&client, 1, Duration::from_secs(10)).await;
    let table = dir.path().join("numbers");
    for part in 0..2 {
        rows(
            &client,
            &format!(
                "COPY (SELECT i * 7919 % 10007 AS k, i % 7 AS g \
                 FROM generate_series(1, 10000) AS t(i)) \
                 TO '{}/part-{part}.parquet' (FORMAT parquet)",
                table.display()
            ),
        )
        .await;
    }
    rows(
        &client,
        &format!(
            "CREATE EXTERNAL TABLE numbers STORED AS PARQUET LOCATION '{}/'",
            table.display()
        ),
    )
    .await;
    let query = "SELECT g, count(*) FROM numbers WHERE k > 10 GROUP BY g ORDER BY g";
    let single_stage = || async {
        rows(&client, &format!("EXPLAIN {query}"))
            .await
            .concat()
            .concat()
            .contains("SingleStageExec")
    };
    let wait_until = |want: bool, what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while single_stage().await != want {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_until(true, "a job on a single slot is split into stages").await;
    assert_eq!(rows(&client, query).await.len(), 7);

    workers.push(
        start_executor(
            binary(),
            scheduler_port,
            1,
            &dir.path().join("work-1"),
            None,
        )
        .expect("second executor starts"),
    );
    wait_for_executors(&client, 2, Duration::from_secs(10)).await;
    wait_until(
        false,
        "a job over the budget on two slots runs as one stage",
    )
    .await;
    assert_eq!(rows(&client, query).await.len(), 7);
    // The session began on one slot (its target_partitions is 1), yet the
    // stages get a task per live slot, or what sluice.stage_partitions says.
    let explain = |setting: &'static str| {
        let client = &client;
        async move {
            client.batch_execute(setting).await.expect(setting);
            rows(client, &format!("EXPLAIN {query}"))
                .await
                .concat()
                .concat()
        }
    };
    client
        .batch_execute(
            "SET datafusion.optimizer.repartition_file_min_size = 1; \
             SET datafusion.execution.target_partitions = 1",
        )
        .await
        .unwrap();
    let plan = explain("RESET sluice.stage_partitions").await;
    assert!(plan.contains("Hash([g@0], 2)"), "{plan}");
    // Ballista cuts the stages apart with the job's target_partitions too: the
    // filtered scan of the two files is not regrouped into one task, even by
    // a session on one partition (files this small are regrouped only with
    // the minimum size lowered).
    let distributed = &plan[plan.find("ResolvedStage").expect("a distributed plan")..];
    assert!(
        distributed.contains("file_groups={2 groups"),
        "{distributed}"
    );
    let plan = explain("SET sluice.stage_partitions = 3").await;
    assert!(plan.contains("Hash([g@0], 3)"), "{plan}");
    assert_eq!(rows(&client, query).await.len(), 7);
}

/// Two executors started on one host without `--http` each get an HTTP
/// endpoint of their own (it follows the Flight port), both serve
/// `/metrics`, and both register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_on_one_host_need_no_http_flag_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (_scheduler, scheduler_port) =
        start_scheduler(binary(), 0, None).expect("scheduler starts");
    let executor = |name: &str| {
        let mut command = Command::new(binary());
        command
            .args(["executor", "--scheduler"])
            .arg(format!("127.0.0.1:{scheduler_port}"))
            .args(["--listen", "127.0.0.1:0", "--slots", "1", "--work-dir"])
            .arg(dir.path().join(name))
            .env_remove("SLUICE_EXECUTOR_HTTP");
        ChildProcess::start(command, "sluice executor metrics at ").expect("executor starts")
    };
    let workers = [executor("work-0"), executor("work-1")];
    let addresses: Vec<String> = workers
        .iter()
        .map(|worker| {
            let url = worker.ready_line.rsplit(' ').next().unwrap();
            url.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .to_string()
        })
        .collect();
    assert_ne!(addresses[0], addresses[1]);
    for address in &addresses {
        assert!(address.starts_with("127.0.0.1:"), "{address}");
        let body = reqwest::get(format!("http://{address}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("sluice_scan_bytes_total"), "{body}");
    }
    let frontend = SluiceServer::start_with_args(
        binary(),
        &["--scheduler", &format!("127.0.0.1:{scheduler_port}")],
    )
    .expect("frontend starts");
    let client = sluice_sql_tests::connect(frontend.port())
        .await
        .expect("connects");
    let live = wait_for_executors(&client, 2, Duration::from_secs(10)).await;
    assert_eq!(live.len(), 2, "{live:?}");
}
