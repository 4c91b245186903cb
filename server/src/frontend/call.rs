//! `CALL sluice.run_job('name')`: runs a scheduled job now and answers when
//! its run has ended, with an error if its last attempt failed. The run is
//! in `sluice.job_runs` like a scheduled one (trigger `manual`).

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value,
};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::PgWireResult;
use sluice_engine::sqlstate::SqlState;

use super::hooks::Action;
use super::sqlstate::user_error;
use crate::jobs::history::RunState;
use crate::jobs::JobsSlot;

/// `CALL sluice.run_job(…)` (run by an [`super::hooks::ActionHook`]).
pub struct RunJob;

/// The call, if `statement` is one: `Ok(job name)` or why the call is
/// malformed.
fn recognise(statement: &Statement) -> Option<Result<String, String>> {
    let Statement::Call(function) = statement else {
        return None;
    };
    let name = function.name.to_string().to_ascii_lowercase();
    if name != "sluice.run_job" && name != "run_job" {
        return Some(Err(format!(
            "procedure {} does not exist; Sluice has sluice.run_job('job name')",
            function.name
        )));
    }
    let args = match &function.args {
        FunctionArguments::List(list) => list.args.as_slice(),
        _ => &[],
    };
    Some(match args {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(value)))] => match &value.value {
            Value::SingleQuotedString(job) => Ok(job.clone()),
            _ => Err("sluice.run_job takes the job's name as a string".into()),
        },
        _ => Err("sluice.run_job takes one argument, the job's name".into()),
    })
}

async fn run(call: Result<String, String>, context: &SessionContext) -> PgWireResult<Response> {
    let job = call.map_err(|message| user_error(SqlState::UNDEFINED_FUNCTION, message))?;
    let slot = context.state().config().get_extension::<JobsSlot>();
    let jobs = slot.as_ref().and_then(|slot| slot.get()).ok_or_else(|| {
        user_error(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "this server has no jobs (start it with sluice serve --jobs FILE)",
        )
    })?;
    let run = jobs
        .run_now(&job)
        .await
        .map_err(|e| user_error(SqlState::UNDEFINED_OBJECT, e.to_string()))?;
    if run.state == RunState::Failed {
        return Err(user_error(
            SqlState::RAISE_EXCEPTION,
            format!(
                "job '{job}' failed (run {}, attempt {}): {}",
                run.run_id,
                run.attempt,
                run.error.unwrap_or_default()
            ),
        ));
    }
    Ok(Response::Execution(Tag::new("CALL")))
}

#[async_trait]
impl Action for RunJob {
    fn matches(&self, statement: &Statement) -> bool {
        recognise(statement).is_some()
    }

    async fn run(&self, statement: &Statement, context: &SessionContext) -> PgWireResult<Response> {
        match recognise(statement) {
            Some(call) => run(call, context).await,
            None => Err(user_error(SqlState::INTERNAL_ERROR, "not a CALL statement")),
        }
    }
}
