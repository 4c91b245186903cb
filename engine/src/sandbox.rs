//! The location sandbox: once a server has users, statements may read and
//! write files only under its allowed prefixes (the data dir, the warehouse
//! and each `--allow-location`), so that SQL cannot become a way to read the
//! host's files.
//!
//! Local paths are resolved as the operating system would open them: the
//! longest existing ancestor is canonicalized (following symlinks and `..`),
//! and what follows it may not climb with `..`. Object-store URLs are
//! compared as text, segment by segment, and may not contain `.` or `..`
//! segments. Checks happen where locations enter plans: tables created over
//! files ([`SandboxedTableFactory`]) and, in the query planner, every scan,
//! `COPY` and `INSERT` of a file-backed table ([`LocationSandbox::check_plan`]).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{CreateExternalTable, LogicalPlan, TableScan, WriteOp};

/// The start of every sandbox error message (the frontend reports it with
/// SQLSTATE 42501).
pub const PERMISSION_DENIED: &str = "permission denied";

/// An allowed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// A canonical local directory.
    Local(PathBuf),
    /// An object-store URL prefix, ending in `/`.
    Remote(String),
}

/// The prefixes statements may use.
#[derive(Debug, Clone)]
pub struct LocationSandbox {
    roots: Vec<Root>,
    /// The prefixes as configured, for error messages.
    described: String,
}

impl LocationSandbox {
    /// A sandbox allowing what is under each of `prefixes` (directories or
    /// object-store URLs). A local directory that does not exist yet is
    /// created, so that it can be resolved.
    pub fn new(prefixes: &[String]) -> crate::Result<Self> {
        let mut roots = Vec::new();
        for prefix in prefixes {
            let root = match remote_url(prefix) {
                Some(url) => {
                    Root::Remote(with_slash(&normalized_remote(&url).ok_or_else(|| {
                        crate::EngineError::Catalog(format!("invalid allowed location {prefix}"))
                    })?))
                }
                None => {
                    let path = local_path(prefix).ok_or_else(|| {
                        crate::EngineError::Catalog(format!("invalid allowed location {prefix}"))
                    })?;
                    std::fs::create_dir_all(&path)
                        .and_then(|()| path.canonicalize())
                        .map(Root::Local)
                        .map_err(|e| {
                            crate::EngineError::Catalog(format!(
                                "allowed location {}: {e}",
                                path.display()
                            ))
                        })?
                }
            };
            roots.push(root);
        }
        Ok(Self {
            roots,
            described: prefixes.join(", "),
        })
    }

    /// `Ok` when `location` (a path, `file://` or object-store URL, maybe
    /// with a glob) lies under an allowed prefix.
    pub fn check(&self, location: &str) -> Result<()> {
        let allowed = match remote_url(location) {
            Some(url) => normalized_remote(&url).is_some_and(|url| {
                self.roots.iter().any(|root| match root {
                    Root::Remote(prefix) => with_slash(&url).starts_with(prefix.as_str()),
                    Root::Local(_) => false,
                })
            }),
            None => local_path(location)
                .and_then(|path| resolve(&without_glob(&path)))
                .is_some_and(|path| {
                    self.roots.iter().any(|root| match root {
                        Root::Local(dir) => path.starts_with(dir),
                        Root::Remote(_) => false,
                    })
                }),
        };
        if allowed {
            return Ok(());
        }
        Err(DataFusionError::Plan(format!(
            "{PERMISSION_DENIED}: location {location} is outside the locations this server \
             allows ({})",
            self.described
        )))
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

    fn check_table(&self, table: &dyn TableProvider) -> Result<()> {
        match table.downcast_ref::<ListingTable>() {
            Some(listing) => listing
                .table_paths()
                .iter()
                .try_for_each(|url| self.check(url.as_str())),
            None => Ok(()),
        }
    }
}

/// `url` when it names an object store (not a local file).
fn remote_url(location: &str) -> Option<url::Url> {
    let url = url::Url::parse(location).ok()?;
    (url.scheme() != "file" && location.contains("://")).then_some(url)
}

/// `scheme://host/path` with `.` and `..` refused (None) and no query.
fn normalized_remote(url: &url::Url) -> Option<String> {
    let raw_path = url.path();
    if raw_path
        .split('/')
        .any(|segment| segment == "." || segment == ".." || segment.contains("%2e%2e"))
    {
        return None;
    }
    let host = url.host_str().unwrap_or_default();
    Some(format!("{}://{host}{}", url.scheme(), raw_path))
}

fn with_slash(text: &str) -> String {
    if text.ends_with('/') {
        text.to_string()
    } else {
        format!("{text}/")
    }
}

/// The absolute local path of a plain path or `file://` URL.
fn local_path(location: &str) -> Option<PathBuf> {
    let path = if location.starts_with("file:") {
        url::Url::parse(location).ok()?.to_file_path().ok()?
    } else {
        PathBuf::from(location)
    };
    std::path::absolute(path).ok()
}

/// The part of `path` before its first component with a glob character.
fn without_glob(path: &Path) -> PathBuf {
    path.components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect()
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

    #[test]
    fn only_locations_under_the_allowed_prefixes_pass() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("secret")).unwrap();
        let sandbox = LocationSandbox::new(&[
            allowed.display().to_string(),
            "s3://lake/shared".to_string(),
        ])
        .unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
        let a = allowed.display();
        for ok in [
            format!("{a}/t/"),
            format!("{a}/new/dir/file.csv"),
            format!("file://{a}/t/*.parquet"),
            "s3://lake/shared/t/".to_string(),
            "s3://lake/shared".to_string(),
        ] {
            assert!(sandbox.check(&ok).is_ok(), "{ok}");
        }
        for denied in [
            "/etc/".to_string(),
            "/etc/passwd".to_string(),
            "file:///root".to_string(),
            format!("{a}/../outside/secret/"),
            format!("{a}/escape/secret/"),
            format!("{a}/nothing/../../outside/"),
            format!("{a}/missing/../t/"),
            "s3://lake/sharedother/".to_string(),
            "s3://lake/shared/../private/".to_string(),
            "s3://other/shared/".to_string(),
            "gs://lake/shared/".to_string(),
        ] {
            let error = sandbox.check(&denied).unwrap_err().to_string();
            assert!(error.contains(PERMISSION_DENIED), "{denied}: {error}");
        }
    }
}
