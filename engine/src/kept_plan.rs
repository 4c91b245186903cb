//! Physical plans of small queries, kept between executions.
//!
//! A dashboard sends the same small query again and again, with new
//! parameter values. Planning it physically took 40% of the CPU of a
//! prepared query over a 25-row table: building the operators, the
//! physical optimizer's rules, listing the table's files. A [`KeptPlan`] is
//! that physical plan, made once with each parameter read from a slot
//! ([`ParameterSlots`]): each execution writes its values into the slots,
//! checks that the plan still reads what planning afresh would read, resets
//! the operators' state ([`reset_plan_states`]) and runs it.
//!
//! A kept plan serves an execution only while all of this holds; otherwise
//! [`KeptPlan::take`] says it is stale and the query is planned again:
//! - the execution, optimizer and format settings, and
//!   `sluice.frontend_max_bytes`, are those it was planned under;
//! - each table it scans is still the catalog's current provider (a commit
//!   to a managed table, or a DROP and CREATE, makes a new one);
//! - each such table lists the same files (path, size, modification time)
//!   as it did just before planning, so new data is always read (a local
//!   directory is walked whole, so that any change to what DataFusion would
//!   list shows);
//! - the location sandbox still admits every table it scans.
//!
//! Only plans that run in the frontend over file-backed tables are kept:
//! a Ballista job is submitted as a logical plan, and other tables
//! (catalog, system, in-memory) hold rows captured when planned. Plans are
//! made without dynamic filters, whose state a reset would not clear from
//! the scans below them. Parameter values reach no planning decision:
//! the slots are empty while planning (a rule trying to evaluate one fails
//! and leaves it be), and DataFusion prunes a table's partitions only with
//! immutable functions, which the slots are not; row groups are pruned at
//! execution, with the values of the moment.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::catalog::TableProvider;
use datafusion::common::config::{
    ConfigOptions, ExecutionOptions, FormatOptions, OptimizerOptions,
};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::{Placeholder, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;

use crate::frontend_compute::FrontendComputeExec;
use crate::local_walk::{self, Walked, WalkedEntry};
use crate::options::SluiceOptions;
use crate::planner::{Placement, RanOn};
use crate::sandbox::{LocationSandbox, SessionSandbox};
use crate::session_view::SessionView;

/// The settings a physical plan depends on: a plan made under others is
/// made again.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSettings {
    execution: ExecutionOptions,
    optimizer: OptimizerOptions,
    /// How values are shown as text (casts read them when planned).
    format: FormatOptions,
    frontend_max_bytes: u64,
}

impl PlanSettings {
    /// The settings in `options`.
    pub fn of(options: &ConfigOptions) -> Self {
        Self {
            execution: options.execution.clone(),
            optimizer: options.optimizer.clone(),
            format: options.format.clone(),
            frontend_max_bytes: frontend_max_bytes(options),
        }
    }

    /// Whether `options` hold these settings.
    pub fn hold_in(&self, options: &ConfigOptions) -> bool {
        options.execution == self.execution
            && options.optimizer == self.optimizer
            && options.format == self.format
            && frontend_max_bytes(options) == self.frontend_max_bytes
    }
}

fn frontend_max_bytes(options: &ConfigOptions) -> u64 {
    options
        .extensions
        .get::<SluiceOptions>()
        .map_or(0, |sluice| sluice.frontend_max_bytes)
}

/// The values of a kept plan's parameters (`$1` first) for the execution
/// running it; empty while it is planned.
#[derive(Debug, Default)]
struct ParameterSlots(RwLock<Vec<ScalarValue>>);

impl ParameterSlots {
    fn set(&self, values: Vec<ScalarValue>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = values;
    }

    fn get(&self, index: usize) -> Option<ScalarValue> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)
            .cloned()
    }
}

/// Parameter `$n` of a kept plan: the value its execution put in slot
/// `n - 1`. Stable: one value for the whole execution.
#[derive(Debug)]
struct Parameter {
    /// `$n`, as EXPLAIN would show it.
    name: String,
    index: usize,
    data_type: DataType,
    slots: Arc<ParameterSlots>,
    signature: Signature,
}

impl PartialEq for Parameter {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
            && self.data_type == other.data_type
            && Arc::ptr_eq(&self.slots, &other.slots)
    }
}

impl Eq for Parameter {}

impl std::hash::Hash for Parameter {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state);
        self.data_type.hash(state);
        Arc::as_ptr(&self.slots).hash(state);
    }
}

impl ScalarUDFImpl for Parameter {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arguments: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.slots
            .get(self.index)
            .map(ColumnarValue::Scalar)
            .ok_or_else(|| {
                DataFusionError::Execution(format!("parameter {} has no value yet", self.name))
            })
    }
}

