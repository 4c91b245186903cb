//! Runs every `sql-tests/slt/**/*.slt` file against real `sluice serve`
//! processes with two executors, over the Postgres protocol: once with the
//! small queries in the frontend (the server's default) and once with every
//! query over files sent to the cluster, so both paths give the answers the
//! files specify. Each file runs on a fresh server, so that it sees only
//! what it made, and files run in parallel: `SLT_JOBS` at a time per mode
//! (default half the cores, at least one).
//!
//! ```text
//! cargo test -p sluice-server --test sqllogictest                   # every file
//! cargo test -p sluice-server --test sqllogictest -- errors         # files whose path has "errors"
//! cargo test -p sluice-server --test sqllogictest -- --complete ddl # rewrite ddl.slt's expectations
//! ```
//!
//! `--complete` runs the chosen files in the frontend mode and rewrites the
//! records whose results, column types or errors no longer match what the
//! server answers; review the diff before committing it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use sluice_sql_tests::{
    complete_slt_file, run_slt_file, slt_dir, slt_files, SluiceServer, SmallQueries,
};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// What the command line asks for.
struct Args {
    /// Rewrite expectations instead of checking them.
    complete: bool,
    /// Run only files whose path under `slt/` contains one of these.
    filters: Vec<String>,
}

impl Args {
    /// Reads `--complete` and file filters; other flags (cargo test's own,
    /// such as `--nocapture`) are ignored.
    fn parse() -> Self {
        let mut args = Self {
            complete: false,
            filters: Vec::new(),
        };
        for arg in std::env::args().skip(1) {
            if arg == "--complete" {
                args.complete = true;
            } else if !arg.starts_with('-') {
                args.filters.push(arg);
            }
        }
        args
    }

    /// The slt files to run, with their names under `slt/`.
    fn files(&self) -> Vec<(String, PathBuf)> {
        let dir = slt_dir();
        let files = slt_files(&dir).expect("slt files listed");
        assert!(!files.is_empty(), "no .slt files in {}", dir.display());
        files
            .into_iter()
            .map(|file| (name(&dir, &file), file))
            .filter(|(name, _)| {
                self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
            })
            .collect()
    }
}

/// `file`'s path under `dir`.
fn name(dir: &Path, file: &Path) -> String {
    file.strip_prefix(dir).unwrap_or(file).display().to_string()
}

/// Servers per mode: `SLT_JOBS`, else half the cores, at least one.
fn jobs() -> usize {
    std::env::var("SLT_JOBS")
        .ok()
        .and_then(|jobs| jobs.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) / 2)
        .max(1)
}

/// Runs `files`, `jobs` at a time, each on a fresh server whose small
/// queries run where `small` says; the names of the files that failed.
fn run_mode(files: &[(String, PathBuf)], small: SmallQueries, jobs: usize) -> Vec<String> {
    let queue = Mutex::new(files.iter().collect::<VecDeque<_>>());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(files.len()) {
            scope.spawn(|| {
                let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((name, file)) = next else { break };
                    let passed = on_fresh_server(small, |port| {
                        runtime.block_on(run_slt_file(port, file, small))
                    });
                    match passed {
                        Ok(()) => println!("ok   {name} ({small:?})"),
                        Err(report) => {
                            println!("FAIL {name} ({small:?})\n{report}");
                            failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("{name} ({small:?})"));
                        }
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Runs `work` against a server started for it (two executors, small
/// queries where `small` says), then stops the server.
fn on_fresh_server<T>(small: SmallQueries, work: impl FnOnce(u16) -> T) -> T {
    let server = SluiceServer::start_with_small_queries(Path::new(BINARY), 2, small)
        .expect("sluice serve starts");
    let done = work(server.port());
    let status = server.stop().expect("sluice serve stops on SIGTERM");
    assert!(status.success(), "sluice serve exited with {status}");
    done
}

/// Rewrites the expectations of `files`, each from a fresh frontend-mode
/// server.
fn complete(files: &[(String, PathBuf)]) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut failed = false;
    for (name, file) in files {
        let small = SmallQueries::Frontend;
        match on_fresh_server(small, |port| {
            runtime.block_on(complete_slt_file(port, file, small))
        }) {
            Ok(()) => println!("completed {name}"),
            Err(error) => {
                println!("FAIL {name}: {error}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The harness's own check: a `query` record whose column types are wrong
/// fails its file, as does one with the wrong number of columns; the right
/// types pass. `Err` says which case went wrong.
fn wrong_column_types_fail() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cases = [
        ("right", "query ITRBD\nSELECT 1, 'a', 1.5, true, DATE '2024-01-02'\n----\n1 a 1.5 t 2024-01-02\n", true),
        ("text_for_integer", "query T\nSELECT 1\n----\n1\n", false),
        ("integer_for_real", "query I\nSELECT 1.5\n----\n1.5\n", false),
        ("one_column_too_many", "query II\nSELECT 1\n----\n1\n", false),
    ];
    let small = SmallQueries::Frontend;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    on_fresh_server(small, |port| {
        for (name, text, passes) in cases {
            let file = dir.path().join(format!("{name}.slt"));
            std::fs::write(&file, text).map_err(|e| e.to_string())?;
            let outcome = runtime.block_on(run_slt_file(port, &file, small));
            match (passes, outcome) {
                (true, Err(report)) => return Err(format!("{name} failed: {report}")),
                (false, Ok(())) => return Err(format!("{name} passed")),
                (false, Err(report)) if !report.contains("query columns mismatch") => {
                    return Err(format!("{name} failed for another reason: {report}"))
                }
                _ => {}
            }
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let files = args.files();
    if args.complete {
        return complete(&files);
    }
    if files.is_empty() {
        println!("no slt file matches {:?}", args.filters);
        return ExitCode::SUCCESS;
    }
    let jobs = jobs();
    let (frontend, cluster) = std::thread::scope(|scope| {
        let frontend = scope.spawn(|| run_mode(&files, SmallQueries::Frontend, jobs));
        let cluster = scope.spawn(|| run_mode(&files, SmallQueries::Cluster, jobs));
        (
            frontend.join().expect("the frontend runs ended"),
            cluster.join().expect("the cluster runs ended"),
        )
    });
    let mut failures: Vec<String> = frontend.into_iter().chain(cluster).collect();
    match wrong_column_types_fail() {
        Ok(()) => println!("ok   the harness checks column types"),
        Err(why) => {
            println!("FAIL the harness checks column types: {why}");
            failures.push("the harness's column type check".into());
        }
    }
    let passed = 2 * files.len() + 1 - failures.len();
    // cargo's summary line format, so CI's total counts these runs too.
    println!(
        "test result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; 0 filtered out",
        if failures.is_empty() { "ok" } else { "FAILED" },
        failures.len()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed slt files: {failures:?}");
        ExitCode::FAILURE
    }
}
