//! The catalog's file: the schemas and relations users created, in the order
//! they were created, written atomically (a new file renamed over the old one)
//! so that a crash at any moment leaves either the old catalog or the new one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// The file format's version; a file with another one is refused.
const VERSION: u32 = 1;

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

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    contents: CatalogContents,
}

/// The catalog file and the contents last written to it.
#[derive(Debug)]
pub struct CatalogFile {
    path: PathBuf,
    contents: Mutex<CatalogContents>,
}

impl CatalogFile {
    /// Opens the catalog at `path`; a missing file is an empty catalog.
    pub fn open(path: &Path) -> Result<Self> {
        let contents = match std::fs::read(path) {
            Ok(bytes) => {
                let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| {
                    EngineError::Catalog(format!("{} is not a catalog file: {e}", path.display()))
                })?;
                if on_disk.version != VERSION {
                    return Err(EngineError::Catalog(format!(
                        "{} has catalog version {}; this Sluice reads version {VERSION}",
                        path.display(),
                        on_disk.version
                    )));
                }
                on_disk.contents
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogContents::default(),
            Err(e) => {
                return Err(EngineError::Catalog(format!(
                    "reading {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            contents: Mutex::new(contents),
        })
    }

    /// A copy of the contents.
    pub fn contents(&self) -> CatalogContents {
        self.lock().clone()
    }

    /// Applies `change` and writes the result; on a write error the file and
    /// the contents stay as they were.
    pub fn update(&self, change: impl FnOnce(&mut CatalogContents)) -> Result<()> {
        let mut contents = self.lock();
        let mut updated = contents.clone();
        change(&mut updated);
        if updated == *contents {
            return Ok(());
        }
        self.write(&updated)?;
        *contents = updated;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CatalogContents> {
        self.contents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `contents` to a new file beside the catalog, flushes it, and
    /// renames it over the catalog.
    fn write(&self, contents: &CatalogContents) -> Result<()> {
        use std::io::Write;
        let failed = |what: &str, e: std::io::Error| {
            EngineError::Catalog(format!("{what} {}: {e}", self.path.display()))
        };
        let json = serde_json::to_vec_pretty(&OnDisk {
            version: VERSION,
            contents: contents.clone(),
        })
        .map_err(|e| EngineError::Catalog(format!("encoding the catalog: {e}")))?;
        let staging = self
            .path
            .with_extension(format!("json.{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = std::fs::File::create(&staging).and_then(|mut file| {
            file.write_all(&json)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&staging, &self.path)) {
            let _ = std::fs::remove_file(&staging);
            return Err(failed("writing", e));
        }
        // The rename itself reaches the disk with the directory.
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| failed("syncing the directory of", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_survive_reopening_and_leave_no_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        let file = CatalogFile::open(&path).unwrap();
        assert_eq!(file.contents(), CatalogContents::default());
        file.update(|c| {
            c.schemas.push("sales".into());
            c.relations.push(Relation {
                schema: "sales".into(),
                name: "v".into(),
                definition: Definition::View {
                    sql: "CREATE VIEW sales.v AS SELECT 1".into(),
                },
            });
        })
        .unwrap();
        let reopened = CatalogFile::open(&path).unwrap();
        assert_eq!(reopened.contents(), file.contents());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["catalog.json".to_string()]);
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.json");
        std::fs::write(
            &path,
            "{\"version\": 99, \"schemas\": [], \"relations\": []}",
        )
        .unwrap();
        let err = CatalogFile::open(&path).unwrap_err().to_string();
        assert!(err.contains("version 99"), "{err}");
        std::fs::write(&path, "not json").unwrap();
        assert!(CatalogFile::open(&path).is_err());
    }
}
