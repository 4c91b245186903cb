//! Where the catalog is kept: the schemas and relations users created, as a
//! sequence of numbered snapshots under a directory or object-store prefix
//! (`<url>/00000000000000000042.json`).
//!
//! A change is committed by creating the next number's object with a
//! create-if-absent write (`PutMode::Create`: a hard link on a local disk,
//! `If-None-Match: *` on S3, GCS and Azure). Of two frontends committing
//! over the same snapshot exactly one succeeds; the other reads the new
//! snapshot and applies its change again. A snapshot is written whole before
//! it is visible, so a crash leaves the old catalog or the new one. Readers
//! find the newest snapshot by listing the names after the one they know.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// The snapshot format's version; a snapshot with another one is refused.
const VERSION: u32 = 1;

/// How many snapshots are kept besides the newest (older ones are deleted):
/// enough that a reader that listed a moment ago still finds the one it saw.
const KEPT_SNAPSHOTS: u64 = 16;

/// How one relation is restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Definition {
    /// A table over files: a DataFusion-proto scan of it (location, format,
    /// options, schema, partition columns), base64.
    ExternalTable {
        /// The encoded scan.
        scan: String,
    },
    /// A managed table: Parquet files Sluice writes under the warehouse,
    /// in immutable segments (one directory per committed write). The
    /// table is exactly the listed segments; anything else under its
    /// location is an unfinished write, removed at start.
    ManagedTable {
        /// The table's directory URL, ending in `/`.
        location: String,
        /// Committed segment directories under `location`, oldest first.
        segments: Vec<String>,
        /// The encoded scan of the table over those segments (as for
        /// external tables).
        scan: String,
    },
    /// A view: its `CREATE VIEW` statement, planned again when restored.
    View {
        /// The statement's text.
        sql: String,
    },
}

/// A table or view of a user schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// Schema name.
    pub schema: String,
    /// Relation name.
    pub name: String,
    /// How to restore it.
    #[serde(flatten)]
    pub definition: Definition,
}

/// Everything the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogContents {
    /// Schemas created with `CREATE SCHEMA`, in creation order.
    pub schemas: Vec<String>,
    /// Tables and views, in creation order.
    pub relations: Vec<Relation>,
}

/// One snapshot's object.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    contents: CatalogContents,
}

/// A committed catalog: its number (0 = nothing committed yet) and contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Increases by one with every committed change.
    pub number: u64,
    /// The schemas and relations.
    pub contents: CatalogContents,
}

/// The snapshots under one URL.
#[derive(Debug)]
pub struct CatalogStore {
    root: ListingTableUrl,
    /// Resolved from the runtime's object stores when the catalog is
    /// restored.
    store: OnceLock<Arc<dyn ObjectStore>>,
}

impl CatalogStore {
    /// The catalog at `url`: a local directory or an object-store prefix.
    pub fn new(url: &str) -> Result<Self> {
        let url = if url.ends_with('/') {
            url.to_string()
        } else {
            format!("{url}/")
        };
        let root = ListingTableUrl::parse(&url)
            .map_err(|e| EngineError::datafusion(format!("parsing the catalog URL {url}"), e))?;
        Ok(Self {
            root,
            store: OnceLock::new(),
        })
    }

    /// The catalog's URL, ending in `/`.
    pub fn url(&self) -> &str {
        self.root.as_str()
    }

    /// Finds the catalog's object store among `runtime`'s.
    pub(super) fn attach(&self, runtime: &RuntimeEnv) -> Result<()> {
        let store = runtime.object_store(&self.root).map_err(|e| {
            EngineError::datafusion(format!("opening the catalog at {}", self.url()), e)
        })?;
        let _ = self.store.set(store);
        Ok(())
    }

    fn store(&self) -> Result<&Arc<dyn ObjectStore>> {
        self.store.get().ok_or_else(|| {
            EngineError::Catalog(format!("the catalog at {} is not opened", self.url()))
        })
    }

    fn path(&self, number: u64) -> ObjectPath {
        self.root
            .prefix()
            .clone()
            .join(format!("{number:020}.json"))
    }

    /// The newest snapshot, or an empty one numbered 0 when none was committed.
    pub async fn latest(&self) -> Result<Snapshot> {
        Ok(self.newer_than(0).await?.unwrap_or_default())
    }

    /// The newest snapshot if its number is above `number`.
    pub async fn newer_than(&self, number: u64) -> Result<Option<Snapshot>> {
        let store = self.store()?;
        // A snapshot deleted between the listing and the read was replaced
        // by a newer one: list again.
        for _ in 0..3 {
            let newest = store
                .list_with_offset(Some(self.root.prefix()), &self.path(number))
                .try_filter_map(|meta| {
                    futures::future::ready(Ok(meta
                        .location
                        .filename()
                        .and_then(snapshot_number)
                        .filter(|n| *n > number)))
                })
                .try_fold(None, |newest: Option<u64>, n| async move {
                    Ok(Some(newest.map_or(n, |newest| newest.max(n))))
                })
                .await
                .map_err(|e| self.failed("listing", e))?;
            let Some(newest) = newest else {
                return Ok(None);
            };
            match store.get(&self.path(newest)).await {
                Ok(object) => {
                    let bytes = object
                        .bytes()
                        .await
                        .map_err(|e| self.failed("reading", e))?;
                    return Ok(Some(Snapshot {
                        number: newest,
                        contents: self.decode(newest, &bytes)?,
                    }));
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.failed("reading", e)),
            }
        }
        Err(EngineError::Catalog(format!(
            "the catalog at {} changes faster than it can be read",
            self.url()
        )))
    }

