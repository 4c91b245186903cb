//! Runs every `sql-tests/slt/**/*.slt` file against a real `sluice serve`
//! with two executors, over the Postgres protocol.

use std::path::Path;

use sluice_sql_tests::{run_slt_file, slt_dir, slt_files, SluiceServer};

#[test]
fn slt_files_pass_against_sluice_serve() {
    let server = SluiceServer::start(Path::new(env!("CARGO_BIN_EXE_sluice")), 2)
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
        match runtime.block_on(run_slt_file(server.port(), file)) {
            Ok(()) => println!("ok   {name}"),
            Err(report) => {
                println!("FAIL {name}\n{report}");
                failures.push(name);
            }
        }
    }
    let status = server.stop().expect("sluice serve stops on SIGTERM");
    assert!(status.success(), "sluice serve exited with {status}");
    assert!(failures.is_empty(), "failed slt files: {failures:?}");
}
