//! The location sandbox: statements may read and write files only under the
//! server's allowed prefixes (once it has users: the data dir, the warehouse
//! and each `--allow-location`), and never the server's own state (the
//! catalog, the COPY journal, the query and job histories, the executors'
//! work directories), whatever the allowed prefixes.
//!
//! A location is interpreted once, the way DataFusion will open it
//! ([`ListingTableUrl::parse`]: scheme case, `file:` forms, relative paths,
//! `..` and globs), then checked. Local paths are resolved as the operating
//! system would open them: the longest existing ancestor is canonicalized
//! (following symlinks), and the rest may not climb with `..`; a directory's
//! files are each resolved too, so a symlink inside an allowed directory
//! cannot lead out of it. Object-store URLs are compared segment by segment.
//! Checks happen where locations enter plans: tables created over files
//! ([`SandboxedTableFactory`]) and, in the query planner, every scan, `COPY`
//! and `INSERT` of a file-backed table ([`LocationSandbox::check_plan`]).

use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{CreateExternalTable, LogicalPlan, TableScan, WriteOp};

use crate::local_walk::{self, Walked, WalkedEntry};
use crate::sqlstate::{PgError, SqlState};

/// The start of every sandbox error message (the frontend reports it with
/// SQLSTATE 42501).
pub const PERMISSION_DENIED: &str = "permission denied";

/// Most files of one directory location resolved by [`LocationSandbox::check`]
/// before it gives up (a directory that large is refused, not walked for
/// ever).
const MAX_LISTED_FILES: usize = 100_000;

/// The sandbox of a session's server, carried in the session's
/// configuration for plans checked outside the query planner (a kept plan
/// about to run again, see [`crate::kept_plan`]). It has no settable
/// entries, so it is never shown or sent.
#[derive(Debug, Clone)]
pub struct SessionSandbox(pub Arc<LocationSandbox>);

impl SessionSandbox {
    /// The sandbox `options` carry, if any (none in a session outside a
    /// server).
    pub fn of(options: &ConfigOptions) -> Option<&LocationSandbox> {
        options
            .extensions
            .get::<SessionSandbox>()
            .map(|sandbox| sandbox.0.as_ref())
    }
}

crate::options::carried_extension!(SessionSandbox, "sluice_sandbox");

/// An allowed or reserved prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// A canonical local path.
    Local(PathBuf),
    /// An object-store URL prefix (`scheme://host/path`), ending in `/`.
    Remote(String),
}

/// Where a location leads, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A local path with its symlinks followed.
    Local(PathBuf),
    /// `scheme://host/path`, ending in `/`.
    Remote(String),
}

impl Root {
    /// Whether `target` lies at or under this prefix.
    fn contains(&self, target: &Target) -> bool {
        match (self, target) {
            (Root::Local(root), Target::Local(path)) => path.starts_with(root),
            (Root::Remote(root), Target::Remote(url)) => url.starts_with(root.as_str()),
            _ => false,
        }
    }

    /// Whether this prefix lies under `target` (a directory location that
    /// would list it).
    fn is_inside(&self, target: &Target) -> bool {
        match (self, target) {
            (Root::Local(root), Target::Local(path)) => root.starts_with(path),
            (Root::Remote(root), Target::Remote(url)) => root.starts_with(url.as_str()),
            _ => false,
        }
    }
}

/// The prefixes statements may use, and the server's own state they may
/// never touch.
#[derive(Debug, Clone)]
pub struct LocationSandbox {
    /// `None`: any location (a server without users), but the reserved ones.
    roots: Option<Vec<Root>>,
    /// The server's state: refused even under an allowed prefix.
    reserved: Vec<Root>,
    /// The allowed prefixes as configured, for error messages.
    described: String,
}

