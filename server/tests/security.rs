//! Logins, roles, TLS and the location sandbox, driven the way users meet
//! them: `sluice user add` writes the users, psql and tokio-postgres log in
//! with SCRAM-SHA-256 (over TLS with `sslmode=verify-full`), and each role
//! runs what it may and gets `42501` for the rest.
// Helpers of this test binary unwrap too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use sluice_sql_tests::certs::{TestCa, TestCertificate};
use sluice_sql_tests::{users, SluiceServer};
use tokio_postgres::error::SqlState;

const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

fn add_user(config: &Path, name: &str, role: &str, extra: &[&str]) {
    users::add_user(Path::new(BINARY), config, name, role, extra);
}

fn add_users(config: &Path) {
    users::add_users(Path::new(BINARY), config);
}

/// psql as `user` with `password` on `connection` (a libpq connection
/// string's extra keywords), verbose errors (SQLSTATE shown).
fn psql_as(port: u16, user: &str, password: &str, connection: &str, sql: &str) -> Output {
    Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname=sluice {connection}"
        ))
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("psql is installed")
}

/// psql's output when it succeeds; panics with its errors otherwise.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts psql failed with `expected` (a SQLSTATE, or a message) in its
/// errors.
fn fails_with(output: Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded: {expected} expected");
    assert!(stderr.contains(expected), "{expected} expected: {stderr}");
}

#[test]
fn roles_and_the_location_sandbox_limit_what_users_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    add_users(&config);
    let lake = dir.path().join("lake");
    std::fs::create_dir(&lake).unwrap();
    std::fs::write(lake.join("private.csv"), "secret\n1\n").unwrap();
    let server = SluiceServer::start_with_args(
        Path::new(BINARY),
        &[
            "--config",
            config.to_str().unwrap(),
            "--allow-location",
            lake.join("shared").to_str().unwrap(),
        ],
    )
    .expect("starts");
    let port = server.port();
    let as_user = |user: &str, sql: &str| psql_as(port, user, &format!("{user}-pw"), "", sql);
    let shared = lake.join("shared");
    let s = shared.display();

    // A reader may not create tables, wherever they are.
    fails_with(
        as_user(
            "rita",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/'",
        ),
        "42501",
    );
    fails_with(as_user("rita", "CREATE TABLE t AS SELECT 1 AS a"), "42501");
    fails_with(
        as_user("rita", &format!("COPY (SELECT 1 AS a) TO '{s}/r.csv'")),
        "42501",
    );
    fails_with(
        as_user("rita", "SET datafusion.execution.batch_size = 10"),
        "42501",
    );
    // A writer may, but only under the allowed locations.
    fails_with(
        as_user(
            "wes",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/'",
        ),
        "42501",
    );
    fails_with(
        as_user(
            "wes",
            &format!(
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{s}/../private.csv' \
                 OPTIONS ('format.has_header' 'true')"
            ),
        ),
        "42501",
    );
    std::os::unix::fs::symlink(&lake, lake.join("shared-link")).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&lake, shared.join("up")).unwrap();
    fails_with(
        as_user(
            "wes",
            &format!("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{s}/up/private.csv'"),
        ),
        "42501",
    );
    fails_with(
        as_user(
            "wes",
            "COPY (SELECT 1 AS a) TO '/tmp/sluice-sandbox-escape.csv'",
        ),
        "42501",
    );
    assert!(!Path::new("/tmp/sluice-sandbox-escape.csv").exists());
    ok(as_user(
        "wes",
        &format!("COPY (SELECT 7 AS n, 'seven' AS name) TO '{s}/numbers/' (FORMAT csv, HEADER)"),
    ));
    ok(as_user(
        "wes",
        &format!(
            "CREATE EXTERNAL TABLE numbers STORED AS CSV LOCATION '{s}/numbers/' \
             OPTIONS ('format.has_header' 'true')"
        ),
    ));
    ok(as_user(
        "wes",
        "CREATE TABLE managed AS SELECT n * 2 AS n FROM numbers",
    ));
    // The reader queries what the writer made; SET of session parameters is fine.
    assert_eq!(
        ok(as_user("rita", "SELECT n, name FROM numbers")),
        "7|seven\n"
    );
    assert_eq!(ok(as_user("rita", "SELECT n FROM managed")), "14\n");
    ok(as_user("rita", "SET search_path = public"));
    // The reader may not load or insert rows either.
    fails_with(as_user("rita", "COPY managed FROM STDIN"), "42501");
    fails_with(as_user("rita", "INSERT INTO managed VALUES (1)"), "42501");
    ok(as_user("wes", "INSERT INTO managed VALUES (2)"));
    assert_eq!(
        ok(as_user("rita", "SELECT n FROM managed ORDER BY n")),
        "2\n14\n"
    );
    // Jobs are the admin's.
    fails_with(as_user("wes", "CALL sluice.run_job('none')"), "42501");
    // A wrong password, or an unknown user, is refused alike (psql shows
    // no SQLSTATE for login errors; the concurrent test checks 28P01).
    for (user, password) in [("rita", "wrong"), ("nobody", "rita-pw")] {
        fails_with(
            psql_as(port, user, password, "", "SELECT 1"),
            &format!("password authentication failed for user \"{user}\""),
        );
    }
    server.stop().expect("stops");
}

