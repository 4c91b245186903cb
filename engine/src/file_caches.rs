//! Parquet metadata and file statistics cached once per process.
//!
//! DataFusion caches a file's footer (and page index) and its statistics in
//! the runtime environment. The scheduler builds a runtime for every job and
//! executors one per session, so each job listed its tables' files and read
//! every footer again: a few milliseconds per query that single-node
//! DataFusion, keeping one runtime, does not pay. Every runtime Sluice builds
//! shares these two caches instead. Entries are checked against the file's
//! size and modification time when used, so a rewritten file is read afresh.
//! File listings are never cached: a table's files change with writes, and
//! DataFusion's listing cache (on by default, with no expiry) would keep
//! showing a directory as it first listed it.

use std::sync::{Arc, OnceLock};

use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, FileMetadataCache, FileStatisticsCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;

/// The process's caches.
struct FileCaches {
    statistics: Arc<FileStatisticsCache>,
    metadata: Arc<FileMetadataCache>,
}

fn caches() -> &'static FileCaches {
    static CACHES: OnceLock<FileCaches> = OnceLock::new();
    CACHES.get_or_init(|| {
        let defaults = CacheManagerConfig::default();
        FileCaches {
            statistics: Arc::new(
                DefaultCache::new(defaults.file_statistics_cache_limit)
                    .with_name("SluiceFileStatisticsCache"),
            ),
            metadata: Arc::new(
                DefaultCache::new(defaults.metadata_cache_limit)
                    .with_name("SluiceFileMetadataCache"),
            ),
        }
    })
}

/// DataFusion's cache configuration with the process-wide statistics and
/// metadata caches (DataFusion's default sizes: 20 MiB and 50 MiB) and no
/// listing cache.
pub fn shared_cache_config() -> CacheManagerConfig {
    let caches = caches();
    CacheManagerConfig {
        file_statistics_cache: Some(Arc::clone(&caches.statistics)),
        file_metadata_cache: Some(Arc::clone(&caches.metadata)),
        list_files_cache: None,
        list_files_cache_limit: 0,
        ..CacheManagerConfig::default()
    }
}