impl LocationSandbox {
    /// A sandbox allowing what is under each of `allowed` (directories or
    /// object-store URLs; `None` allows every location), except what is under
    /// each of `reserved`. An allowed local directory that does not exist yet
    /// is created, so that it can be resolved.
    pub fn new(allowed: Option<&[String]>, reserved: &[String]) -> crate::Result<Self> {
        let invalid = |prefix: &str, e: String| {
            crate::EngineError::Catalog(format!("invalid location {prefix}: {e}"))
        };
        let roots = match allowed {
            Some(prefixes) => Some(
                prefixes
                    .iter()
                    .map(|prefix| {
                        if let Some(path) = local_path(prefix) {
                            std::fs::create_dir_all(&path).map_err(|e| {
                                invalid(prefix, format!("creating {}: {e}", path.display()))
                            })?;
                        }
                        root(prefix).map_err(|e| invalid(prefix, e.to_string()))
                    })
                    .collect::<crate::Result<Vec<_>>>()?,
            ),
            None => None,
        };
        let reserved = reserved
            .iter()
            .map(|prefix| root(prefix).map_err(|e| invalid(prefix, e.to_string())))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Self {
            roots,
            reserved,
            described: allowed
                .map(|prefixes| prefixes.join(", "))
                .unwrap_or_default(),
        })
    }

    /// `Ok` when `location` (a path, `file://` or object-store URL, maybe
    /// with a glob) lies under an allowed prefix and neither is nor holds the
    /// server's state; for a local directory, every file in it too.
    pub fn check(&self, location: &str) -> Result<()> {
        let url = ListingTableUrl::parse(location).map_err(|e| denied(location, e))?;
        self.check_url(location, &url)
    }

    /// [`Self::check`] of `location`, already interpreted as `url`.
    pub fn check_url(&self, location: &str, url: &ListingTableUrl) -> Result<()> {
        self.check_walking(location, url, |_| Ok(ControlFlow::Continue(())))
            .map(|_| ())
    }

    /// [`Self::check`] of `location`, already interpreted as `url`, showing
    /// `visit` each entry under it, once admitted, when it is a local
    /// directory (see [`local_walk::walk`]); how the walk ended, or `None`
    /// when it is not a local directory.
    pub fn check_walking(
        &self,
        location: &str,
        url: &ListingTableUrl,
        mut visit: impl FnMut(&WalkedEntry<'_>) -> Result<ControlFlow<()>>,
    ) -> Result<Option<Walked>> {
        let target = resolve_url(url).map_err(|e| denied(location, e))?;
        self.check_target(location, &target)?;
        let Target::Local(dir) = &target else {
            return Ok(None);
        };
        if !dir.is_dir() {
            return Ok(None);
        }
        let mut entries = 0usize;
        let walked = local_walk::walk(dir, dir, |entry| {
            entries += 1;
            if entries > MAX_LISTED_FILES {
                return Err(denial(format!(
                    "{PERMISSION_DENIED}: location {location} holds more than \
                     {MAX_LISTED_FILES} files to check"
                )));
            }
            self.check_target(
                &entry.path.display().to_string(),
                &Target::Local(entry.resolved.to_path_buf()),
            )
            .map_err(|e| {
                denial(format!(
                    "{PERMISSION_DENIED}: location {location} lists {}, which leads to {}: {e}",
                    entry.path.display(),
                    entry.resolved.display()
                ))
            })?;
            visit(entry)
        })?;
        Ok(Some(walked))
    }

    /// Checks one resolved target.
    fn check_target(&self, location: &str, target: &Target) -> Result<()> {
        if self
            .reserved
            .iter()
            .any(|reserved| reserved.contains(target) || reserved.is_inside(target))
        {
            return Err(denial(format!(
                "{PERMISSION_DENIED}: location {location} is or holds the server's own state \
                 (catalog, COPY journal, query and job histories, work directories)"
            )));
        }
        match &self.roots {
            Some(roots) if !roots.iter().any(|root| root.contains(target)) => Err(denial(format!(
                "{PERMISSION_DENIED}: location {location} is outside the locations this \
                     server allows ({})",
                self.described
            ))),
            _ => Ok(()),
        }
    }

    /// Checks every location `plan` reads or writes: scans of tables over
    /// files, `COPY … TO`, `INSERT` into tables over files, and tables
    /// created over files.
    pub fn check_plan(&self, plan: &LogicalPlan) -> Result<()> {
        let mut outcome = Ok(());
        plan.apply_with_subqueries(|node| {
            let checked = match node {
                LogicalPlan::TableScan(TableScan { source, .. }) => {
                    match source_as_provider(source) {
                        Ok(provider) => self.check_table(provider.as_ref()),
                        Err(_) => Ok(()),
                    }
                }
                LogicalPlan::Copy(copy) => self.check(&copy.output_url),
                LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => {
                    match source_as_provider(&dml.target) {
                        Ok(provider) => self.check_table(provider.as_ref()),
                        Err(_) => Ok(()),
                    }
                }
                LogicalPlan::Ddl(datafusion::logical_expr::DdlStatement::CreateExternalTable(
                    create,
                )) => create
                    .locations
                    .iter()
                    .try_for_each(|location| self.check(location)),
                _ => Ok(()),
            };
            match checked {
                Ok(()) => Ok(TreeNodeRecursion::Continue),
                Err(e) => {
                    outcome = Err(e);
                    Ok(TreeNodeRecursion::Stop)
                }
            }
        })?;
        outcome
    }

    /// Checks the locations `table` reads, when it is a table over files.
    fn check_table(&self, table: &dyn TableProvider) -> Result<()> {
        match table.downcast_ref::<ListingTable>() {
            Some(listing) => listing
                .table_paths()
                .iter()
                .try_for_each(|url| self.check_url(url.as_str(), url)),
            None => Ok(()),
        }
    }
}