/// The version of one file a kept plan reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct FileVersion {
    location: String,
    size: u64,
    modified: i64,
    e_tag: Option<String>,
}

/// A table a kept plan scans: its provider when planned and its files just
/// before.
struct KeptTable {
    name: TableReference,
    provider: Arc<dyn TableProvider>,
    files: Vec<FileVersion>,
}

/// What [`KeptPlan::take`] found.
pub enum Taken {
    /// The plan, reset and with the parameters in place, to run now. It is
    /// the caller's until dropped: keep it alive while the plan runs.
    Ready(TakenPlan),
    /// Another execution is running it: plan this one as usual.
    InUse,
    /// The plan no longer reads what the query would: plan again.
    Stale,
}

/// A kept plan taken for one execution; dropping it gives the plan back.
pub struct TakenPlan {
    kept: Arc<KeptPlan>,
    /// The kept plan, never executed, given back on drop.
    original: Option<Arc<dyn ExecutionPlan>>,
    /// A copy of it with its operators' state reset, for this execution.
    running: Arc<dyn ExecutionPlan>,
}

impl TakenPlan {
    /// The plan to execute.
    pub fn plan(&self) -> Arc<dyn ExecutionPlan> {
        Arc::clone(&self.running)
    }

    /// The columns it answers with, as the logical plan names them.
    pub fn schema(&self) -> &Schema {
        self.kept.logical.schema().as_arrow()
    }
}

impl Drop for TakenPlan {
    fn drop(&mut self) {
        let original = self.original.take();
        *self.kept.plan.lock().unwrap_or_else(|e| e.into_inner()) = original;
    }
}

/// The physical plan of a small query, kept to run again (see the module
/// documentation).
pub struct KeptPlan {
    settings: PlanSettings,
    /// The logical plan it was made from, parameters as slot functions.
    logical: LogicalPlan,
    tables: Vec<KeptTable>,
    parameter_count: usize,
    slots: Arc<ParameterSlots>,
    /// The plan; `None` while an execution has it.
    plan: Mutex<Option<Arc<dyn ExecutionPlan>>>,
}

impl KeptPlan {
    /// Plans `optimized` (a query the logical optimizer has seen, its
    /// parameters typed placeholders) to keep; `None` when it cannot be kept:
    /// it goes to the cluster, reads tables other than file-backed ones, has
    /// an untyped parameter, or does not plan with slots for parameters.
    pub async fn plan(
        session: &SessionView<'_>,
        state: &SessionState,
        optimized: &LogicalPlan,
    ) -> Result<Option<Arc<Self>>> {
        let slots = Arc::new(ParameterSlots::default());
        let Some((logical, parameter_count)) = with_parameter_slots(optimized, &slots)? else {
            return Ok(None);
        };
        let Some(scanned) = scanned_listing_tables(&logical)? else {
            return Ok(None);
        };
        let settings = PlanSettings::of(state.config_options());
        let mut tables = Vec::with_capacity(scanned.len());
        // Listed before planning: a file that comes in between makes the
        // plan stale at its first execution rather than missed for ever.
        for (name, provider) in scanned {
            let files = listed_files(session, &provider).await?;
            tables.push(KeptTable {
                name,
                provider,
                files,
            });
        }
        let mut planning = state.clone();
        let optimizer = &mut planning.config_mut().options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_topk_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        let Ok(plan) = planning
            .query_planner()
            .create_physical_plan(&logical, &planning)
            .await
        else {
            return Ok(None);
        };
        if FrontendComputeExec::input_bytes_of(plan.as_ref()).is_none()
            || has_dynamic_filter(&plan)?
        {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self {
            settings,
            logical,
            tables,
            parameter_count,
            slots,
            plan: Mutex::new(Some(plan)),
        })))
    }

    /// The plan ready to run with `params` in `session`, if it still reads
    /// what planning afresh would (see the module documentation).
    pub async fn take(
        self: &Arc<Self>,
        session: &SessionView<'_>,
        params: &ParamValues,
    ) -> Result<Taken> {
        let options = session.options();
        if !self.settings.hold_in(options) {
            return Ok(Taken::Stale);
        }
        crate::catalog::refresh_catalogs(session.catalogs()).await;
        for table in &self.tables {
            let current = session.table(&table.name).await?;
            let same = current.is_some_and(|current| {
                std::ptr::addr_eq(Arc::as_ptr(&current), Arc::as_ptr(&table.provider))
            });
            if !same || listed_files(session, &table.provider).await? != table.files {
                return Ok(Taken::Stale);
            }
        }
        let values = (1..=self.parameter_count)
            .map(|n| {
                params
                    .get_placeholders_with_values(&format!("${n}"))
                    .map(|value| value.into_inner().0)
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(original) = self.plan.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(Taken::InUse);
        };
        let mut taken = TakenPlan {
            kept: Arc::clone(self),
            running: Arc::clone(&original),
            original: Some(original),
        };
        taken.running = reset_plan_states(Arc::clone(&taken.running))?;
        self.slots.set(values);
        if let Some(ran_on) = options.extensions.get::<RanOn>() {
            ran_on.record(Placement::Frontend);
        }
        Ok(Taken::Ready(taken))
    }
}

