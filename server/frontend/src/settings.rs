//! `SET`, `SHOW`, `RESET`, `DISCARD ALL`, `set_config()` and savepoints on
//! the wire: [`sluice_engine::setting_statements`] changes the session; this
//! module sends what the client must see (the command tag, `ParameterStatus`
//! for reported parameters, the value formatting pgwire and arrow-pg read
//! from the client metadata, a one-row result for `SHOW`) and checks the
//! connection's role before `set_config()`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire::api::results::{
    DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::ParameterStatus;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use sluice_engine::pg_settings::Parameter;
use sluice_engine::setting_statements::{
    current_value, is_engine_setting_show, set_config, set_config_calls, storage_set_refusal,
    storage_setting_refusal, Applied, SettingStatement,
};
use sluice_engine::sqlstate::SqlState;

use super::hooks::PlanSource;
use super::sqlstate::user_error;
use crate::auth::access::{check, setting_role};

pub use sluice_engine::setting_statements::{statement_timeout, with_settings};

/// Recognises `SHOW` of a dotted engine setting name.
pub fn show_engine_setting(statement: &Statement) -> Option<PlanSource> {
    is_engine_setting_show(statement).then_some(PlanSource::Statement)
}

/// Recognises `SET storage.…` and `RESET storage.…` (however quoted) and
/// refuses them.
pub fn refuse_storage_set(statement: &Statement) -> Option<PlanSource> {
    storage_set_refusal(statement).map(PlanSource::Unsupported)
}

fn api(error: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(error))
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
    let key = formatting_key(parameter);
    if key.is_none() && !parameter.reported {
        return Ok(());
    }
    let value = current_value(context, parameter.name).unwrap_or_default();
    if let Some(key) = key {
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
fn show_response(name: String, value: &str) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(
        name,
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
    match statement.apply(context).map_err(api)? {
        Applied::Done {
            tag,
            changed: parameters,
        } => {
            for parameter in parameters {
                changed(context, client, parameter).await?;
            }
            Ok(Response::Execution(Tag::new(tag)))
        }
        Applied::Shown { column, value } => show_response(column, &value),
    }
}

/// The plan a statement's `Describe` reports: no columns for `SET`, one text
/// column for `SHOW`.
fn described_plan(statement: &SettingStatement) -> PgWireResult<LogicalPlan> {
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: statement.described_schema().map_err(api)?,
    }))
}

/// Handles the PostgreSQL parameter statements; applies `set_config()` calls
/// with constant arguments before their statement is planned.
#[derive(Debug, Default)]
pub struct PgSettingsHook;

/// Applies the `set_config()` calls of `statement`; `None` when there are none.
async fn apply_set_config(
    statement: &Statement,
    params: &ParamValues,
    context: &SessionContext,
    client: &mut dyn HookClient,
) -> Option<PgWireResult<Response>> {
    for (name, value) in set_config_calls(statement, params) {
        // Exactly the rules of `SET`: a storage option is refused whoever
        // asks, then the role is checked.
        let (needed, what) = setting_role(&name);
        let applied = match storage_setting_refusal(&name) {
            Some(refusal) => Err(user_error(SqlState::FEATURE_NOT_SUPPORTED, refusal)),
            None => check(&*client, needed, what)
                .and_then(|()| set_config(context, &name, &value).map_err(api)),
        };
        let result = match applied {
            Ok(Some(parameter)) => changed(context, client, parameter).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            return Some(Err(e));
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
        match SettingStatement::recognise(statement) {
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
        SettingStatement::recognise(statement).map(|setting| described_plan(&setting))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        params: &ParamValues,
        context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match SettingStatement::recognise(statement) {
            Some(setting) => Some(run(setting, context, client).await),
            None => apply_set_config(statement, params, context, client).await,
        }
    }
}
