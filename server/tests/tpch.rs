//! TPC-H end to end, the way a user runs it: `sluice tpch gen` at SF 0.01,
//! `sluice serve` with two executors, then `sluice bench tpch` over the wire —
//! all 22 answers must match the reference.

use std::path::Path;
use std::process::Command;

use sluice_sql_tests::SluiceServer;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn tpch_sf001_all_22_answers_match_over_the_wire() {
    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("sf0.01");
    let output = Command::new(BINARY)
        .args([
            "tpch",
            "gen",
            "--sf",
            "0.01",
            "--files-per-table",
            "2",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("sluice tpch gen runs");
    assert!(
        output.status.success(),
        "tpch gen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for table in [
        "lineitem", "orders", "partsupp", "part", "customer", "supplier", "nation", "region",
    ] {
        assert!(
            out.join(table).join("part-0.parquet").is_file(),
            "{table} written"
        );
    }
    assert!(out.join("lineitem").join("part-1.parquet").is_file());

    let server = SluiceServer::start(Path::new(BINARY), 2).expect("sluice serve starts");
    let output = Command::new(BINARY)
        .args([
            "tpch",
            "register",
            "--port",
            &server.port().to_string(),
            "--data",
        ])
        .arg(&out)
        .output()
        .expect("sluice tpch register runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let psql = |sql: &str| {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port().to_string(),
                "-U",
                "sluice",
            ])
            .args(["-d", "sluice", "-X", "-A", "-t", "-c", sql])
            .output()
            .expect("psql runs");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(psql("SELECT count(*) FROM lineitem"), "60175");
    assert_eq!(psql("SELECT count(*) FROM nation"), "25");

    let json = data.path().join("results.json");
    let output = Command::new(BINARY)
        .args([
            "bench",
            "tpch",
            "--port",
            &server.port().to_string(),
            "--data",
        ])
        .arg(&out)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("sluice bench tpch runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("22/22 answers correct"), "{stdout}");
    let results = std::fs::read_to_string(&json).expect("JSON written");
    assert_eq!(
        results.matches("\"status\": \"ok\"").count(),
        22,
        "{results}"
    );

    // The queries ran as jobs on both executors.
    assert_eq!(
        psql("SELECT count(*) FROM sluice.executors WHERE tasks_completed > 0"),
        "2"
    );
    server.stop().expect("stops");

    // A wrong reference answer makes the bench fail with a non-zero exit.
    let answers = data.path().join("answers");
    std::fs::create_dir_all(&answers).unwrap();
    std::fs::write(answers.join("q06.csv"), "revenue\n1.00\n").unwrap();
    let output = Command::new(BINARY)
        .args(["bench", "tpch", "--embedded", "--queries", "6", "--answers"])
        .arg(&answers)
        .arg("--data")
        .arg(&out)
        .output()
        .expect("sluice bench tpch runs");
    assert!(
        !output.status.success(),
        "a wrong answer must fail the bench"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("wrong"));
}