/// What a query keeps of its physical plan between executions: the kept
/// plan, or the settings under which it could not be kept (it went to the
/// cluster, say), not to try again under them.
#[derive(Default)]
pub struct KeptPhysical(Mutex<Option<std::result::Result<Arc<KeptPlan>, PlanSettings>>>);

impl KeptPhysical {
    /// The query's kept plan, ready to run with `params` in `session`; when
    /// it has none or it is stale, one is made from what `optimized` gives
    /// for a copy of the session's state (the query's optimized plan reading
    /// the tables as they are now, or `None` if it may not be kept, and the
    /// state back). `None` when the query is to be planned as usual this
    /// time.
    pub async fn take<F, P>(
        &self,
        session: &SessionView<'_>,
        params: &ParamValues,
        optimized: F,
    ) -> Result<Option<TakenPlan>>
    where
        F: FnOnce(SessionState) -> P,
        P: std::future::Future<Output = Result<(SessionState, Option<LogicalPlan>)>>,
    {
        let kept = self.lock().clone();
        match kept {
            Some(Err(refused_under)) if refused_under.hold_in(session.options()) => {
                return Ok(None)
            }
            Some(Ok(kept)) => match kept.take(session, params).await? {
                Taken::Ready(taken) => return Ok(Some(taken)),
                Taken::InUse => return Ok(None),
                Taken::Stale => {}
            },
            _ => {}
        }
        let (state, optimized) = optimized(session.state()).await?;
        let Some(optimized) = optimized else {
            return Ok(None);
        };
        // A plan that cannot be made to keep is planned as usual, which
        // reports what is wrong with it.
        let made = KeptPlan::plan(session, &state, &optimized)
            .await
            .ok()
            .flatten();
        *self.lock() = Some(
            made.clone()
                .ok_or_else(|| PlanSettings::of(state.config_options())),
        );
        match made {
            Some(kept) => match kept.take(session, params).await? {
                Taken::Ready(taken) => Ok(Some(taken)),
                Taken::InUse | Taken::Stale => Ok(None),
            },
            None => Ok(None),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<std::result::Result<Arc<KeptPlan>, PlanSettings>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `plan` with each placeholder `$n` replaced by a function reading slot
/// `n - 1` of `slots` (names kept, as DataFusion's own substitution keeps
/// them), and the number of parameters; `None` when a placeholder is
/// untyped or not numbered.
fn with_parameter_slots(
    plan: &LogicalPlan,
    slots: &Arc<ParameterSlots>,
) -> Result<Option<(LogicalPlan, usize)>> {
    let mut count = 0;
    let mut usable = true;
    let replaced = plan.clone().transform_up_with_subqueries(|node| {
        let preserver = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let original = preserver.save(&expr);
            let replaced = expr.transform_up(|e| {
                let Expr::Placeholder(Placeholder { id, field }) = &e else {
                    return Ok(Transformed::no(e));
                };
                let index = id
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| n.checked_sub(1));
                let (Some(index), Some(field)) = (index, field) else {
                    usable = false;
                    return Ok(Transformed::no(e));
                };
                count = count.max(index + 1);
                let parameter = Parameter {
                    name: id.clone(),
                    index,
                    data_type: field.data_type().clone(),
                    slots: Arc::clone(slots),
                    signature: Signature::nullary(Volatility::Stable),
                };
                Ok(Transformed::yes(Expr::ScalarFunction(
                    ScalarFunction::new_udf(Arc::new(ScalarUDF::new_from_impl(parameter)), vec![]),
                )))
            })?;
            Ok(if replaced.transformed {
                replaced.update_data(|expr| original.restore(expr))
            } else {
                replaced
            })
        })
    })?;
    Ok(usable.then_some((replaced.data, count)))
}

/// A table a plan scans, and its provider there.
type Scanned = (TableReference, Arc<dyn TableProvider>);