/// The sandbox's refusal: 42501, `message` naming the location and why.
fn denial(message: String) -> DataFusionError {
    PgError::new(SqlState::INSUFFICIENT_PRIVILEGE, message).into_datafusion()
}

/// The sandbox's refusal of `location`, which cannot be interpreted.
fn denied(location: &str, e: DataFusionError) -> DataFusionError {
    denial(format!("{PERMISSION_DENIED}: location {location}: {e}"))
}

/// A prefix as a [`Root`]: a local path resolved as far as it exists, or an
/// object-store URL prefix.
fn root(prefix: &str) -> Result<Root> {
    Ok(match resolve_location(prefix)? {
        Target::Local(path) => Root::Local(path),
        Target::Remote(url) => Root::Remote(url),
    })
}

/// The local path `location` names, when it names one (for creating it).
fn local_path(location: &str) -> Option<PathBuf> {
    let url = ListingTableUrl::parse(location).ok()?;
    (url.scheme() == "file").then(|| PathBuf::from(format!("/{}", url.prefix().as_ref())))
}

/// Where `location` leads, interpreted as DataFusion interprets it: the
/// part before any glob, `..` resolved, the scheme in lower case; a local
/// path then has its symlinks followed.
fn resolve_location(location: &str) -> Result<Target> {
    resolve_url(&ListingTableUrl::parse(location)?)
}

/// Where `url` leads (see [`resolve_location`]).
fn resolve_url(url: &ListingTableUrl) -> Result<Target> {
    let prefix = url.prefix().as_ref();
    match url.scheme() {
        "file" => resolve(&PathBuf::from(format!("/{prefix}")))
            .map(Target::Local)
            .ok_or_else(|| DataFusionError::Plan("the path cannot be resolved".into())),
        scheme => {
            let host = url.get_url().host_str().unwrap_or_default();
            let path = if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            };
            Ok(Target::Remote(format!("{scheme}://{host}/{path}")))
        }
    }
}

/// Where `path` leads: its longest existing ancestor canonicalized, then
/// the rest, which may not contain `..`.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut resolved = canonical;
            for component in rest.iter().rev() {
                resolved.push(component);
            }
            return Some(resolved);
        }
        let name = existing.file_name()?.to_os_string();
        if Path::new(&name)
            .components()
            .any(|c| c == Component::ParentDir)
        {
            return None;
        }
        rest.push(name);
        if !existing.pop() {
            return None;
        }
    }
}

