//! Test harness for Sluice: starts a real `sluice serve` process on a free
//! loopback port and runs the `.slt` files of this directory against it over
//! the Postgres protocol with tokio-postgres.
//!
//! The harness is a library so that the test in the `sluice-server` crate,
//! which knows where cargo built the `sluice` binary, can drive it.

pub mod certs;
mod column_type;
mod db;
pub mod process;
mod psql;
mod server;
pub mod users;

use std::path::{Path, PathBuf};

pub use column_type::SltColumnType;
pub use db::{connect, create_numbers_table, executor_ids, DbError, PostgresDb, NUMBERS_JOIN};
pub use psql::{psql, psql_command};
pub use server::SluiceServer;

/// The directory holding the `.slt` files.
pub fn slt_dir() -> PathBuf {
    // `cargo test` runs a test binary with its own package's directory (a
    // sibling of this one) in the environment. Prefer it to the directory this
    // library was compiled in: a shared build cache may hold this library
    // compiled from another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|package| Path::new(&package).join("../sql-tests/slt"))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("slt"))
}

/// Every `.slt` file under `dir`, sorted, recursively.
pub fn slt_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "slt") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Where the queries of an slt file's sessions run when they read little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmallQueries {
    /// As the server decides: in the frontend up to
    /// `sluice.frontend_max_bytes` of files, as the small tables of the slt
    /// files are.
    Frontend,
    /// On the cluster, as Ballista jobs: each session starts with `SET
    /// sluice.frontend_max_bytes = 0`.
    Cluster,
}

impl SmallQueries {
    /// What a session runs first.
    fn session_setup(self) -> Option<&'static str> {
        match self {
            Self::Frontend => None,
            Self::Cluster => Some("SET sluice.frontend_max_bytes = 0"),
        }
    }
}

/// Runs one `.slt` file against the server on `port`, its small queries
/// running where `small` says; `Err` holds a readable report of the first
/// mismatch (the record, what was expected, what came back). Column types
/// must match too: `query ITR` is three columns, an integer, a text and a
/// real ([`SltColumnType`]).
///
/// Files write their fixtures under `${__TEST_DIR__}` (after `control
/// substitution on`), a fresh directory per file.
pub async fn run_slt_file(port: u16, file: &Path, small: SmallQueries) -> Result<(), String> {
    runner(port, small)
        .run_file_async(file)
        .await
        .map_err(|e| e.display(false).to_string())
}

/// Rewrites `file` with what the server on `port` answers: the results,
/// column types and errors of the records whose expectations no longer hold
/// (the others are kept as written). Review the diff before committing it.
pub async fn complete_slt_file(port: u16, file: &Path, small: SmallQueries) -> Result<(), String> {
    runner(port, small)
        .update_test_file(
            file,
            " ",
            sqllogictest::default_validator,
            sqllogictest::default_normalizer,
            sqllogictest::strict_column_validator,
        )
        .await
        .map_err(|e| format!("completing {}: {e}", file.display()))
}

/// A runner whose sessions connect to `port`, checking column types.
fn runner(
    port: u16,
    small: SmallQueries,
) -> sqllogictest::Runner<PostgresDb, impl sqllogictest::MakeConnection<Conn = PostgresDb>> {
    let setup = small.session_setup();
    let mut runner =
        sqllogictest::Runner::new(move || async move { PostgresDb::connect(port, setup).await });
    runner.with_column_validator(sqllogictest::strict_column_validator);
    runner
}