    /// Commits `contents` as the snapshot after `base`; `false` when another
    /// writer committed that number first (nothing was written).
    pub async fn commit(&self, base: u64, contents: &CatalogContents) -> Result<bool> {
        let store = self.store()?;
        let json = serde_json::to_vec_pretty(&OnDisk {
            version: VERSION,
            contents: contents.clone(),
        })
        .map_err(|e| EngineError::Catalog(format!("encoding the catalog: {e}")))?;
        let number = base + 1;
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .put_opts(&self.path(number), PutPayload::from(json), options)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
            Err(e) => return Err(self.failed("writing", e)),
        }
        if number > KEPT_SNAPSHOTS {
            let old = self.path(number - KEPT_SNAPSHOTS);
            if let Err(e) = store.delete(&old).await {
                tracing::debug!("cannot delete the old catalog snapshot {old}: {e}");
            }
        }
        Ok(true)
    }

    /// Deletes the snapshots older than the last [`KEPT_SNAPSHOTS`] before
    /// `newest` (left by earlier processes whose deletes failed).
    pub async fn prune(&self, newest: u64) -> Result<()> {
        let store = self.store()?;
        let old: Vec<ObjectPath> = store
            .list(Some(self.root.prefix()))
            .try_filter(|meta| {
                futures::future::ready(
                    meta.location
                        .filename()
                        .and_then(snapshot_number)
                        .is_some_and(|n| n + KEPT_SNAPSHOTS <= newest),
                )
            })
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| self.failed("listing", e))?;
        for path in old {
            store
                .delete(&path)
                .await
                .map_err(|e| self.failed("pruning", e))?;
        }
        Ok(())
    }

    fn decode(&self, number: u64, bytes: &[u8]) -> Result<CatalogContents> {
        let what = format!("{}{number:020}.json", self.url());
        decode(&what, bytes)
    }

    fn failed(&self, what: &str, e: object_store::Error) -> EngineError {
        EngineError::Catalog(format!("{what} the catalog at {}: {e}", self.url()))
    }
}

/// The number of a snapshot's file name.
fn snapshot_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn decode(what: &str, bytes: &[u8]) -> Result<CatalogContents> {
    let on_disk: OnDisk = serde_json::from_slice(bytes)
        .map_err(|e| EngineError::Catalog(format!("{what} is not a catalog snapshot: {e}")))?;
    if on_disk.version != VERSION {
        return Err(EngineError::Catalog(format!(
            "{what} has catalog version {}; this Sluice reads version {VERSION}",
            on_disk.version
        )));
    }
    Ok(on_disk.contents)
}

/// The contents of the single-file catalog earlier versions kept
/// (`<data-dir>/catalog.json`, same format), if there is one.
pub fn read_legacy_file(path: &Path) -> Result<Option<CatalogContents>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&path.display().to_string(), &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::Catalog(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> CatalogStore {
        let store = CatalogStore::new(dir.to_str().unwrap()).unwrap();
        store.attach(&RuntimeEnv::default()).unwrap();
        store
    }

    fn with_schema(name: &str) -> CatalogContents {
        CatalogContents {
            schemas: vec![name.into()],
            relations: vec![Relation {
                schema: name.into(),
                name: "v".into(),
                definition: Definition::View {
                    sql: format!("CREATE VIEW {name}.v AS SELECT 1"),
                },
            }],
        }
    }

    #[tokio::test]
    async fn one_of_two_commits_over_a_snapshot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (store(dir.path()), store(dir.path()));
        assert_eq!(first.latest().await.unwrap(), Snapshot::default());
        assert!(first.commit(0, &with_schema("a")).await.unwrap());
        assert!(!second.commit(0, &with_schema("b")).await.unwrap());
        let newest = second.newer_than(0).await.unwrap().unwrap();
        assert_eq!(newest.number, 1);
        assert_eq!(newest.contents, with_schema("a"));
        assert!(second.commit(1, &with_schema("b")).await.unwrap());
        assert_eq!(first.newer_than(1).await.unwrap().unwrap().number, 2);
        assert_eq!(first.newer_than(2).await.unwrap(), None);
    }

    #[tokio::test]
    async fn old_snapshots_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        for n in 0..KEPT_SNAPSHOTS + 5 {
            assert!(store
                .commit(n, &with_schema(&format!("s{n}")))
                .await
                .unwrap());
        }
        let count = || std::fs::read_dir(dir.path()).unwrap().count() as u64;
        assert_eq!(count(), KEPT_SNAPSHOTS);
        let latest = store.latest().await.unwrap();
        assert_eq!(latest.number, KEPT_SNAPSHOTS + 5);
        assert_eq!(
            latest.contents,
            with_schema(&format!("s{}", KEPT_SNAPSHOTS + 4))
        );
    }

    #[tokio::test]
    async fn a_foreign_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{:020}.json", 1));
        std::fs::write(
            &path,
            "{\"version\": 99, \"schemas\": [], \"relations\": []}",
        )
        .unwrap();
        let err = store(dir.path()).latest().await.unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
        std::fs::write(&path, "not json").unwrap();
        assert!(store(dir.path()).latest().await.is_err());
    }
}
