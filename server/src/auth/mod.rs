//! Who may connect, and what each user may do.
//!
//! Users live in the config file (`[[user]]` entries with a name, a role and
//! a SCRAM-SHA-256 verifier, written by `sluice user add`). With none, the
//! server trusts every client, which `sluice serve` allows on a loopback
//! listener only. Each connection authenticates on its own ([`scram`]), and
//! its user's [`Role`] decides which statements it may run ([`access`]).

pub mod access;
pub mod scram;
pub mod users_file;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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

/// One user who may log in.
#[derive(Debug, Clone)]
pub struct User {
    /// The user's role.
    pub role: Role,
    /// The password's SCRAM-SHA-256 verifier.
    pub verifier: Verifier,
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
