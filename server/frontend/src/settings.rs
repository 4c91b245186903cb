//! `SET`, `SHOW`, `RESET`, `DISCARD ALL` and `set_config()`; savepoints.
//!
//! Undotted names are PostgreSQL parameters ([`sluice_engine::pg_settings`]):
//! they live in the connection's session configuration, unknown ones are
//! `42704`, fixed ones `55P02`, and changes to reported ones reach the client
//! as `ParameterStatus`. Dotted names (`datafusion.…`, `ballista.…`) are engine
//! settings that DataFusion plans.
//!
//! Object storage options (`storage.…`) are server settings: executors build
//! a session's object stores once, from the options its first job carried, so
//! a later `SET` would not reach them.

use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, ParamValues, ScalarValue};
use datafusion::config::ConfigExtension;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    visit_expressions, DiscardObject, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Reset,
    Set, Statement, Value,
};
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::{
    DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::ParameterStatus;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use sluice_engine::pg_settings::{Parameter, SettingError};
use sluice_engine::{PgSettings, SluiceOptions, StorageOptions};

use super::hooks::PlanSource;
use super::sqlstate::user_error;
use crate::auth::access::{check, setting_name, setting_role};

/// Recognises `SHOW` of a dotted engine setting name.
pub fn show_engine_setting(statement: &Statement) -> Option<PlanSource> {
    // The parser splits `datafusion.execution.batch_size` into three idents.
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    (variable.len() > 1 || variable.iter().any(|part| part.value.contains('.')))
        .then_some(PlanSource::Statement)
}

/// Recognises `SET storage.…` and `RESET storage.…` (however quoted) and
/// refuses them.
pub fn refuse_storage_set(statement: &Statement) -> Option<PlanSource> {
    let name = match statement {
        Statement::Set(Set::SingleAssignment { variable, .. }) => variable,
        Statement::Reset(reset) => match &reset.reset {
            Reset::ConfigurationParameter(name) => name,
            Reset::ALL => return None,
        },
        _ => return None,
    };
    storage_setting_refusal(&setting_name(name)).map(PlanSource::Unsupported)
}

/// Why setting `name` may not be changed by SQL, when it is an object
/// storage option (a server setting: its endpoint and credentials are the
/// server's, and SQL must never point them elsewhere).
fn storage_setting_refusal(name: &str) -> Option<String> {
    let name = name.trim().to_ascii_lowercase();
    name.starts_with(&format!("{}.", <StorageOptions as ConfigExtension>::PREFIX))
        .then(|| {
            format!(
                "{name} is a server setting: set object storage options in the [storage.*] \
                 sections of the config file or in the environment (AWS_*, GOOGLE_*, AZURE_*)"
            )
        })
}

/// A statement about PostgreSQL parameters.
#[derive(Debug, PartialEq)]
enum SettingStatement {
    /// `SET name = value`; `None` is `DEFAULT`.
    Set(String, Option<String>),
    /// `SHOW name`.
    Show(String),
    /// `RESET name`.
    Reset(String),
    /// `RESET sluice.name`: a Sluice setting back to the server's value
    /// (DataFusion resets only its own settings).
    ResetSluice(String),
    /// `RESET ALL`, `DISCARD ALL`: every parameter back to its default.
    ResetAll(&'static str),
    /// Accepted without effect: Sluice has no transactions, roles or
    /// encodings other than UTF-8 to switch.
    Accept(&'static str),
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

fn recognise(statement: &Statement) -> Option<SettingStatement> {
    match statement {
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let parts: Vec<String> = variable.0.iter().map(|part| part.to_string()).collect();
            let name = undotted(&parts)?;
            let value = match values.as_slice() {
                [Expr::Identifier(ident)] if ident.value.eq_ignore_ascii_case("default") => None,
                values => Some(values.iter().map(value_text).collect::<Vec<_>>().join(", ")),
            };
            Some(SettingStatement::Set(name, value))
        }
        Statement::Set(Set::SetTimeZone { value, .. }) => Some(SettingStatement::Set(
            "TimeZone".into(),
            Some(value_text(value)),
        )),
        Statement::Set(
            Set::SetSessionParam(_)
            | Set::SetSessionAuthorization(_)
            | Set::SetRole { .. }
            | Set::SetNames { .. }
            | Set::SetNamesDefault {}
            | Set::SetTransaction { .. },
        ) => Some(SettingStatement::Accept("SET")),
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
                    Some(SettingStatement::Show("transaction_isolation".into()))
                }
                [time, zone] if time == "time" && zone == "zone" => {
                    Some(SettingStatement::Show("TimeZone".into()))
                }
                parts => undotted(parts).map(SettingStatement::Show),
            }
        }
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL => Some(SettingStatement::ResetAll("RESET")),
            Reset::ConfigurationParameter(name) => {
                let parts: Vec<String> = name.0.iter().map(|part| part.to_string()).collect();
                match parts.as_slice() {
                    [prefix, key] if prefix.eq_ignore_ascii_case(SluiceOptions::PREFIX) => {
                        Some(SettingStatement::ResetSluice(key.to_ascii_lowercase()))
                    }
                    parts => undotted(parts).map(SettingStatement::Reset),
                }
            }
        },
        // Savepoints inside the accepted transactions (psycopg nests
        // `conn.transaction()` blocks with them).
        Statement::Savepoint { .. } => Some(SettingStatement::Accept("SAVEPOINT")),
        Statement::ReleaseSavepoint { .. } => Some(SettingStatement::Accept("RELEASE")),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some(SettingStatement::Accept("ROLLBACK")),
        Statement::Discard { object_type } => Some(match object_type {
            DiscardObject::ALL => SettingStatement::ResetAll("DISCARD ALL"),
            _ => SettingStatement::Accept("DISCARD"),
        }),
        _ => None,
    }
}

