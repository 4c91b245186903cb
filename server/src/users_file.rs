//! Users in the config file: `[[user]]` entries, read by `sluice serve` and
//! written by `sluice user add`.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! role = "writer"
//! password = "SCRAM-SHA-256$4096:…$…:…"   # a verifier, never the password
//! ```
//!
//! `sluice user add --md5` stores PostgreSQL's `md5…` hash instead, for
//! clients without SCRAM; the server lets such users in only with
//! `allow-md5`.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, ServerError};
use sluice_frontend::auth::md5::Md5Password;
use sluice_frontend::auth::scram::Verifier;
use sluice_frontend::auth::{Role, StoredPassword, User, Users};

/// A `[[user]]` entry as the file holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    name: String,
    role: Role,
    /// The password's SCRAM-SHA-256 verifier or md5 hash (PostgreSQL's
    /// forms).
    password: String,
}

/// The users of `entries`; a password that is not a verifier or an md5 hash
/// is an error.
pub fn users(entries: &[UserEntry]) -> Result<Users> {
    let mut users = Users::default();
    for entry in entries {
        if entry.name.is_empty() {
            return Err(ServerError::Config("a [[user]] has an empty name".into()));
        }
        if users.get(&entry.name).is_some() {
            return Err(ServerError::Config(format!(
                "user {} is configured twice",
                entry.name
            )));
        }
        let password = StoredPassword::parse(&entry.password).map_err(|e| {
            ServerError::Config(format!(
                "user {}: {e}; passwords are stored as SCRAM verifiers, written by \
                 `sluice user add`",
                entry.name
            ))
        })?;
        users.insert(
            &entry.name,
            User {
                role: entry.role,
                password,
            },
        );
    }
    Ok(users)
}

/// How `sluice user add` stores a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordFormat {
    /// A SCRAM-SHA-256 verifier.
    Scram,
    /// PostgreSQL's md5 hash, for clients without SCRAM.
    Md5,
}

/// Adds user `name` with `role` and `password` (stored as `format` says) to
/// the config file at `path` (created if missing), or replaces that user's
/// role and password; the rest of the file is kept as written.
pub fn add_user(
    path: &Path,
    name: &str,
    role: Role,
    password: &str,
    format: PasswordFormat,
) -> Result<()> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(ServerError::Config(format!("invalid user name {name:?}")));
    }
    if password.is_empty() {
        return Err(ServerError::Config("the password is empty".into()));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ServerError::io(format!("reading {}", path.display()), e)),
    };
    let mut document: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
    let users = document
        .entry("user")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or_else(|| {
            ServerError::Config(format!(
                "{}: `user` is not a list of [[user]] tables",
                path.display()
            ))
        })?;
    let existing = users
        .iter_mut()
        .find(|table| table.get("name").and_then(|n| n.as_str()) == Some(name));
    let table = match existing {
        Some(table) => table,
        None => {
            let mut table = toml_edit::Table::new();
            table["name"] = toml_edit::value(name);
            users.push(table);
            users.iter_mut().last().expect("just pushed")
        }
    };
    table["role"] = toml_edit::value(role.name());
    let stored = match format {
        PasswordFormat::Scram => Verifier::new(password).to_string(),
        PasswordFormat::Md5 => Md5Password::new(name, password).to_string(),
    };
    table["password"] = toml_edit::value(stored);
    write_private(path, document.to_string().as_bytes())
}

/// `sluice user …`: the users in a config file.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user (or set an existing user's role and password), reading
    /// the password from standard input; the file keeps only its SCRAM
    /// verifier.
    Add(UserAddArgs),
}

/// Arguments of `sluice user add`.
#[derive(Debug, clap::Args)]
pub struct UserAddArgs {
    /// The user's name.
    pub name: String,
    /// What the user may do.
    #[arg(long, value_enum)]
    pub role: Role,
    /// The TOML config file (created if missing) that `sluice serve
    /// --config` reads.
    #[arg(long, value_name = "FILE")]
    pub config: std::path::PathBuf,
    /// Store PostgreSQL's md5 hash instead of a SCRAM verifier, for clients
    /// that cannot do SCRAM; the server must allow md5 logins
    /// (`--allow-md5`).
    #[arg(long)]
    pub md5: bool,
}

/// Runs `sluice user …`.
pub fn run(command: UserCommand) -> Result<()> {
    let UserCommand::Add(args) = command;
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {} (shown as typed): ", args.name);
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| ServerError::io("reading the password from standard input", e))?;
    let password = line.trim_end_matches(['\r', '\n']);
    let format = if args.md5 {
        PasswordFormat::Md5
    } else {
        PasswordFormat::Scram
    };
    add_user(&args.config, &args.name, args.role, password, format)?;
    eprintln!(
        "user {} ({}) written to {}{}",
        args.name,
        args.role,
        args.config.display(),
        if args.md5 {
            " with an md5 password: it logs in only where the server allows md5 (--allow-md5)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Replaces `path` with `contents` (written beside it, then renamed), readable
/// by its owner only: it holds password verifiers.
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e| ServerError::io(format!("writing {}", path.display()), e);
    let staging = path.with_extension("toml.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .map_err(failed)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&staging, path))
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        user: Vec<UserEntry>,
        serve: toml::Table,
    }

    #[test]
    fn users_are_added_and_replaced_keeping_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "# mine\n[serve]\nlisten = \"127.0.0.1:5433\"\n").unwrap();
        add_user(&path, "alice", Role::Writer, "first", PasswordFormat::Scram).unwrap();
        add_user(&path, "bob", Role::Reader, "second", PasswordFormat::Md5).unwrap();
        add_user(&path, "alice", Role::Admin, "third", PasswordFormat::Scram).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\n"), "{text}");
        assert!(!text.contains("first") && !text.contains("third"), "{text}");
        let file: File = toml::from_str(&text).unwrap();
        assert_eq!(file.serve["listen"].as_str(), Some("127.0.0.1:5433"));
        let users = users(&file.user).unwrap();
        assert_eq!(users.get("alice").unwrap().role, Role::Admin);
        assert_eq!(users.get("bob").unwrap().role, Role::Reader);
        assert_eq!(users.with_md5_passwords(), ["bob"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn plaintext_passwords_are_refused() {
        let entries: Vec<UserEntry> = toml::from_str::<File>(
            "[serve]\n[[user]]\nname = \"eve\"\nrole = \"admin\"\npassword = \"hunter2\"\n",
        )
        .unwrap()
        .user;
        let error = users(&entries).unwrap_err().to_string();
        assert!(error.contains("SCRAM verifiers"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
