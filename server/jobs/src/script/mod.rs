//! `sluice run FILE.sql`: runs a SQL script's statements in order over the
//! Postgres protocol, the way `psql -v ON_ERROR_STOP=1 -f FILE` does, against
//! a running server or an embedded one. Every `${name}` variable needs a
//! value before anything runs; the first failing statement stops the script
//! with its file, line, SQLSTATE and message.

pub mod parse;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use tokio::sync::watch;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::cli_progress::while_running;
use crate::error::{JobsError, Result};
use parse::{split, substitute, Statement};

/// Checks a script before anything runs: every `${name}` has a value in
/// `vars` and the text splits into statements. `name` labels errors.
pub fn prepare(name: &str, text: &str, vars: &BTreeMap<String, String>) -> Result<Vec<Statement>> {
    substitute(text, vars)
        .and_then(|text| split(&text))
        .map_err(|e| JobsError::Script(format!("{name}: {e}")))
}

/// Runs `statements` of script `name` in order, reporting each one's
/// outcome through `out`; stops at the first error. With `notices` (the
/// connection's, with `sluice.progress` on), a running statement's progress
/// is shown ([`while_running`]). Returns the rows the statements wrote
/// (those that return no rows but report a count: INSERT, CREATE TABLE AS,
/// COPY).
pub async fn run_statements(
    client: &Client,
    name: &str,
    statements: &[Statement],
    out: &(dyn Fn(String) + Sync),
    notices: Option<&watch::Receiver<Option<String>>>,
) -> Result<u64> {
    let started = Instant::now();
    let count = statements.len();
    let mut written = 0;
    for (i, statement) in statements.iter().enumerate() {
        out(format!(
            "[{}/{count}] {name}:{}  {}",
            i + 1,
            statement.line,
            summary(&statement.sql)
        ));
        let statement_started = Instant::now();
        let execution = execute(client, &statement.sql);
        let outcome = match notices {
            Some(notices) => {
                let label = format!("[{}/{count}] {name}:{}", i + 1, statement.line);
                while_running(&label, notices, execution).await
            }
            None => execution.await,
        };
        let outcome = outcome.map_err(|e| {
            JobsError::Script(format!("{name}:{}: {}", statement.line, describe(&e)))
        })?;
        let elapsed = seconds(statement_started.elapsed());
        match outcome {
            Outcome::Returned(rows) => out(format!("      {rows} rows in {elapsed}")),
            Outcome::Wrote(rows) => {
                written += rows;
                out(format!("      {rows} rows in {elapsed}"))
            }
            Outcome::Done => out(format!("      done in {elapsed}")),
        }
    }
    out(format!(
        "ran {count} statements from {name} in {}",
        seconds(started.elapsed())
    ));
    Ok(written)
}

/// `--dry-run`: has the server plan each statement (the extended protocol's
/// Parse, which plans and runs nothing) and reports the first that does not
/// plan. A statement that fails only because it reads a relation an earlier
/// statement of the script creates cannot be checked before that runs: it is
/// reported as such, not as an error.
pub async fn plan_statements(client: &Client, name: &str, statements: &[Statement]) -> Result<()> {
    let count = statements.len();
    let mut created: Vec<String> = Vec::new();
    for (i, statement) in statements.iter().enumerate() {
        let line = format!(
            "[{}/{count}] {name}:{}  {}",
            i + 1,
            statement.line,
            summary(&statement.sql)
        );
        println!("{line}");
        match client.prepare(&statement.sql).await {
            Ok(_) => println!("      planned"),
            Err(e) if reads_created(&e, &created) => {
                println!("      not checked: it reads a relation the script creates")
            }
            Err(e) => {
                return Err(JobsError::Script(format!(
                    "{name}:{}: {}",
                    statement.line,
                    describe(&e)
                )))
            }
        }
        created.extend(parse::created_relation(&statement.sql));
    }
    println!("planned {count} statements from {name}; nothing ran");
    Ok(())
}

/// Whether `error` is a missing relation that one of `created` names.
fn reads_created(error: &tokio_postgres::Error, created: &[String]) -> bool {
    let Some(db) = error.as_db_error() else {
        return false;
    };
    db.code().code() == "42P01"
        && created
            .iter()
            .any(|name| db.message().to_lowercase().contains(&name.to_lowercase()))
}

/// What one statement did.
enum Outcome {
    /// It returned rows.
    Returned(u64),
    /// It wrote or changed rows (its command tag's count).
    Wrote(u64),
    /// Neither (DDL, SET, …).
    Done,
}

/// Runs one statement, counting the rows it returned or changed. Rows are
/// counted as they arrive, never held.
async fn execute(client: &Client, sql: &str) -> Result<Outcome, tokio_postgres::Error> {
    let messages = client.simple_query_raw(sql).await?;
    futures::pin_mut!(messages);
    let (mut returned, mut completed, mut has_rows) = (0u64, 0u64, false);
    while let Some(message) = messages.try_next().await? {
        match message {
            SimpleQueryMessage::Row(_) => returned += 1,
            SimpleQueryMessage::RowDescription(_) => has_rows = true,
            SimpleQueryMessage::CommandComplete(n) => completed = n,
            _ => {}
        }
    }
    Ok(match (has_rows, completed) {
        (true, _) => Outcome::Returned(returned),
        (false, 0) => Outcome::Done,
        (false, n) => Outcome::Wrote(n),
    })
}

/// `SQLSTATE: message` of a server error, or the client's description.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("ERROR {}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// The statement on one line, shortened to fit a terminal.
fn summary(sql: &str) -> String {
    const WIDTH: usize = 72;
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(WIDTH) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1000.0)
    } else {
        format!("{secs:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_one_short_line() {
        assert_eq!(summary("SELECT 1\n  FROM t"), "SELECT 1 FROM t");
        let long = format!("SELECT {}", "x, ".repeat(40));
        let short = summary(&long);
        assert_eq!(short.chars().count(), 73);
        assert!(short.ends_with('…'));
    }
}
