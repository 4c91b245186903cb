//! Managed tables: Parquet tables Sluice writes itself, under the warehouse.
//!
//! A managed table lives in its own directory, `<warehouse>/<schema>/<name>-<id>/`,
//! as a list of **segments**: the directories a committed write made (one, or
//! one per task of a [`crate::parallel_write`] inside the write's directory),
//! never changed once committed. Readers scan exactly the segments the catalog lists, so a
//! write becomes visible in one step, when the catalog records its segment
//! (`INSERT` appends one, `INSERT OVERWRITE` and `TRUNCATE` replace the list).
//! A write that fails or whose process dies leaves a segment the catalog never
//! listed; [`sweep`] removes it, and anything else under the warehouse that no
//! table lists, when the server starts.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// The directory all managed tables live under, and its object store.
#[derive(Debug)]
pub struct Warehouse {
    root: ListingTableUrl,
    /// Resolved from the runtime's object stores when the catalog is
    /// restored; until then nothing is written or removed.
    store: OnceLock<Arc<dyn ObjectStore>>,
}

impl Warehouse {
    /// The warehouse at `url` (a local directory or an object-store URL).
    pub fn new(url: &str) -> Result<Self> {
        let url = if url.ends_with('/') {
            url.to_string()
        } else {
            format!("{url}/")
        };
        Ok(Self {
            root: ListingTableUrl::parse(&url)?,
            store: OnceLock::new(),
        })
    }

    /// The warehouse's URL, ending in `/`.
    pub fn url(&self) -> &str {
        self.root.as_str()
    }

    /// Finds the warehouse's object store among `runtime`'s.
    pub(super) fn attach(&self, runtime: &RuntimeEnv) -> Result<()> {
        let store = runtime.object_store(&self.root)?;
        let _ = self.store.set(store);
        Ok(())
    }

    /// A new, unused directory for table `name` of `schema`.
    pub(super) fn new_table_location(&self, schema: &str, name: &str) -> String {
        format!("{}{schema}/{name}-{}/", self.root.as_str(), unique_id())
    }

    /// Removes the files of the given table locations or segments (URLs
    /// ending in `/`) in the background: a dropped table, replaced segments.
    /// What is left when the process stops first is swept at the next start.
    pub(super) fn remove_later(&self, urls: Vec<String>) {
        self.remove_after(urls, Duration::ZERO);
    }

    /// Like [`Self::remove_later`], once `delay` has passed (for scans
    /// planned before the files were replaced).
    pub(super) fn remove_after(&self, urls: Vec<String>, delay: Duration) {
        let (Some(store), Ok(runtime)) = (self.store.get(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let store = Arc::clone(store);
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            for url in urls {
                if let Err(e) = remove_prefix(&store, &url).await {
                    tracing::warn!("cannot remove {url}: {e}");
                }
            }
        });
    }
}

/// A time-ordered unique name for a segment or table directory.
pub fn unique_id() -> String {
    let millis = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{millis:012x}{}", &random[..8])
}

/// The URL of `segment` of the table at `location`.
pub fn segment_url(location: &str, segment: &str) -> String {
    format!("{location}{segment}/")
}

/// The directories of the writes that made `segments` of the table at
/// `location` (URLs ending in `/`): a parallel write's segments are
/// directories inside its write's, and go together.
pub fn write_directories(location: &str, segments: &[String]) -> Vec<String> {
    let mut writes: Vec<&str> = segments
        .iter()
        .map(|segment| segment.split('/').next().unwrap_or(segment))
        .collect();
    writes.dedup();
    writes
        .into_iter()
        .map(|write| segment_url(location, write))
        .collect()
}

/// Where an empty managed table points its scan: a directory nothing is
/// ever written to, so that the scan keeps the table's columns.
const EMPTY_SEGMENT: &str = "_empty";