/// The error a client receives for `error`.
fn setting_error(error: SettingError) -> PgWireError {
    user_error(error.sqlstate(), error.to_string())
}

/// Runs `change` on the connection's PostgreSQL parameters.
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

/// The current value of `name`.
pub fn current_value(context: &SessionContext, name: &str) -> Option<String> {
    with_settings(context, |settings| settings.get(name).map(str::to_string))
}

/// The connection's `statement_timeout`; `None` when unlimited.
pub fn statement_timeout(context: &SessionContext) -> Option<std::time::Duration> {
    with_settings(context, |settings| settings.statement_timeout())
}

/// Keys of the client metadata that pgwire and arrow-pg format values with.
pub(super) fn formatting_key(parameter: &Parameter) -> Option<&'static str> {
    match parameter.name {
        "DateStyle" => Some("datestyle"),
        "IntervalStyle" => Some("intervalstyle"),
        "bytea_output" => Some("bytea_output"),
        "extra_float_digits" => Some("extra_float_digits"),
        "TimeZone" => Some("timezone"),
        _ => None,
    }
}

/// Makes `parameter`'s new value take effect: value formatting and the
/// client's copy of reported parameters. (The engine computes in UTC whatever
/// `TimeZone` says; `timestamptz` values are shown in their column's zone.)
async fn changed(
    context: &SessionContext,
    client: &mut dyn HookClient,
    parameter: &Parameter,
) -> PgWireResult<()> {
    let value = current_value(context, parameter.name).unwrap_or_default();
    if let Some(key) = formatting_key(parameter) {
        client.metadata_mut().insert(key.into(), value.clone());
    }
    if parameter.reported {
        client
            .send_message(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                parameter.name.into(),
                value,
            )))
            .await?;
    }
    Ok(())
}

/// A one-row, one-column text result.
fn show_response(name: &str, value: &str) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(
        name.into(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        Box::pin(futures::stream::iter([Ok(row)])),
    )))
}

async fn run(
    statement: SettingStatement,
    context: &SessionContext,
    client: &mut dyn HookClient,
) -> PgWireResult<Response> {
    match statement {
        SettingStatement::Set(name, value) => {
            let parameter = with_settings(context, |settings| match &value {
                Some(value) => settings.set(&name, value),
                None => settings.reset(&name),
            })
            .map_err(setting_error)?;
            changed(context, client, parameter).await?;
            Ok(Response::Execution(Tag::new("SET")))
        }
        SettingStatement::Reset(name) => {
            let parameter =
                with_settings(context, |settings| settings.reset(&name)).map_err(setting_error)?;
            changed(context, client, parameter).await?;
            Ok(Response::Execution(Tag::new("RESET")))
        }
        SettingStatement::ResetSluice(key) => {
            with_sluice_options(context, |options| options.reset(&key))
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            Ok(Response::Execution(Tag::new("RESET")))
        }
        SettingStatement::ResetAll(tag) => {
            with_settings(context, PgSettings::reset_all);
            with_sluice_options(context, SluiceOptions::reset_all);
            for parameter in sluice_engine::pg_settings::PARAMETERS {
                if formatting_key(parameter).is_some() || parameter.reported {
                    changed(context, client, parameter).await?;
                }
            }
            Ok(Response::Execution(Tag::new(tag)))
        }
        SettingStatement::Show(name) => {
            let value = current_value(context, &name)
                .ok_or_else(|| setting_error(SettingError::Unrecognized(name.clone())))?;
            let parameter = sluice_engine::pg_settings::parameter(&name)
                .map(|parameter| parameter.name.to_ascii_lowercase())
                .unwrap_or(name);
            show_response(&parameter, &value)
        }
        SettingStatement::Accept(tag) => Ok(Response::Execution(Tag::new(tag))),
    }
}