#[test]
fn concurrent_logins_each_get_their_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    add_users(&config);
    let server =
        SluiceServer::start_with_args(Path::new(BINARY), &["--config", config.to_str().unwrap()])
            .expect("starts");
    let port = server.port();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let logins = (0..100).map(|i| async move {
            let (user, right) = (["ada", "wes", "rita"][i % 3], i % 2 == 0);
            let password = if right {
                format!("{user}-pw")
            } else {
                format!("{user}-wrong")
            };
            let result = tokio_postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user(user)
                .password(password)
                .dbname("sluice")
                .connect(tokio_postgres::NoTls)
                .await;
            match result {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
                    assert!(right, "login {i} with a wrong password succeeded");
                    assert_eq!(row.get::<_, i64>(0), 2);
                }
                Err(e) => {
                    assert!(!right, "login {i} with the right password failed: {e}");
                    assert_eq!(e.code(), Some(&SqlState::INVALID_PASSWORD), "{e}");
                }
            }
        });
        futures::future::join_all(logins).await;
    });
    server.stop().expect("stops");
}

#[test]
fn tls_with_verify_full_and_plaintext_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    add_users(&config);
    let ca = TestCa::new(dir.path(), "ca");
    let TestCertificate { cert, key } = ca.issue(dir.path(), "server");
    let ca = ca.cert;
    let server = SluiceServer::start_with_args(
        Path::new(BINARY),
        &[
            "--config",
            config.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-required",
        ],
    )
    .expect("starts");
    let port = server.port();
    let verify_full = format!(
        "host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert={}",
        ca.display()
    );
    assert_eq!(
        ok(psql_as(
            port,
            "rita",
            "rita-pw",
            &verify_full,
            "SELECT 'over tls'"
        )),
        "over tls\n"
    );
    fails_with(
        psql_as(port, "rita", "wrong", &verify_full, "SELECT 1"),
        "password authentication failed",
    );
    fails_with(
        psql_as(port, "rita", "rita-pw", "sslmode=disable", "SELECT 1"),
        "TLS connections only",
    );
    server.stop().expect("stops");

    // A certificate that cannot be read stops the start: never plaintext.
    let missing = dir.path().join("missing.pem");
    let output = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--config", config.to_str().unwrap(), "--tls-cert"])
        .arg(&missing)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

/// The authentication request (`AuthenticationMD5Password` = 5,
/// `AuthenticationSASL` = 10, …) the server answers `user`'s startup
/// packet with.
fn authentication_request(port: u16, user: &str) -> i32 {
    use std::io::Read;
    let mut body = 196_608_i32.to_be_bytes().to_vec(); // protocol 3.0
    for text in ["user", user, "database", "sluice", ""] {
        body.extend(text.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend(body);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket.write_all(&packet).unwrap();
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).unwrap();
    assert_eq!(header[0], b'R', "an authentication request");
    i32::from_be_bytes(header[5..9].try_into().unwrap())
}

/// `AuthenticationMD5Password` and `AuthenticationSASL`.
const MD5_REQUEST: i32 = 5;
const SASL_REQUEST: i32 = 10;

#[test]
fn md5_logins_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    add_users(&config);
    add_user(&config, "olga", "reader", &["--md5"]);

    // Off by default: a user with an md5 password is asked for SCRAM, which
    // their stored hash cannot check, so they cannot log in at all.
    let server =
        SluiceServer::start_with_args(Path::new(BINARY), &["--config", config.to_str().unwrap()])
            .expect("starts");
    let port = server.port();
    assert_eq!(authentication_request(port, "olga"), SASL_REQUEST);
    fails_with(
        psql_as(port, "olga", "olga-pw", "", "SELECT 1"),
        "password authentication failed",
    );
    assert_eq!(ok(psql_as(port, "ada", "ada-pw", "", "SELECT 1")), "1\n");
    server.stop().expect("stops");

    // Allowed: md5 for md5 users, SCRAM still for everyone else.
    let server = SluiceServer::start_with_args(
        Path::new(BINARY),
        &["--config", config.to_str().unwrap(), "--allow-md5"],
    )
    .expect("starts");
    let port = server.port();
    assert_eq!(authentication_request(port, "olga"), MD5_REQUEST);
    assert_eq!(authentication_request(port, "ada"), SASL_REQUEST);
    assert_eq!(authentication_request(port, "nobody"), SASL_REQUEST);
    assert_eq!(
        ok(psql_as(port, "olga", "olga-pw", "", "SELECT 'old client'")),
        "old client\n"
    );
    fails_with(
        psql_as(port, "olga", "wrong", "", "SELECT 1"),
        "password authentication failed",
    );
    fails_with(
        psql_as(
            port,
            "olga",
            "olga-pw",
            "",
            "CREATE TABLE t AS SELECT 1 AS a",
        ),
        "42501",
    );
    assert_eq!(ok(psql_as(port, "ada", "ada-pw", "", "SELECT 1")), "1\n");
    server.stop().expect("stops");
}

#[test]
fn a_public_listener_without_users_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before anything is bound.
    let output = Command::new(BINARY)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no users configured"), "{stderr}");
}
