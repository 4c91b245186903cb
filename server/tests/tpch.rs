//! TPC-H end to end, the way a user runs it: `sluice tpch gen` at SF 0.01,
//! `sluice serve` with two executors, `sluice tpch register`, then
//! `sluice bench tpch` over the wire — all 22 answers must match the reference.

use std::path::Path;
use std::process::{Command, Output};

use sluice_sql_tests::SluiceServer;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// Runs `sluice` with `args` in the repository's root, as a user in a
/// checkout does: `sluice bench tpch` finds the shipped answers there.
fn sluice(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("sluice runs")
}

/// Runs `sluice` with `args`, asserting success; returns stdout.
fn sluice_ok(args: &[&str]) -> String {
    let output = sluice(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sluice {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn tpch_sf001_all_22_answers_match_over_the_wire() {
    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("sf0.01");
    let out_arg = out.to_str().expect("utf-8 temp path");
    sluice_ok(&[
        "tpch",
        "gen",
        "--sf",
        "0.01",
        "--files-per-table",
        "2",
        "--out",
        out_arg,
    ]);
    for table in [
        "lineitem", "orders", "partsupp", "part", "customer", "supplier", "nation", "region",
    ] {
        let file = out.join(table).join("part-0.parquet");
        assert!(file.is_file(), "{table} written");
    }
    assert!(out.join("lineitem").join("part-1.parquet").is_file());

    let server = SluiceServer::start(Path::new(BINARY), 2).expect("sluice serve starts");
    let port = server.port().to_string();
    sluice_ok(&["tpch", "register", "--port", &port, "--data", out_arg]);
    let psql = |sql: &str| {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "sluice",
                "-d",
                "sluice",
            ])
            .args(["-X", "-A", "-t", "-c", sql])
            .output()
            .expect("psql runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(psql("SELECT count(*) FROM lineitem"), "60175");
    assert_eq!(psql("SELECT count(*) FROM nation"), "25");

    let json = data.path().join("results.json");
    let json_arg = json.to_str().expect("utf-8 temp path");
    let stdout = sluice_ok(&[
        "bench", "tpch", "--port", &port, "--data", out_arg, "--json", json_arg,
    ]);
    assert!(stdout.contains("22/22 answers correct"), "{stdout}");
    let results = std::fs::read_to_string(&json).expect("JSON written");
    assert_eq!(
        results.matches("\"status\": \"ok\"").count(),
        22,
        "{results}"
    );

    // The same queries split into stages across the executors (at SF 0.01
    // each runs as a single stage by default) give the same answers ...
    let stdout = sluice_ok(&[
        "bench",
        "tpch",
        "--port",
        &port,
        "--data",
        out_arg,
        "--set",
        "sluice.single_stage_max_bytes=0",
    ]);
    assert!(stdout.contains("22/22 answers correct"), "{stdout}");
    // ... and run as jobs on both executors.
    assert_eq!(
        psql("SELECT count(*) FROM sluice.executors WHERE tasks_completed > 0"),
        "2"
    );
    server.stop().expect("stops");

    // A wrong reference answer makes the bench fail with a non-zero exit.
    let answers = data.path().join("answers");
    std::fs::create_dir_all(&answers).unwrap();
    std::fs::write(answers.join("q06.csv"), "revenue\n1.00\n").unwrap();
    let answers_arg = answers.to_str().expect("utf-8 temp path");
    let output = sluice(&[
        "bench",
        "tpch",
        "--embedded",
        "--queries",
        "6",
        "--answers",
        answers_arg,
        "--data",
        out_arg,
    ]);
    assert!(
        !output.status.success(),
        "a wrong answer must fail the bench"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("wrong"));
}