/// The plan a statement's `Describe` reports: no columns for `SET`, one text
/// column for `SHOW`.
fn described_plan(statement: &SettingStatement) -> PgWireResult<LogicalPlan> {
    let fields = match statement {
        SettingStatement::Show(name) => {
            let name = sluice_engine::pg_settings::parameter(name)
                .map(|parameter| parameter.name.to_ascii_lowercase())
                .unwrap_or_else(|| name.clone());
            vec![Field::new(name, DataType::Utf8, false)]
        }
        _ => vec![],
    };
    let schema =
        DFSchema::try_from(Schema::new(fields)).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(schema),
    }))
}

/// Handles the PostgreSQL parameter statements; applies `set_config()` calls
/// with constant arguments before their statement is planned.
#[derive(Debug, Default)]
pub struct PgSettingsHook;

/// The `(name, value)` of every `set_config(name, value, is_local)` call in
/// `statement` whose name and value are constants or bound parameters.
fn set_config_calls(statement: &Statement, params: &ParamValues) -> Vec<(String, String)> {
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

/// Applies the `set_config()` calls of `statement`; `None` when there are none.
async fn apply_set_config(
    statement: &Statement,
    params: &ParamValues,
    context: &SessionContext,
    client: &mut dyn HookClient,
) -> Option<PgWireResult<Response>> {
    for (name, value) in set_config_calls(statement, params) {
        // Exactly the rules of `SET`.
        if let Some(refusal) = storage_setting_refusal(&name) {
            return Some(Err(PgWireError::ApiError(Box::new(
                datafusion::error::DataFusionError::NotImplemented(refusal),
            ))));
        }
        let (needed, what) = setting_role(&name);
        if let Err(e) = check(&*client, needed, what) {
            return Some(Err(e));
        }
        if name.contains('.') {
            let state = context.state_ref();
            let result = state.write().config_mut().options_mut().set(&name, &value);
            if let Err(e) = result {
                return Some(Err(PgWireError::ApiError(Box::new(e))));
            }
            continue;
        }
        match with_settings(context, |settings| settings.set(&name, &value)) {
            Ok(parameter) => {
                if let Err(e) = changed(context, client, parameter).await {
                    return Some(Err(e));
                }
            }
            Err(e) => return Some(Err(setting_error(e))),
        }
    }
    None
}

#[async_trait]
impl QueryHook for PgSettingsHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match recognise(statement) {
            Some(setting) => Some(run(setting, context, client).await),
            None => apply_set_config(statement, &ParamValues::List(vec![]), context, client).await,
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        recognise(statement).map(|setting| described_plan(&setting))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        params: &ParamValues,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match recognise(statement) {
            Some(setting) => Some(run(setting, context, client).await),
            None => apply_set_config(statement, params, context, client).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn recognises_postgres_parameter_statements() {
        let set = |name: &str, value: Option<&str>| {
            Some(SettingStatement::Set(name.into(), value.map(Into::into)))
        };
        assert_eq!(
            recognise(&parse("SET search_path = public, sluice")),
            set("search_path", Some("public, sluice"))
        );
        assert_eq!(
            recognise(&parse("SET statement_timeout TO '2s'")),
            set("statement_timeout", Some("2s"))
        );
        assert_eq!(
            recognise(&parse("SET extra_float_digits = 3")),
            set("extra_float_digits", Some("3"))
        );
        assert_eq!(
            recognise(&parse("SET TIME ZONE 'UTC'")),
            set("TimeZone", Some("UTC"))
        );
        assert_eq!(
            recognise(&parse("SET DateStyle TO DEFAULT")),
            set("DateStyle", None)
        );
        assert_eq!(
            recognise(&parse("SET datafusion.execution.batch_size = 1")),
            None
        );
        assert_eq!(recognise(&parse("SHOW ALL")), None);
        assert_eq!(
            recognise(&parse("SHOW TRANSACTION ISOLATION LEVEL")),
            Some(SettingStatement::Show("transaction_isolation".into()))
        );
        assert_eq!(
            recognise(&parse("DISCARD ALL")),
            Some(SettingStatement::ResetAll("DISCARD ALL"))
        );
    }

    #[test]
    fn finds_set_config_calls() {
        let statement = parse("SELECT pg_catalog.set_config('search_path', '', false)");
        assert_eq!(
            set_config_calls(&statement, &ParamValues::List(vec![])),
            vec![("search_path".to_string(), String::new())]
        );
    }
}