/// A table factory (`CREATE EXTERNAL TABLE … STORED AS …`) that checks the
/// location against the sandbox before creating anything.
#[derive(Debug)]
pub struct SandboxedTableFactory {
    inner: Arc<dyn TableProviderFactory>,
    sandbox: Arc<LocationSandbox>,
}

impl SandboxedTableFactory {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn TableProviderFactory>, sandbox: Arc<LocationSandbox>) -> Self {
        Self { inner, sandbox }
    }
}

#[async_trait]
impl TableProviderFactory for SandboxedTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        cmd.locations
            .iter()
            .try_for_each(|location| self.sandbox.check(location))?;
        self.inner.create(state, cmd).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(sandbox: &LocationSandbox, location: &str) {
        let error = sandbox.check(location).unwrap_err().to_string();
        assert!(error.contains(PERMISSION_DENIED), "{location}: {error}");
    }

    #[test]
    fn only_locations_under_the_allowed_prefixes_pass() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("secret")).unwrap();
        let sandbox = LocationSandbox::new(
            Some(&[
                allowed.display().to_string(),
                "s3://lake/shared".to_string(),
            ]),
            &[],
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
        let a = allowed.display();
        for ok in [
            format!("{a}/t/"),
            format!("{a}/new/dir/file.csv"),
            format!("file://{a}/t/*.parquet"),
            format!("FILE://{a}/t/x.csv"),
            "s3://lake/shared/t/".to_string(),
            "s3://lake/shared".to_string(),
            "S3://lake/shared/t/".to_string(),
        ] {
            assert!(sandbox.check(&ok).is_ok(), "{ok}");
        }
        for location in [
            "/etc/".to_string(),
            "/etc/passwd".to_string(),
            "file:///root".to_string(),
            "FILE:///etc/passwd".to_string(),
            "File:/etc/passwd".to_string(),
            format!("{a}/../outside/secret/"),
            format!("{a}/escape/secret/"),
            format!("{a}/nothing/../../outside/"),
            "s3://lake/sharedother/".to_string(),
            "s3://lake/shared/../private/".to_string(),
            "s3://lake/shared/%2E%2E/private/".to_string(),
            "s3://other/shared/".to_string(),
            "gs://lake/shared/".to_string(),
        ] {
            denied(&sandbox, &location);
        }
    }

    #[test]
    fn the_servers_state_is_never_a_location() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("copies")).unwrap();
        std::fs::create_dir_all(data.join("mine")).unwrap();
        let reserved = [
            data.join("copies").display().to_string(),
            data.join("queries.jsonl").display().to_string(),
            "s3://lake/catalog".to_string(),
        ];
        for allowed in [Some(vec![data.display().to_string()]), None] {
            let sandbox = LocationSandbox::new(allowed.as_deref(), &reserved).unwrap();
            let d = data.display();
            assert!(sandbox.check(&format!("{d}/mine/t.csv")).is_ok());
            for location in [
                format!("{d}/copies/aaaa.json"),
                format!("{d}/copies/"),
                format!("{d}/queries.jsonl"),
                format!("file://{d}/QUERIES.jsonl/../queries.jsonl"),
                format!("{d}/"),
                format!("{d}/*.jsonl"),
                "s3://lake/catalog/snapshot-1.json".to_string(),
                "s3://lake/".to_string(),
            ] {
                denied(&sandbox, &location);
            }
        }
    }

    #[test]
    fn a_symlinked_file_inside_a_directory_cannot_lead_out() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        std::fs::create_dir_all(allowed.join("d/nested")).unwrap();
        std::fs::write(dir.path().join("secret.csv"), "x\n").unwrap();
        std::fs::write(allowed.join("d/ok.csv"), "x\n").unwrap();
        let sandbox = LocationSandbox::new(Some(&[allowed.display().to_string()]), &[]).unwrap();
        let d = allowed.join("d");
        assert!(sandbox.check(&format!("{}/", d.display())).is_ok());
        std::os::unix::fs::symlink(dir.path().join("secret.csv"), d.join("nested/p.csv")).unwrap();
        denied(&sandbox, &format!("{}/", d.display()));
        denied(&sandbox, &format!("{}/*.csv", d.display()));
    }
}
