//! The one place where segments meet the ANN index crate.
//!
//! A segment with at least `StoreOptions::index_min_rows` rows gets an
//! index file (`index.ivfpq`, written by `IvfPqIndex::to_bytes`) built over
//! its vector file at flush, bulk commit and compaction. At open the file is
//! memory-mapped and validated (`IvfPqView::from_bytes`); searches borrow
//! the mapped sections zero-copy and re-rank exactly against the mapped
//! vectors. Rows are positions in the segment's vector array, so the
//! storage row filter (tombstones, shadowing by newer writes, metadata
//! filter) is passed straight to the index scan.

use std::path::Path;

use glimpse_index::{
    Cancel, CoarseTable, IndexError, IndexParams, IvfPqIndex, IvfPqView, Metric, Neighbor,
    SearchParams, SearchStats, exact_search,
};
use memmap2::Mmap;

use crate::error::{Result, StorageError};
use crate::mmap_f32::map_file;

/// File name of a segment's index.
pub(crate) const INDEX_FILE: &str = "index.ivfpq";

/// Index kind recorded in the segment footer.
const KIND: &str = "ivfpq-v1";

/// Builds an index over `vectors`. `None` when the data is too small to
/// train one (the segment is then searched exactly). Stops with
/// [`StorageError::Interrupted`] once `cancel` is set.
pub(crate) fn build(
    path: &Path,
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    cancel: Cancel<'_>,
) -> Result<Option<(String, Vec<u8>)>> {
    match IvfPqIndex::build(vectors, dim, metric, &IndexParams::default(), cancel) {
        Ok(ix) => Ok(Some((KIND.to_string(), ix.to_bytes()))),
        Err(IndexError::Cancelled) => Err(interrupted(path)),
        Err(e @ (IndexError::NotEnoughData { .. } | IndexError::InvalidParams(_))) => {
            tracing::warn!(path = %path.display(), error = %e, "segment not indexed; it will be searched exactly");
            Ok(None)
        }
        Err(e) => Err(StorageError::Index {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Builds an index over `vectors` with the trained coarse quantizer and
/// codebooks of `template` (another segment's index): no k-means, only
/// assignment and encoding, a fraction of [`build`]'s time.
pub(crate) fn build_like(
    path: &Path,
    template: &SegmentIndex,
    vectors: &[f32],
    cancel: Cancel<'_>,
) -> Result<(String, Vec<u8>)> {
    let err = |detail: String| StorageError::Index {
        path: path.to_path_buf(),
        detail,
    };
    let view = IvfPqView::from_bytes_with(&template.map, &template.coarse)
        .map_err(|e| err(e.to_string()))?;
    let mut index = view.empty_like();
    match index.add(vectors, 0, cancel) {
        Ok(()) => {}
        Err(IndexError::Cancelled) => return Err(interrupted(path)),
        Err(e) => return Err(err(e.to_string())),
    }
    Ok((KIND.to_string(), index.to_bytes()))
}

/// The error of a build for `path` stopped by its `Cancel` flag.
fn interrupted(path: &Path) -> StorageError {
    StorageError::Interrupted(format!("index build for {}", path.display()))
}

/// A memory-mapped, validated index file.
pub(crate) struct SegmentIndex {
    map: Mmap,
    /// Built once here: rebuilding it per query cost more than the search itself.
    coarse: CoarseTable,
    dim: usize,
    metric: Metric,
}

impl SegmentIndex {
    /// Maps and validates the index file at `path` against its segment.
    pub(crate) fn open(
        path: &Path,
        kind: &str,
        dim: usize,
        metric: Metric,
        rows: u32,
    ) -> Result<Self> {
        let err = |detail: String| StorageError::Index {
            path: path.to_path_buf(),
            detail,
        };
        if kind != KIND {
            return Err(err(format!(
                "index kind {kind:?} is not supported by this build"
            )));
        }
        let map =
            map_file(path)?.ok_or_else(|| StorageError::corrupt(path, 0, "empty index file"))?;
        let view = IvfPqView::from_bytes(&map)
            .map_err(|e| StorageError::corrupt(path, 0, e.to_string()))?;
        if view.dim() != dim || view.metric() != metric || view.len() != rows as usize {
            return Err(StorageError::corrupt(
                path,
                0,
                format!(
                    "index describes {} rows of dim {} ({}), segment has {rows} of dim {dim} ({metric})",
                    view.len(),
                    view.dim(),
                    view.metric()
                ),
            ));
        }
        let coarse = view.coarse_table();
        drop(view);
        Ok(Self {
            map,
            coarse,
            dim,
            metric,
        })
    }

    /// Top-`k` rows passing `filter`, exact scores; what the search did is
    /// added to `stats`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        k: usize,
        nprobe: Option<usize>,
        refine: Option<usize>,
        filter: &(dyn Fn(u32) -> bool + Sync),
        stats: &mut SearchStats,
    ) -> Vec<Neighbor> {
        let params = SearchParams { k, nprobe, refine };
        match IvfPqView::from_bytes_with(&self.map, &self.coarse) {
            Ok(view) => view.search_with_stats(query, vectors, &params, Some(filter), stats),
            // Validated at open and immutable since; kept as a safe fallback.
            Err(_) => exact_search(vectors, self.dim, self.metric, query, k, Some(filter)),
        }
    }
}
