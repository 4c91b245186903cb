//! What `SET`, `SHOW`, `RESET`, `DISCARD ALL`, `set_config()` and savepoints
//! do to a session, without the wire.
//!
//! Undotted names are PostgreSQL parameters ([`crate::pg_settings`]): they
//! live in the session configuration, unknown ones are `42704`, fixed ones
//! `55P02`. Dotted names (`datafusion.…`, `ballista.…`) are engine settings
//! that DataFusion plans, except `RESET sluice.…` (DataFusion resets only its
//! own settings).
//!
//! Object storage options (`storage.…`) are server settings: executors build
//! a session's object stores once, from the options its first job carried, so
//! a later `SET` would not reach them; SQL may not change them.
//!
//! The frontend turns an [`Applied`] into its reply: the command tag, a
//! `ParameterStatus` for each changed reported parameter, a one-row result
//! for `SHOW`.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, DFSchemaRef, ParamValues, ScalarValue};
use datafusion::config::ConfigExtension;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    visit_expressions, DiscardObject, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    ObjectName, Reset, Set, Statement, Value,
};

use crate::pg_settings::{self, Parameter, SettingError, PARAMETERS};
use crate::sqlstate::{PgError, SqlState};
use crate::{PgSettings, SluiceOptions, StorageOptions};

