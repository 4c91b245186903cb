//! Runs every `sql-tests/slt/**/*.slt` file against a real `sluice serve`
//! with two executors, over the Postgres protocol: once with the small
//! queries in the frontend (the server's default) and once with every query
//! over files sent to the cluster, so both paths give the answers the files
//! specify.

use std::path::Path;

use sluice_sql_tests::{run_slt_file, slt_dir, slt_files, SluiceServer, SmallQueries};

/// Runs every slt file on a fresh server; the names of those that failed.
fn run_all(small: SmallQueries) -> Vec<String> {
    let server =
        SluiceServer::start_with_small_queries(Path::new(env!("CARGO_BIN_EXE_sluice")), 2, small)
            .expect("sluice serve starts");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let files = slt_files(&slt_dir()).expect("slt files listed");
    assert!(
        !files.is_empty(),
        "no .slt files found in {}",
        slt_dir().display()
    );
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .strip_prefix(slt_dir())
            .unwrap_or(file)
            .display()
            .to_string();
        match runtime.block_on(run_slt_file(server.port(), file, small)) {
            Ok(()) => println!("ok   {name} ({small:?})"),
            Err(report) => {
                println!("FAIL {name} ({small:?})\n{report}");
                failures.push(format!("{name} ({small:?})"));
            }
        }
    }
    let status = server.stop().expect("sluice serve stops on SIGTERM");
    assert!(status.success(), "sluice serve exited with {status}");
    failures
}

#[test]
fn slt_files_pass_against_sluice_serve() {
    let mut failures = run_all(SmallQueries::Frontend);
    failures.extend(run_all(SmallQueries::Cluster));
    assert!(failures.is_empty(), "failed slt files: {failures:?}");
}
