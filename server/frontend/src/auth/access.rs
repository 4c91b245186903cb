//! Which role a statement needs, and the hook that refuses statements a
//! connection's role does not allow (SQLSTATE `42501`).

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{CopyTarget, Reset, Set, Statement};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::PgWireError;
use sluice_engine::pg_settings::PARAMETERS;
use sluice_engine::setting_statements::setting_name;

use super::Role;

/// The client metadata key holding the connection's role, set at login
/// (`admin` for every client when no users are configured).
pub const ROLE_KEY: &str = "sluice.role";

use crate::sqlstate::user_error;
use sluice_engine::sqlstate::SqlState;

/// The role of the connection `client`.
pub fn role_of(client: &(impl ClientInfo + ?Sized)) -> Role {
    client
        .metadata()
        .get(ROLE_KEY)
        .and_then(|name| Role::parse(name))
        .unwrap_or(Role::Reader)
}

/// `Err` with SQLSTATE 42501 when `role` may not run a statement needing
/// `needed`.
pub fn check(
    client: &(impl ClientInfo + ?Sized),
    needed: Role,
    what: &str,
) -> Result<(), PgWireError> {
    let role = role_of(client);
    if role >= needed {
        return Ok(());
    }
    let user = client
        .metadata()
        .get(datafusion_postgres::pgwire::api::METADATA_USER)
        .cloned()
        .unwrap_or_default();
    Err(user_error(
        SqlState::INSUFFICIENT_PRIVILEGE,
        format!(
            "permission denied: {what} needs role {needed}, and user \"{user}\" has role {role}"
        ),
    ))
}

/// The role a statement needs, and what it is called in the error.
pub fn needed_role(statement: &Statement) -> (Role, &'static str) {
    match statement {
        Statement::Query(_) => (Role::Reader, "a query"),
        Statement::Explain {
            analyze, statement, ..
        } => {
            if *analyze {
                needed_role(statement)
            } else {
                (Role::Reader, "EXPLAIN")
            }
        }
        Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. } => (Role::Reader, "SHOW"),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Deallocate { .. }
        | Statement::Discard { .. }
        | Statement::Execute { .. } => (Role::Reader, "a session statement"),
        Statement::Prepare { statement, .. } => needed_role(statement),
        Statement::Copy {
            to: true,
            target: CopyTarget::Stdout,
            ..
        } => (Role::Reader, "COPY TO STDOUT"),
        Statement::Copy { .. } => (Role::Writer, "COPY to or from a file"),
        Statement::Set(set) => set_role(set),
        // Back to the default: the rules of `SET` (`RESET ALL` resets only
        // what the session itself set).
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL => (Role::Reader, "RESET"),
            Reset::ConfigurationParameter(name) => setting_role(&setting_name(name)),
        },
        Statement::Call(_) => (Role::Admin, "CALL (running jobs)"),
        _ => (Role::Writer, "a statement that changes data or the catalog"),
    }
}

/// PostgreSQL session parameters (`DateStyle`, `search_path`, …) are any
/// reader's to set; the engine's settings need a writer.
fn set_role(set: &Set) -> (Role, &'static str) {
    match set {
        Set::SingleAssignment { variable, .. } => setting_role(&setting_name(variable)),
        Set::SetTimeZone { .. } | Set::SetNames { .. } | Set::SetNamesDefault {} => {
            (Role::Reader, "SET")
        }
        _ => (Role::Writer, "SET of an engine setting"),
    }
}

/// The role changing setting `name` needs, by `SET` or `set_config()`:
/// PostgreSQL session parameters are any reader's, engine settings a
/// writer's.
pub fn setting_role(name: &str) -> (Role, &'static str) {
    if PARAMETERS.iter().any(|p| p.name.eq_ignore_ascii_case(name)) {
        (Role::Reader, "SET")
    } else {
        (Role::Writer, "SET of an engine setting")
    }
}

/// The role a statement parsed by DataFusion's own parser needs (`CREATE
/// EXTERNAL TABLE`, DataFusion's `COPY … STORED AS`, `EXPLAIN` of those).
pub fn needed_role_datafusion(statement: &DFStatement) -> (Role, &'static str) {
    match statement {
        DFStatement::Statement(statement) => needed_role(statement),
        DFStatement::CreateExternalTable(_) => (Role::Writer, "CREATE EXTERNAL TABLE"),
        DFStatement::CopyTo(_) => (Role::Writer, "COPY to a file"),
        DFStatement::Explain(explain) => {
            if explain.options.analyze {
                needed_role_datafusion(&explain.statement)
            } else {
                (Role::Reader, "EXPLAIN")
            }
        }
        DFStatement::Reset(_) => (Role::Reader, "RESET"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    /// The role as the hook sees it (PostgreSQL's grammar), or as the
    /// fallback for DataFusion's own statements does.
    fn role(sql: &str) -> Role {
        if let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) {
            return needed_role(&statements.pop().unwrap()).0;
        }
        let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).unwrap();
        needed_role_datafusion(&statements.pop_front().unwrap()).0
    }

    #[test]
    fn statements_need_the_roles_documented() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "EXPLAIN INSERT INTO t VALUES (1)",
            "SHOW search_path",
            "SET search_path = public",
            "SET DateStyle TO 'ISO'",
            "SET TIME ZONE 'UTC'",
            "RESET statement_timeout",
            "RESET ALL",
            "BEGIN",
            "COMMIT",
            "COPY t TO STDOUT",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert_eq!(role(sql), Role::Reader, "{sql}");
        }
        for sql in [
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/'",
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO t VALUES (1)",
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "ALTER TABLE t RENAME TO u",
            "TRUNCATE t",
            "CREATE VIEW v AS SELECT 1",
            "CREATE SCHEMA s",
            "COPY t TO '/tmp/t.csv'",
            "COPY (SELECT 1) TO '/tmp/x.parquet' STORED AS PARQUET",
            "SET datafusion.execution.batch_size = 1024",
            "RESET datafusion.execution.batch_size",
            "PREPARE p AS INSERT INTO t VALUES (1)",
        ] {
            assert_eq!(role(sql), Role::Writer, "{sql}");
        }
        assert_eq!(role("CALL sluice.run_job('daily')"), Role::Admin);
    }
}