/// A statement about PostgreSQL parameters.
#[derive(Debug, PartialEq)]
pub enum SettingStatement {
    /// `SET name = value`; `None` is `DEFAULT`.
    Set(String, Option<String>),
    /// `SHOW name`.
    Show(String),
    /// `RESET name`.
    Reset(String),
    /// `RESET sluice.name`: a Sluice setting back to the server's value.
    ResetSluice(String),
    /// `RESET ALL`, `DISCARD ALL`: every parameter back to its default.
    ResetAll(&'static str),
    /// Accepted without effect: Sluice has no transactions, roles or
    /// encodings other than UTF-8 to switch.
    Accept(&'static str),
}

/// What applying a [`SettingStatement`] did.
#[derive(Debug)]
pub enum Applied {
    /// The statement ran; `changed` are the parameters whose value may have
    /// changed (the client's copy of reported ones must follow).
    Done {
        /// The command tag.
        tag: &'static str,
        /// Parameters to tell the client about.
        changed: Vec<&'static Parameter>,
    },
    /// `SHOW`: the column name and the value.
    Shown {
        /// The parameter's name as PostgreSQL's `SHOW` labels its column.
        column: String,
        /// Its current value.
        value: String,
    },
}

/// The name of the setting `name` stands for, as DataFusion reads it: its
/// parts unquoted (`"storage.s3.x"` and `storage.s3.x` are one setting),
/// joined with dots, in lower case.
pub fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident.value.clone(),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
        .to_ascii_lowercase()
}

/// Whether `statement` is `SHOW` of a dotted engine setting name (which
/// DataFusion plans).
pub fn is_engine_setting_show(statement: &Statement) -> bool {
    // The parser splits `datafusion.execution.batch_size` into three idents.
    let Statement::ShowVariable { variable } = statement else {
        return false;
    };
    variable.len() > 1 || variable.iter().any(|part| part.value.contains('.'))
}

/// Why `statement` may not run when it is `SET storage.…` or
/// `RESET storage.…` (however quoted).
pub fn storage_set_refusal(statement: &Statement) -> Option<String> {
    let name = match statement {
        Statement::Set(Set::SingleAssignment { variable, .. }) => variable,
        Statement::Reset(reset) => match &reset.reset {
            Reset::ConfigurationParameter(name) => name,
            Reset::ALL => return None,
        },
        _ => return None,
    };
    storage_setting_refusal(&setting_name(name))
}

/// Why setting `name` may not be changed by SQL, when it is an object
/// storage option (a server setting: its endpoint and credentials are the
/// server's, and SQL must never point them elsewhere).
pub fn storage_setting_refusal(name: &str) -> Option<String> {
    let name = name.trim().to_ascii_lowercase();
    name.starts_with(&format!("{}.", <StorageOptions as ConfigExtension>::PREFIX))
        .then(|| {
            format!(
                "{name} is a server setting: set object storage options in the [storage.*] \
                 sections of the config file or in the environment (AWS_*, GOOGLE_*, AZURE_*)"
            )
        })
}

/// The parameter name of `parts` if it is a single, undotted name.
fn undotted(parts: &[String]) -> Option<String> {
    match parts {
        [name] if !name.contains('.') => Some(name.clone()),
        _ => None,
    }
}

/// The text of a `SET` value: literals, identifiers and keywords as written.
fn value_text(value: &Expr) -> String {
    match value {
        Expr::Value(value) => match &value.value {
            Value::Number(number, _) => number.to_string(),
            Value::Boolean(flag) => if *flag { "on" } else { "off" }.to_string(),
            other => other
                .clone()
                .into_string()
                .unwrap_or_else(|| other.to_string()),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::UnaryOp { op, expr } => format!("{op}{}", value_text(expr)),
        other => other.to_string(),
    }
}

impl SettingStatement {
    /// The setting statement `statement` is, if it is one.
    pub fn recognise(statement: &Statement) -> Option<Self> {
        match statement {
            Statement::Set(Set::SingleAssignment {
                variable, values, ..
            }) => {
                let parts: Vec<String> = variable.0.iter().map(|part| part.to_string()).collect();
                let name = undotted(&parts)?;
                let value = match values.as_slice() {
                    [Expr::Identifier(ident)] if ident.value.eq_ignore_ascii_case("default") => {
                        None
                    }
                    values => Some(values.iter().map(value_text).collect::<Vec<_>>().join(", ")),
                };
                Some(Self::Set(name, value))
            }
            Statement::Set(Set::SetTimeZone { value, .. }) => {
                Some(Self::Set("TimeZone".into(), Some(value_text(value))))
            }
            Statement::Set(
                Set::SetSessionParam(_)
                | Set::SetSessionAuthorization(_)
                | Set::SetRole { .. }
                | Set::SetNames { .. }
                | Set::SetNamesDefault {}
                | Set::SetTransaction { .. },
            ) => Some(Self::Accept("SET")),
            Statement::ShowVariable { variable } => {
                let parts: Vec<String> = variable
                    .iter()
                    .map(|part| part.value.to_ascii_lowercase())
                    .collect();
                match parts.as_slice() {
                    [all] if all == "all" => None,
                    [transaction, isolation, level]
                        if transaction == "transaction"
                            && isolation == "isolation"
                            && level == "level" =>
                    {
                        Some(Self::Show("transaction_isolation".into()))
                    }
                    [time, zone] if time == "time" && zone == "zone" => {
                        Some(Self::Show("TimeZone".into()))
                    }
                    parts => undotted(parts).map(Self::Show),
                }
            }
            Statement::Reset(reset) => match &reset.reset {
                Reset::ALL => Some(Self::ResetAll("RESET")),
                Reset::ConfigurationParameter(name) => {
                    let parts: Vec<String> = name.0.iter().map(|part| part.to_string()).collect();
                    match parts.as_slice() {
                        [prefix, key] if prefix.eq_ignore_ascii_case(SluiceOptions::PREFIX) => {
                            Some(Self::ResetSluice(key.to_ascii_lowercase()))
                        }
                        parts => undotted(parts).map(Self::Reset),
                    }
                }
            },
            // Savepoints inside the accepted transactions (psycopg nests
            // `conn.transaction()` blocks with them).
            Statement::Savepoint { .. } => Some(Self::Accept("SAVEPOINT")),
            Statement::ReleaseSavepoint { .. } => Some(Self::Accept("RELEASE")),
            Statement::Rollback {
                savepoint: Some(_), ..
            } => Some(Self::Accept("ROLLBACK")),
            Statement::Discard { object_type } => Some(match object_type {
                DiscardObject::ALL => Self::ResetAll("DISCARD ALL"),
                _ => Self::Accept("DISCARD"),
            }),
            _ => None,
        }
    }

    /// The columns the statement returns, as a `Describe` reports them: one
    /// text column for `SHOW`, none otherwise.
    pub fn described_schema(&self) -> Result<DFSchemaRef> {
        let fields = match self {
            Self::Show(name) => vec![Field::new(shown_column(name), DataType::Utf8, false)],
            _ => vec![],
        };
        Ok(Arc::new(DFSchema::try_from(Schema::new(fields))?))
    }

    /// Runs the statement on `context`'s session.
    pub fn apply(self, context: &SessionContext) -> Result<Applied> {
        let done = |tag, changed| Ok(Applied::Done { tag, changed });
        match self {
            Self::Set(name, value) => {
                let parameter = with_settings(context, |settings| match &value {
                    Some(value) => settings.set(&name, value),
                    None => settings.reset(&name),
                })
                .map_err(raised)?;
                done("SET", vec![parameter])
            }
            Self::Reset(name) => {
                let parameter =
                    with_settings(context, |settings| settings.reset(&name)).map_err(raised)?;
                done("RESET", vec![parameter])
            }
            Self::ResetSluice(key) => {
                with_sluice_options(context, |options| options.reset(&key))?;
                done("RESET", vec![])
            }
            Self::ResetAll(tag) => {
                with_settings(context, PgSettings::reset_all);
                with_sluice_options(context, SluiceOptions::reset_all);
                done(tag, PARAMETERS.iter().collect())
            }
            Self::Show(name) => {
                let value = current_value(context, &name)
                    .ok_or_else(|| raised(SettingError::Unrecognized(name.clone())))?;
                Ok(Applied::Shown {
                    column: shown_column(&name),
                    value,
                })
            }
            Self::Accept(tag) => done(tag, vec![]),
        }
    }
}

/// The column name `SHOW name` labels its value with.
fn shown_column(name: &str) -> String {
    pg_settings::parameter(name)
        .map(|parameter| parameter.name.to_ascii_lowercase())
        .unwrap_or_else(|| name.to_string())
}

/// `error` raised with its SQLSTATE.
fn raised(error: SettingError) -> datafusion::error::DataFusionError {
    PgError::new(error.sqlstate(), error.to_string()).into_datafusion()
}

/// Sets `name` to `value` by `set_config()`: exactly the rules of `SET`.
/// Returns the PostgreSQL parameter it changed (`None` for an engine
/// setting).
pub fn set_config(
    context: &SessionContext,
    name: &str,
    value: &str,
) -> Result<Option<&'static Parameter>> {
    if let Some(refusal) = storage_setting_refusal(name) {
        return Err(PgError::new(SqlState::FEATURE_NOT_SUPPORTED, refusal).into_datafusion());
    }
    if name.contains('.') {
        let state = context.state_ref();
        let mut state = state.write();
        state.config_mut().options_mut().set(name, value)?;
        return Ok(None);
    }
    with_settings(context, |settings| settings.set(name, value))
        .map(Some)
        .map_err(raised)
}

/// The `(name, value)` of every `set_config(name, value, is_local)` call in
/// `statement` whose name and value are constants or bound parameters.
pub fn set_config_calls(statement: &Statement, params: &ParamValues) -> Vec<(String, String)> {
    let constant = |arg: &FunctionArg| -> Option<String> {
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) = arg else {
            return None;
        };
        match expr {
            Expr::Value(value) => match &value.value {
                Value::Placeholder(id) => match params.get_placeholders_with_values(id) {
                    Ok(bound) => match bound.value {
                        ScalarValue::Utf8(Some(text)) | ScalarValue::Utf8View(Some(text)) => {
                            Some(text)
                        }
                        _ => None,
                    },
                    Err(_) => None,
                },
                other => other.clone().into_string(),
            },
            _ => None,
        }
    };
    let mut calls = vec![];
    let _ = visit_expressions(statement, |expr| {
        if let Expr::Function(function) = expr {
            let name = function.name.0.last().and_then(|part| part.as_ident());
            if name.is_some_and(|name| name.value.eq_ignore_ascii_case("set_config")) {
                if let FunctionArguments::List(list) = &function.args {
                    if let [name, value, _] = list.args.as_slice() {
                        if let (Some(name), Some(value)) = (constant(name), constant(value)) {
                            calls.push((name, value));
                        }
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    calls
}

/// Runs `change` on the session's PostgreSQL parameters.
pub fn with_settings<T>(context: &SessionContext, change: impl FnOnce(&mut PgSettings) -> T) -> T {
    let state = context.state_ref();
    let mut state = state.write();
    let settings = state
        .config_mut()
        .options_mut()
        .extensions
        .get_mut::<PgSettings>()
        .expect("every session registers the PostgreSQL settings");
    change(settings)
}

/// Runs `change` on the session's Sluice settings.
fn with_sluice_options<T>(
    context: &SessionContext,
    change: impl FnOnce(&mut SluiceOptions) -> T,
) -> T {
    let state = context.state_ref();
    let mut state = state.write();
    let options = state
        .config_mut()
        .options_mut()
        .extensions
        .get_mut::<SluiceOptions>()
        .expect("every session registers the Sluice options");
    change(options)
}

/// The current value of PostgreSQL parameter `name`.
pub fn current_value(context: &SessionContext, name: &str) -> Option<String> {
    with_settings(context, |settings| settings.get(name).map(str::to_string))
}

/// The session's `statement_timeout`; `None` when unlimited.
pub fn statement_timeout(context: &SessionContext) -> Option<std::time::Duration> {
    with_settings(context, |settings| settings.statement_timeout())
}

#[cfg(test)]
mod tests;