/// The tables `plan` scans, each once; `None` when one is not a listing
/// table (catalog, system and in-memory tables, table functions) or the
/// plan writes or defines anything: a kept plan's sandbox check covers the
/// tables it scans only.
fn scanned_listing_tables(plan: &LogicalPlan) -> Result<Option<Vec<Scanned>>> {
    let mut tables: Vec<Scanned> = Vec::new();
    let mut listing_only = true;
    plan.apply_with_subqueries(|node| {
        if matches!(
            node,
            LogicalPlan::Copy(_) | LogicalPlan::Dml(_) | LogicalPlan::Ddl(_)
        ) {
            listing_only = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        if let LogicalPlan::TableScan(scan) = node {
            match source_as_provider(&scan.source) {
                Ok(provider) if provider.downcast_ref::<ListingTable>().is_some() => {
                    if !tables.iter().any(|(name, _)| *name == scan.table_name) {
                        tables.push((scan.table_name.clone(), provider));
                    }
                }
                _ => {
                    listing_only = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(listing_only.then_some(tables))
}

/// The files of listing table `provider` now, in order: every file under
/// a local directory (a superset of what the table lists, read without a
/// thread hand-off), or what the object store lists. Each location is
/// checked against the session's sandbox on the way, in the same walk of a
/// local directory.
async fn listed_files(
    session: &SessionView<'_>,
    provider: &Arc<dyn TableProvider>,
) -> Result<Vec<FileVersion>> {
    let Some(table) = provider.downcast_ref::<ListingTable>() else {
        return Ok(Vec::new());
    };
    let sandbox = SessionSandbox::of(session.options());
    let extension = &table.options().file_extension;
    let mut files = Vec::new();
    for path in table.table_paths() {
        if let Some(mut walked) = walk_local(sandbox, path)? {
            files.append(&mut walked);
            continue;
        }
        if let Some(sandbox) = sandbox {
            sandbox.check_url(path.as_str(), path)?;
        }
        let store = session.runtime().object_store(path)?;
        let state = session.state();
        let listed: Vec<_> = path
            .list_all_files(&state, store.as_ref(), extension)
            .await?
            .try_collect()
            .await?;
        files.extend(listed.into_iter().map(|meta| FileVersion {
            location: meta.location.to_string(),
            size: meta.size,
            modified: meta.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
            e_tag: meta.e_tag,
        }));
    }
    files.sort();
    Ok(files)
}

/// Most entries [`walk_local`] reads before leaving a directory to the
/// object store's listing (which does not hold a runtime thread meanwhile).
const MAX_LOCAL_ENTRIES: usize = 1_000;

/// Every file under `url` when it is a local directory (no glob), each
/// admitted by `sandbox` first; `None` when it is not one, or cannot be
/// read whole within [`MAX_LOCAL_ENTRIES`].
fn walk_local(
    sandbox: Option<&LocationSandbox>,
    url: &ListingTableUrl,
) -> Result<Option<Vec<FileVersion>>> {
    if url.scheme() != "file" || !url.is_collection() || url.get_glob().is_some() {
        return Ok(None);
    }
    let mut files = Vec::new();
    let mut entries = 0;
    let visit = |entry: &WalkedEntry<'_>| {
        entries += 1;
        if entries > MAX_LOCAL_ENTRIES {
            return Ok(ControlFlow::Break(()));
        }
        if entry.is_dir {
            return Ok(ControlFlow::Continue(()));
        }
        let metadata = match entry.entry.file_type() {
            Ok(kind) if !kind.is_symlink() => entry.entry.metadata(),
            _ => std::fs::metadata(entry.resolved),
        };
        let Ok(metadata) = metadata else {
            return Ok(ControlFlow::Break(()));
        };
        let modified = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(i64::MAX, |since| {
                i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
            });
        files.push(FileVersion {
            location: entry.path.to_string_lossy().into_owned(),
            size: metadata.len(),
            modified,
            e_tag: None,
        });
        Ok(ControlFlow::Continue(()))
    };
    let walked = match sandbox {
        Some(sandbox) => sandbox.check_walking(url.as_str(), url, visit)?,
        None => {
            let dir = std::path::PathBuf::from(format!("/{}", url.prefix()));
            match dir.canonicalize() {
                Ok(resolved) if resolved.is_dir() => {
                    Some(local_walk::walk(&resolved, &resolved, visit)?)
                }
                _ => None,
            }
        }
    };
    Ok((walked == Some(Walked::Complete)).then_some(files))
}

/// Whether an operator of `plan` filters with a dynamic filter.
fn has_dynamic_filter(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let mut found = false;
    plan.apply(|node| {
        node.apply_expressions(&mut |expr| {
            expr.apply(|e| {
                if e.downcast_ref::<DynamicFilterPhysicalExpr>().is_some() {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(found)
}
