//! Who may connect, and what each user may do.
//!
//! Users live in the config file (`[[user]]` entries with a name, a role and
//! a SCRAM-SHA-256 verifier, written by `sluice user add`). With none, the
//! server trusts every client, which `sluice serve` allows on a loopback
//! listener only. Each connection authenticates on its own ([`scram`]; [`md5`]
//! for old clients when the server allows it), and its user's [`Role`]
//! decides which statements it may run ([`access`]).

pub mod access;
pub mod md5;
pub mod scram;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use md5::Md5Password;
use scram::Verifier;

/// What a user may do; each role may do everything the ones before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and the catalog: `SELECT`, `SHOW`, `EXPLAIN`, cursors,
    /// PostgreSQL session settings.
    Reader,
    /// Also DDL, writes (`INSERT`, `CREATE TABLE … AS`, `COPY … TO`) and
    /// engine settings.
    Writer,
    /// Also jobs (`CALL sluice.run_job`) and everyone's queries in
    /// `sluice.queries`.
    Admin,
}

impl Role {
    /// The role's name as the config file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    /// Reads a role name (as [`Role::name`] gives it).
    pub fn parse(name: &str) -> Option<Self> {
        [Role::Reader, Role::Writer, Role::Admin]
            .into_iter()
            .find(|role| role.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the server keeps of a user's password: never the password itself.
#[derive(Debug, Clone)]
pub enum StoredPassword {
    /// A SCRAM-SHA-256 verifier: the default.
    Scram(Verifier),
    /// PostgreSQL's md5 hash, for clients without SCRAM; usable only when
    /// the server allows md5 logins.
    Md5(Md5Password),
}

impl StoredPassword {
    /// Reads PostgreSQL's stored forms: a SCRAM verifier or `md5…`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match Md5Password::parse(text) {
            Some(md5) => Ok(Self::Md5(md5)),
            None => Verifier::parse(text).map(Self::Scram),
        }
    }
}

impl fmt::Display for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scram(verifier) => verifier.fmt(f),
            Self::Md5(md5) => md5.fmt(f),
        }
    }
}

/// One user who may log in.
#[derive(Debug, Clone)]
pub struct User {
    /// The user's role.
    pub role: Role,
    /// What proves the user's password.
    pub password: StoredPassword,
}

/// The users a server lets in; empty means every client is trusted.
#[derive(Debug, Clone, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
}

impl Users {
    /// Adds (or replaces) user `name`.
    pub fn insert(&mut self, name: &str, user: User) {
        self.by_name.insert(name.to_string(), user);
    }

    /// User `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    /// Whether no users are configured (clients are trusted).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Names of the users whose password is stored as an md5 hash.
    pub fn with_md5_passwords(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .by_name
            .iter()
            .filter(|(_, user)| matches!(user.password, StoredPassword::Md5(_)))
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

/// The user a connection logged in as, kept in its session's configuration
/// (what `sluice.queries` shows depends on it).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user name.
    pub user: String,
    /// The user's role.
    pub role: Role,
}
