//! `SET` and `SHOW` of engine settings.
//!
//! datafusion-postgres' SET/SHOW hook knows the Postgres session variables and
//! answers any other name with an empty value; dotted names (`datafusion.…`,
//! `ballista.…`) are engine settings, so DataFusion plans them: it returns the
//! connection's current value, or an error for an unknown name.
//!
//! Object storage options (`storage.…`) are server settings: executors build
//! a session's object stores once, from the options its first job carried, so
//! a later `SET` would not reach them.

use datafusion::config::ConfigExtension;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use sluice_engine::StorageOptions;

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

/// Recognises `SET storage.…` and refuses it.
pub fn refuse_storage_set(statement: &Statement) -> Option<PlanSource> {
    let Statement::Set(Set::SingleAssignment { variable, .. }) = statement else {
        return None;
    };
    let name = variable.to_string().to_ascii_lowercase();
    name.starts_with(&format!("{}.", <StorageOptions as ConfigExtension>::PREFIX))
        .then(|| {
            PlanSource::Unsupported(format!(
                "{name} is a server setting: set object storage options in the [storage.*] \
                 sections of the config file or in the environment (AWS_*, GOOGLE_*, AZURE_*)"
            ))
        })
}
