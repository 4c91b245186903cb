//! `SHOW <engine setting>`: answered from the connection's DataFusion/Ballista
//! configuration.
//!
//! datafusion-postgres' SET/SHOW hook knows the Postgres session variables and
//! answers any other name with an empty value; dotted names (`datafusion.…`,
//! `ballista.…`) are engine settings, so DataFusion plans them: it returns the
//! connection's current value, or an error for an unknown name.

use datafusion::sql::sqlparser::ast::Statement;

use super::hooks::PlanSource;

/// Recognises `SHOW` of a dotted engine setting name.
pub fn show_engine_setting(statement: &Statement) -> Option<PlanSource> {
    // The parser splits `datafusion.execution.batch_size` into three idents.
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    (variable.len() > 1 || variable.iter().any(|part| part.value.contains('.')))
        .then_some(PlanSource::Statement)
}
