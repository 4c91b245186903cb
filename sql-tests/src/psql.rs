//! psql, the reference client, for tests that drive a server the way a user
//! at a terminal does.

use std::process::Command;

/// psql connected to Sluice's database on 127.0.0.1:`port`, running each of
/// `statements` with `-c` (unaligned, tuples only, stopping at the first
/// error).
pub fn psql_command(port: u16, statements: &[&str]) -> Command {
    let mut command = Command::new("psql");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "sluice", "-d", "sluice", "-X", "-At"])
        .args(["-v", "ON_ERROR_STOP=1"]);
    for statement in statements {
        command.args(["-c", statement]);
    }
    command
}

/// The output of [`psql_command`]; panics with psql's output if it fails.
pub fn psql(port: u16, statements: &[&str]) -> String {
    let output = psql_command(port, statements)
        .output()
        .expect("psql is installed (apt-get install postgresql-client)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
