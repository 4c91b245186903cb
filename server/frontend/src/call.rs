//! `CALL sluice.run_job('name')`: runs a scheduled job now and answers when
//! its run has ended, with an error if its last attempt failed. The run is
//! in `sluice.job_runs` like a scheduled one (trigger `manual`).

use std::sync::{Arc, OnceLock};

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

/// The scheduled jobs `CALL sluice.run_job` runs: implemented by the
/// `sluice` binary's jobs, which this crate does not know.
#[async_trait]
pub trait JobRunner: Send + Sync {
    /// Runs the job called `name` now and waits for its run to end.
    async fn run_now(&self, name: &str) -> Result<(), JobCallError>;
}

/// Why `CALL sluice.run_job` did not run a job to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCallError {
    /// No job has that name.
    Unknown(String),
    /// The run's last attempt failed.
    Failed {
        /// The run (shared by its attempts).
        run_id: String,
        /// Its last attempt.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
}

/// The server's jobs, in every session's configuration (an extension), once
/// the server has started them.
#[derive(Default)]
pub struct JobsSlot(OnceLock<Arc<dyn JobRunner>>);

impl JobsSlot {
    /// The jobs, once the server has started them.
    pub fn get(&self) -> Option<&Arc<dyn JobRunner>> {
        self.0.get()
    }

    /// Installs the jobs.
    pub fn set(&self, jobs: Arc<dyn JobRunner>) {
        let _ = self.0.set(jobs);
    }
}

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
    match jobs.run_now(&job).await {
        Ok(()) => {}
        Err(JobCallError::Unknown(message)) => {
            return Err(user_error(SqlState::UNDEFINED_OBJECT, message))
        }
        Err(JobCallError::Failed {
            run_id,
            attempt,
            error,
        }) => {
            return Err(user_error(
                SqlState::RAISE_EXCEPTION,
                format!("job '{job}' failed (run {run_id}, attempt {attempt}): {error}"),
            ))
        }
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