/// The provider a managed table is read through: a Parquet listing table
/// over its committed segments.
pub(super) fn listing_table(
    location: &str,
    segments: &[String],
    schema: SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    let urls = if segments.is_empty() {
        vec![ListingTableUrl::parse(segment_url(
            location,
            EMPTY_SEGMENT,
        ))?]
    } else {
        segments
            .iter()
            .map(|segment| ListingTableUrl::parse(segment_url(location, segment)))
            .collect::<Result<_>>()?
    };
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Removes everything under the warehouse that is not a listed segment of
/// one of `tables` (`(location, segments)`): unfinished writes, tables
/// created by a `CREATE TABLE … AS` that never committed, dropped tables.
/// With `min_age`, a directory that had a file written more recently is
/// left (it may be another frontend's write in progress).
pub(super) async fn sweep(
    warehouse: &Warehouse,
    tables: &[(String, Vec<String>)],
    min_age: Option<Duration>,
) -> Result<()> {
    let Some(store) = warehouse.store.get() else {
        return Ok(());
    };
    let segments = tables.iter().flat_map(|(location, segments)| {
        segments
            .iter()
            .map(|segment| ListingTableUrl::parse(segment_url(location, segment)))
    });
    let removed = match local_dir(&warehouse.root) {
        // Listing a local directory through object_store hides the staging
        // files of unfinished uploads (`name#1`): sweep the directories.
        Some(root) => {
            let keep = segments
                .map(|url| url.map(|url| local_dir(&url)))
                .collect::<Result<HashSet<_>>>()?;
            let keep = keep.into_iter().flatten().collect();
            sweep_local(&root, &keep, cutoff(min_age)).map_err(DataFusionError::IoError)?
        }
        None => {
            let keep = segments
                .map(|url| url.map(|url| url.prefix().clone()))
                .collect::<Result<HashSet<_>>>()?;
            let kept = |path: &Path| {
                let mut prefix = Path::default();
                path.parts().any(|part| {
                    prefix = prefix.clone().join(part);
                    keep.contains(&prefix)
                })
            };
            let objects = list_under(store, warehouse.root.prefix()).await?;
            // Directories with a recent file are left whole.
            let recent: HashSet<Path> = match cutoff(min_age) {
                Some(cutoff) => objects
                    .iter()
                    .filter(|meta| SystemTime::from(meta.last_modified) > cutoff)
                    .map(|meta| parent(&meta.location))
                    .collect(),
                None => HashSet::new(),
            };
            let doomed: Vec<Path> = objects
                .into_iter()
                .map(|meta| meta.location)
                .filter(|path| !kept(path) && !recent.contains(&parent(path)))
                .collect();
            delete(store, &doomed).await?;
            doomed.len()
        }
    };
    if removed > 0 {
        tracing::info!(
            "removed {removed} files or directories of unfinished or dropped writes from the \
             warehouse {}",
            warehouse.url()
        );
    }
    Ok(())
}

/// The local directory of a `file://` URL.
fn local_dir(url: &ListingTableUrl) -> Option<PathBuf> {
    if url.scheme() != "file" {
        return None;
    }
    url::Url::parse(url.as_str()).ok()?.to_file_path().ok()
}

/// The time before which files are old enough to sweep.
fn cutoff(min_age: Option<Duration>) -> Option<SystemTime> {
    min_age.map(|age| SystemTime::now() - age)
}

/// The directory of an object.
fn parent(path: &Path) -> Path {
    let parts: Vec<_> = path.parts().collect();
    Path::from_iter(parts[..parts.len().saturating_sub(1)].iter().cloned())
}

/// Removes what is under `dir` but neither in `keep` nor on the way to it,
/// nor (with a `cutoff`) modified after `cutoff`; returns how many files and
/// directories it removed.
fn sweep_local(
    dir: &std::path::Path,
    keep: &HashSet<PathBuf>,
    cutoff: Option<SystemTime>,
) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if keep.contains(&path) {
            continue;
        }
        if path.is_dir() && keep.iter().any(|kept| kept.starts_with(&path)) {
            removed += sweep_local(&path, keep, cutoff)?;
        } else if cutoff.is_some_and(|cutoff| modified_after(&path, cutoff)) {
            continue;
        } else if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
            removed += 1;
        } else {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether `path` or anything under it was modified after `cutoff`.
fn modified_after(path: &std::path::Path, cutoff: SystemTime) -> bool {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if metadata.modified().is_ok_and(|modified| modified > cutoff) {
        return true;
    }
    metadata.is_dir()
        && std::fs::read_dir(path).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| modified_after(&entry.path(), cutoff))
        })
}

/// Removes the files under `url` (a directory URL).
pub(crate) async fn remove_prefix(store: &Arc<dyn ObjectStore>, url: &str) -> Result<()> {
    let url = ListingTableUrl::parse(url)?;
    if let Some(dir) = local_dir(&url) {
        return match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataFusionError::IoError(e)),
            _ => Ok(()),
        };
    }
    let objects = list_under(store, url.prefix()).await?;
    delete(
        store,
        &objects
            .into_iter()
            .map(|meta| meta.location)
            .collect::<Vec<_>>(),
    )
    .await
}

/// The objects under `prefix`.
async fn list_under(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Vec<ObjectMeta>> {
    Ok(store.list(Some(prefix)).try_collect().await?)
}

/// Deletes the objects at `paths`.
async fn delete(store: &Arc<dyn ObjectStore>, paths: &[Path]) -> Result<()> {
    for path in paths {
        store.delete(path).await?;
    }
    Ok(())
}
