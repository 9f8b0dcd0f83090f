//! Bulk-loading Parquet shards into a collection: the server's half of
//! step 2 of the pipeline.
//!
//! All shards of one request go into ONE storage bulk writer, so the request
//! is all-or-nothing: any bad row aborts the writer and nothing becomes
//! visible. Ids are upserted, so loading a shard twice leaves one copy.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use glimpse_index::Metric;
use glimpse_storage::{Point, Store};
use serde::Serialize;

use crate::error::ApiError;
use crate::ingest::{self, IngestRow};
use crate::jobs::JobProgress;

/// The answer of a finished bulk load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BulkLoadReport {
    /// Rows read from the shards (duplicates included).
    pub rows: u64,
    /// Ids that did not exist before.
    pub inserted: u64,
    /// Ids that replaced an existing point.
    pub replaced: u64,
    /// Shards read.
    pub shards: u64,
    /// Parquet bytes read.
    pub bytes: u64,
    /// Wall time from start to durable commit.
    pub seconds: f64,
    /// Rows of the collection still waiting for their ANN index when the
    /// load returned: the background thread builds it once loading is quiet,
    /// and those rows are searched exactly (slower, never less accurate)
    /// until then. `GET /v1/collections/{c}` shows the count going to zero.
    pub unindexed_rows: u64,
}

/// Converts an ingest row into a storage point.
pub fn row_to_point(row: IngestRow) -> Point {
    Point {
        id: row.id,
        vector: row.vector,
        image_path: row.image_path,
        image_bytes: row.image_bytes,
        metadata: row.metadata,
    }
}

/// Loads every shard under `paths` into `collection`, creating it (with the
/// data's dimension and cosine) when missing. Blocking: call it from
/// `spawn_blocking` or a plain thread.
///
/// With `root`, every shard found (a folder's files included, symlinks resolved) must lie inside
/// it: 403 otherwise. A load that fails leaves no trace, not even the collection it created.
pub fn bulk_load(
    store: &Store,
    collection: &str,
    paths: &[PathBuf],
    root: Option<&Path>,
    progress: &JobProgress,
) -> Result<BulkLoadReport, ApiError> {
    let existed = store.collection(collection).is_some();
    let out = load_shards(store, collection, paths, root, progress);
    if out.is_err()
        && !existed
        && let Some(c) = store.collection(collection)
        && c.is_empty()
    {
        // Created by this load and still empty: the failed request must change nothing.
        if let Err(e) = store.drop_collection(collection) {
            tracing::warn!(collection, error = %e, "could not remove the collection a failed load created");
        }
    }
    // Parquet pages and staging buffers of a large load are hundreds of MiB; glibc would keep
    // them in its arenas, and a server that loaded once would stay that large.
    glimpse_storage::release_free_heap();
    out
}

fn load_shards(
    store: &Store,
    collection: &str,
    paths: &[PathBuf],
    root: Option<&Path>,
    progress: &JobProgress,
) -> Result<BulkLoadReport, ApiError> {
    let started = Instant::now();
    // Errors name files relative to the import root (or the spool), never by server paths.
    let prefixes: Vec<String> = root
        .into_iter()
        .flat_map(|r| [r.to_path_buf(), r.canonicalize().unwrap_or_default()])
        .chain(
            paths
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf)),
        )
        .map(|p| format!("{}/", p.display()))
        .filter(|p| p.len() > 2)
        .collect();
    let scrub = |message: String| {
        prefixes
            .iter()
            .fold(message, |m, prefix| m.replace(prefix.as_str(), ""))
    };
    let ingest_error =
        |e: ingest::IngestError| ApiError::invalid("invalid_parquet", scrub(e.to_string()));
    let shards = ingest::discover_shards(paths).map_err(ingest_error)?;
    if let Some(root) = root {
        for shard in &shards {
            crate::paths::resolve_inside(root, &shard.to_string_lossy()).map_err(|e| match e {
                crate::paths::PathError::OutsideRoot(_) => ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "outside_import_root",
                    format!(
                        "{} leads outside --import-root (a symlink?)",
                        crate::paths::relative_to(root, shard)
                    ),
                ),
                other => ApiError::invalid("invalid_path", other.to_string()),
            })?;
        }
    }
    if shards.is_empty() {
        return Err(ApiError::invalid(
            "no_shards",
            "no Parquet shards found in the given paths",
        ));
    }
    progress
        .shards_total
        .store(shards.len() as u64, Ordering::Relaxed);

    // Open every shard first: a malformed file or a dimension mismatch is
    // reported before anything is written.
    let mut readers = Vec::with_capacity(shards.len());
    let mut dim = None;
    let mut bytes = 0u64;
    for path in &shards {
        let reader = ingest::ShardReader::open(path).map_err(ingest_error)?;
        bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        progress
            .rows_total
            .fetch_add(reader.num_rows(), Ordering::Relaxed);
        if let Some(d) = reader.dim() {
            match dim {
                None => dim = Some(d),
                Some(prev) if prev != d => {
                    return Err(ApiError::invalid(
                        "dimension_mismatch",
                        format!(
                            "{} has dimension {d} but earlier shards have {prev}",
                            scrub(path.display().to_string())
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        readers.push(reader);
    }

    let coll = match store.collection(collection) {
        Some(c) => c,
        None => {
            let Some(d) = dim else {
                return Err(ApiError::invalid(
                    "empty_shards",
                    "the shards hold no rows, so the new collection's dimension is unknown",
                ));
            };
            store
                .create_collection(collection, d, Metric::Cosine)
                .map_err(ApiError::from)?
        }
    };
    if let Some(d) = dim
        && d != coll.dim()
    {
        return Err(ApiError::invalid(
            "dimension_mismatch",
            format!(
                "the shards have dimension {d} but collection {collection:?} has {}",
                coll.dim()
            ),
        ));
    }

    let mut writer = coll.bulk_writer().map_err(ApiError::from)?;
    let mut rows = 0u64;
    for reader in readers {
        for batch in reader.batches().map_err(ingest_error)? {
            let batch = batch.map_err(ingest_error)?;
            let n = batch.len() as u64;
            for row in batch {
                writer.push(row_to_point(row)).map_err(ApiError::from)?;
            }
            rows += n;
            progress.rows_done.fetch_add(n, Ordering::Relaxed);
        }
        progress.shards_done.fetch_add(1, Ordering::Relaxed);
    }
    let stats = writer.commit().map_err(ApiError::from)?;
    let seconds = started.elapsed().as_secs_f64();
    let m = &crate::metrics::METRICS;
    m.bulk_load_rows_total.inc_by(rows);
    m.bulk_load_bytes_total.inc_by(bytes);
    m.bulk_load_duration_seconds.observe(seconds);
    Ok(BulkLoadReport {
        rows,
        inserted: stats.inserted as u64,
        replaced: stats.replaced as u64,
        shards: shards.len() as u64,
        bytes,
        seconds,
        unindexed_rows: coll.unindexed_rows(),
    })
}
