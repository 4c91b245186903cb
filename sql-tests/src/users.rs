//! Users for servers under test, written the way operators write them:
//! with `sluice user add`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// `sluice user add name --role role` (and `extra` flags) into `config`, with
/// the password `<name>-pw` on its standard input; checks that the password
/// itself was not stored.
pub fn add_user(binary: &Path, config: &Path, name: &str, role: &str, extra: &[&str]) {
    let mut add = Command::new(binary)
        .args(["user", "add", name, "--role", role, "--config"])
        .arg(config)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sluice binary runs");
    writeln!(add.stdin.take().expect("piped"), "{name}-pw").expect("writes the password");
    assert!(add.wait().expect("sluice user add ends").success());
    let text = std::fs::read_to_string(config).expect("the config file is written");
    assert!(!text.contains("-pw"), "a password was stored: {text}");
}

/// Users `ada` (admin), `wes` (writer) and `rita` (reader), each with the
/// password `<name>-pw`, added to `config`.
pub fn add_users(binary: &Path, config: &Path) {
    for (name, role) in [("ada", "admin"), ("wes", "writer"), ("rita", "reader")] {
        add_user(binary, config, name, role, &[]);
    }
}
