//! Small segments of a managed table merged in the background.
//!
//! Every committed write adds a segment (a directory of Parquet files) to
//! its table. Writes of a few rows each (INSERTs outside a transaction
//! block, small batches) would leave a table of many tiny segments: each
//! scan lists every one of their directories and opens every file. After a
//! write commits, [`compact_later`] looks at the table; once it holds more
//! than [`MAX_SEGMENTS`] segments of which at least two are under
//! [`SMALL_SEGMENT_BYTES`], a task of its own reads those small ones, in
//! order, into one new segment and commits it in their place
//! ([`SegmentChange::Compact`]): one catalog update, so readers see the
//! rows once either way. The merged segments' files are removed only after
//! [`REMOVAL_DELAY`], so scans planned before the commit still read them. If
//! the table changed meanwhile (a TRUNCATE, an INSERT OVERWRITE, another
//! compaction) the commit fails and the new segment is dropped. A table is
//! compacted by one task at a time per process; the catalog's optimistic
//! commit keeps frontends sharing a catalog apart.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use datafusion::catalog::SchemaProvider;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use crate::catalog::managed::segment_url;
use crate::catalog::{managed_segments_table, managed_table, SegmentChange};
use crate::segment_sink::{Sink, WriteSettings};

/// Segments a table holds before its small ones are merged.
pub const MAX_SEGMENTS: usize = 16;

/// A segment whose files total less is merged with the other small ones.
pub const SMALL_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// How long the files of merged segments stay for scans already planned.
pub const REMOVAL_DELAY: Duration = Duration::from_secs(300);

/// Tables (by directory) being compacted by this process.
static COMPACTING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Starts compacting the managed table `table` of `schema` in the
/// background when it has more than [`MAX_SEGMENTS`] segments and none of
/// its compactions is running.
pub fn compact_later(settings: &WriteSettings, schema: &Arc<dyn SchemaProvider>, table: &str) {
    let Some(managed) = managed_table(schema, table) else {
        return;
    };
    if managed.segments.len() <= MAX_SEGMENTS {
        return;
    }
    let location = managed.location;
    let claimed = COMPACTING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(location.clone());
    if !claimed {
        return;
    }
    let (settings, schema, table) = (settings.clone(), Arc::clone(schema), table.to_string());
    tokio::spawn(async move {
        if let Err(e) = compact(&settings, schema, &table).await {
            tracing::info!("compacting {table}: {e}");
        }
        COMPACTING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&location);
    });
}

/// Merges the small segments of `table` into one; returns how many were
/// merged (none when fewer than two are small).
pub async fn compact(
    settings: &WriteSettings,
    schema: Arc<dyn SchemaProvider>,
    table: &str,
) -> Result<usize> {
    let Some(managed) = managed_table(&schema, table) else {
        return Ok(0);
    };
    let root = ListingTableUrl::parse(&managed.location)?;
    let store = settings.runtime().object_store(root.object_store())?;
    let mut small = Vec::new();
    for segment in &managed.segments {
        if segment_bytes(&store, &managed.location, segment).await? < SMALL_SEGMENT_BYTES {
            small.push(segment.clone());
        }
    }
    if small.len() < 2 {
        return Ok(0);
    }
    let Some(provider) = schema.table(table).await? else {
        return Ok(0);
    };
    let table_schema = provider.schema();
    // Read with a plain local session over the same object stores: the
    // rows go straight from the old files to the new ones.
    let local =
        SessionContext::new_with_config_rt(SessionConfig::new(), Arc::clone(settings.runtime()));
    let scan = managed_segments_table(&managed.location, &small, Arc::clone(&table_schema))?;
    let mut batches = local.read_table(scan)?.execute_stream().await?;
    let mut sink = Sink::open(
        settings,
        Arc::clone(&schema),
        table,
        &managed.location,
        table_schema,
    )?;
    while let Some(batch) = batches.next().await {
        sink.send(batch?).await?;
    }
    let merged = small.len();
    sink.commit_as(|write| SegmentChange::Compact {
        merged: small,
        into: write,
    })
    .await?;
    Ok(merged)
}

/// The bytes of the files of `segment` of the table at `location`.
async fn segment_bytes(store: &Arc<dyn ObjectStore>, location: &str, segment: &str) -> Result<u64> {
    let url = ListingTableUrl::parse(segment_url(location, segment))?;
    let sizes: Vec<u64> = store
        .list(Some(url.prefix()))
        .map_ok(|object| object.size)
        .try_collect()
        .await?;
    Ok(sizes.iter().sum())
}
