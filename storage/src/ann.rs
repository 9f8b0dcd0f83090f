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
//!
//! Per `StoreOptions::compact_rerank` (by default: where the index's own calibration finds a
//! deep re-rank at the default target), a cosine or dot index also carries the compact
//! re-rank tier (`CompactCodes`, stored list by list: from 256 dimensions the rows randomly
//! rotated at six bits per dimension, 0.75 bytes, under that one byte per dimension; see
//! `CompactKind::for_dim`): candidates are scored on it first and only those its error bound
//! cannot rule out are re-ranked against the mapped vectors, so the vector file is read for a
//! handful of rows per query and need not stay in memory.
//!
//! Every build is calibrated (`glimpse_index::calibrate`): the segment's own recall at each
//! setting is measured on a sample of its rows held out of training, and the resulting recall
//! table is stored in the index file. A search names a recall target (default
//! [`DEFAULT_RECALL_TARGET`]) and each segment answers with the parameters its own table names
//! for it; explicit `nprobe`/`refine` override the table.

use std::path::Path;

use glimpse_index::{
    Calibration, CalibrationOptions, CalibrationPoint, Cancel, CoarseTable, CompactCodes,
    CompactKind, DEFAULT_RECALL_TARGET, IndexError, IndexParams, IvfPqIndex, IvfPqView, Metric,
    Neighbor, RecallGrid, SearchParams, SearchStats, calibration_rows, exact_search,
    measure_recall,
};
use memmap2::Mmap;

use crate::error::{Result, StorageError};
use crate::mmap_f32::{advise_huge_pages, map_file};
use crate::types::{CompactRerank, Rescore};

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
    compact_tier: CompactRerank,
    cancel: Cancel<'_>,
) -> Result<Option<(String, Vec<u8>)>> {
    let opts = CalibrationOptions::default();
    let held_out = calibration_rows(vectors.len() / dim.max(1), &opts);
    match IvfPqIndex::build_holding_out(
        vectors,
        dim,
        metric,
        &IndexParams::default(),
        &held_out,
        cancel,
    ) {
        Ok(ix) => {
            let grid = measure(path, &ix, vectors, &held_out, &opts, cancel)?;
            let bytes = index_bytes(path, &ix, grid.as_ref(), compact_tier, vectors, cancel)?;
            Ok(Some((KIND.to_string(), bytes)))
        }
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
    compact_tier: CompactRerank,
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
    // Borrowed quantizers never saw these rows: any sample of them is held out.
    let opts = CalibrationOptions::default();
    let rows = calibration_rows(vectors.len() / index.dim().max(1), &opts);
    let grid = measure(path, &index, vectors, &rows, &opts, cancel)?;
    let bytes = index_bytes(path, &index, grid.as_ref(), compact_tier, vectors, cancel)?;
    Ok((KIND.to_string(), bytes))
}

/// The index file of a freshly built `index`: its recall table chosen from `grid`, the compact
/// tier as `policy` decides, and, with a tier, each point's recall when ranking on the codes
/// alone and the share of the tier's margin its queries need, both measured on the file as
/// written (so it is written twice).
fn index_bytes(
    path: &Path,
    index: &IvfPqIndex,
    grid: Option<&RecallGrid>,
    policy: CompactRerank,
    vectors: &[f32],
    cancel: Cancel<'_>,
) -> Result<Vec<u8>> {
    let (mut table, compact) = table_and_tier(policy, grid, vectors, index.dim(), index.metric());
    let bytes = index.to_bytes_with(table.as_ref(), compact.as_ref());
    let (Some(g), Some(t), Some(_)) = (grid, table.as_mut(), compact.as_ref()) else {
        return Ok(bytes);
    };
    let err = |detail: String| StorageError::Index {
        path: path.to_path_buf(),
        detail,
    };
    let view = IvfPqView::from_bytes(&bytes).map_err(|e| err(e.to_string()))?;
    match g.measure_codes_only(&view, vectors, t, cancel) {
        Ok(()) => {}
        Err(IndexError::Cancelled) => return Err(interrupted(path)),
        Err(e) => return Err(err(format!("codes-only calibration: {e}"))),
    }
    match g.measure_tier_margin(&view, vectors, t, cancel) {
        Ok(()) => {}
        Err(IndexError::Cancelled) => return Err(interrupted(path)),
        Err(e) => return Err(err(format!("tier margin calibration: {e}"))),
    }
    Ok(index.to_bytes_with(table.as_ref(), compact.as_ref()))
}

/// Candidates per result that the default target's point must re-rank for `Auto` to give an
/// index the compact tier. The tier is used from 24 per result, but below ~64 it gained only
/// 1.1x on the hard mixture for its `dim` bytes per row, and CLIP-like data at 1M (24 per
/// result) would grow its index from 78 to 590 B/vector; from 64 on it measured 1.1–1.5x
/// (docs/benchmarks.md, "Compact re-rank tier").
pub const AUTO_COMPACT_MIN_REFINE: u32 = 64;

/// Whether [`CompactRerank::Auto`] gives the compact tier to an index whose recall table names
/// `point` for the default target.
pub fn auto_builds_compact_tier(point: &CalibrationPoint) -> bool {
    point.uses_compact_tier() && point.refine >= AUTO_COMPACT_MIN_REFINE
}

/// The compact tier's codes for a new index when `policy` asks for them: always for `On`,
/// for `Auto` when the index's own table says a search at the default target re-ranks at
/// least [`AUTO_COMPACT_MIN_REFINE`] candidates per result.
fn compact_codes(
    policy: CompactRerank,
    table: Option<&Calibration>,
    vectors: &[f32],
    dim: usize,
    metric: Metric,
) -> Option<CompactCodes> {
    let wanted = match policy {
        CompactRerank::On => true,
        CompactRerank::Off => false,
        CompactRerank::Auto => table
            .and_then(|t| t.point_for(DEFAULT_RECALL_TARGET))
            .is_some_and(auto_builds_compact_tier),
    };
    wanted
        .then(|| CompactCodes::build(CompactKind::for_dim(dim), vectors, dim, metric))
        .flatten()
}

/// The recall table and the compact tier's codes of a new index: whether it gets the tier
/// follows `policy` and the table costed without it; the stored table is then the one costed
/// for the index as written (with the tier, deeper re-ranks are cheaper, see
/// `RecallGrid::table`).
fn table_and_tier(
    policy: CompactRerank,
    grid: Option<&RecallGrid>,
    vectors: &[f32],
    dim: usize,
    metric: Metric,
) -> (Option<Calibration>, Option<CompactCodes>) {
    let plain = grid.map(|g| g.table(false));
    let compact = compact_codes(policy, plain.as_ref(), vectors, dim, metric);
    let table = match (grid, &compact) {
        (Some(g), Some(_)) => Some(g.table(true)),
        _ => plain,
    };
    (table, compact)
}

/// The recall measurements of a freshly built `index`; `None` when the segment is too small
/// to calibrate (it is then searched with the index's size-derived defaults).
fn measure(
    path: &Path,
    index: &IvfPqIndex,
    vectors: &[f32],
    rows: &[u32],
    opts: &CalibrationOptions,
    cancel: Cancel<'_>,
) -> Result<Option<RecallGrid>> {
    let started = std::time::Instant::now();
    match measure_recall(&index.view(), vectors, rows, opts, cancel) {
        Ok(grid) => {
            if let Some(p) = grid
                .as_ref()
                .map(|g| g.table(false))
                .and_then(|t| t.point_for(DEFAULT_RECALL_TARGET).copied())
            {
                tracing::debug!(
                    path = %path.display(),
                    secs = started.elapsed().as_secs_f64(),
                    nprobe = p.nprobe,
                    refine = p.refine,
                    recall = p.expected_recall(),
                    "index calibrated"
                );
            }
            Ok(grid)
        }
        Err(IndexError::Cancelled) => Err(interrupted(path)),
        Err(e) => Err(StorageError::Index {
            path: path.to_path_buf(),
            detail: format!("calibration: {e}"),
        }),
    }
}

/// How hard a search of an indexed segment works: a recall target, or explicit parameters
/// (each overrides what the segment's recall table names for the target).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct AnnKnobs {
    /// Recall@10 aimed at (default [`DEFAULT_RECALL_TARGET`]); 1.0 searches exactly unless
    /// `nprobe` or `refine` is given.
    pub recall_target: Option<f32>,
    /// Lists probed.
    pub nprobe: Option<usize>,
    /// Candidates re-ranked per result.
    pub refine: Option<usize>,
    /// Whether the final ranking reads the raw rows.
    pub rescore: Rescore,
    /// The margin the compact tier prunes with.
    pub tier_margin: crate::types::TierMargin,
}

/// What one segment's search used: the parameters and the recall its table promised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Chosen {
    /// `None` when the segment was scanned exactly.
    pub nprobe: Option<usize>,
    /// `None` when the segment was scanned exactly.
    pub refine: Option<usize>,
    /// Recall the calibration measured with these parameters; `None` when unknown (an
    /// index without a table, or parameters given by hand).
    pub expected_recall: Option<f32>,
    /// Whether the final ranking reads the raw rows (false: the compact tier's codes alone,
    /// where the index has them).
    pub rescore: bool,
    /// The share of the compact tier's pruning margin the search uses: what the index's table
    /// measured for `k` results ([`Calibration::tier_margin_for`]), 1 (the full margin)
    /// without a tier or a measured table.
    pub tier_margin: f32,
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
    /// The recall table stored with the index (`None` for files from before calibration).
    calibration: Option<Calibration>,
    /// Whether searches can rank on a compact tier (the file has one, and the metric uses it).
    has_compact_tier: bool,
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
        // The compact tier's codes are read at scattered entries of this mapping.
        advise_huge_pages(&map);
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
        let has_compact_tier = view.compact_kind().is_some() && metric != Metric::L2;
        drop(view);
        let calibration = IvfPqView::read_calibration(&map)
            .map_err(|e| StorageError::corrupt(path, 0, e.to_string()))?;
        Ok(Self {
            map,
            coarse,
            calibration,
            has_compact_tier,
            dim,
            metric,
        })
    }

    /// The recall table stored with the index.
    pub(crate) fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// Whether searches can rank on the index's compact tier.
    pub(crate) fn has_compact_tier(&self) -> bool {
        self.has_compact_tier
    }

    /// The parameters a search with `knobs` uses on this segment.
    ///
    /// The table was measured as recall@`table.k` (10) with `table.k·refine` candidates. A
    /// smaller `k` keeps at least that many candidates (its true neighbours are the best of
    /// those ten, so the promise carries over); a larger `k` gets the same multiplier but no
    /// promise (`expected_recall` is `None`: it was not measured).
    pub(crate) fn choose(&self, knobs: &AnnKnobs, k: usize) -> Chosen {
        self.choose_with_point(knobs, k).0
    }

    /// [`choose`](Self::choose), with the recall table's point behind the choice (none for an
    /// exact scan or without a table).
    ///
    /// With [`Rescore::Auto`], no parameters by hand and `k` the table's, a segment whose table
    /// found ranking on the codes alone reaching the target uses that point
    /// ([`Calibration::codes_point_for`]) and reads no raw row; otherwise, or with
    /// [`Rescore::Always`], the target's point with the exact re-rank. [`Rescore::Never`] ranks
    /// on the codes at the target's point, promising the codes-only recall only where it was
    /// measured and `k` is the table's.
    pub(crate) fn choose_with_point(
        &self,
        knobs: &AnnKnobs,
        k: usize,
    ) -> (Chosen, Option<CalibrationPoint>) {
        let target = knobs.recall_target.unwrap_or(DEFAULT_RECALL_TARGET);
        if target >= 1.0 && knobs.nprobe.is_none() && knobs.refine.is_none() {
            let exact = Chosen {
                nprobe: None,
                refine: None,
                expected_recall: Some(1.0),
                rescore: true,
                tier_margin: 1.0,
            };
            return (exact, None);
        }
        let table = self.calibration.as_ref();
        let by_hand = knobs.nprobe.is_some() || knobs.refine.is_some();
        let table_k = table.map_or(1, |c| c.k as usize).max(1);
        let k = k.max(1);
        // The codes-only recalls were measured at the table's k only: another k ranks a
        // different pool (more candidates for fewer results) that nothing measured.
        let codes_point = table
            .filter(|_| {
                knobs.rescore == Rescore::Auto && !by_hand && self.has_compact_tier && k == table_k
            })
            .and_then(|c| c.codes_point_for(target));
        let rescore = match knobs.rescore {
            Rescore::Always => true,
            Rescore::Auto => codes_point.is_none(),
            Rescore::Never => false,
        };
        let point: Option<&CalibrationPoint> =
            codes_point.or_else(|| table.and_then(|c| c.point_for(target)));
        let refine = point.map(|p| {
            let r = p.refine as usize;
            if k < table_k {
                (r * table_k).div_ceil(k)
            } else {
                r
            }
        });
        // Ranked on codes, the promise is the codes-only recall, where it was measured: at the
        // table's k and this point.
        let codes = !rescore && self.has_compact_tier;
        let promise = |p: &CalibrationPoint| {
            if !codes {
                Some(p.expected_recall())
            } else if p.codes_measured() && k == table_k {
                Some(p.expected_codes_recall())
            } else {
                None
            }
        };
        let chosen = Chosen {
            nprobe: knobs.nprobe.or(point.map(|p| p.nprobe as usize)),
            refine: knobs.refine.or(refine),
            expected_recall: if by_hand || k > table_k {
                None
            } else {
                point.and_then(promise)
            },
            rescore,
            tier_margin: match knobs.tier_margin {
                crate::types::TierMargin::Full => 1.0,
                crate::types::TierMargin::Measured => table
                    .filter(|_| self.has_compact_tier)
                    .map_or(1.0, |c| c.tier_margin_for(k)),
            },
        };
        (chosen, point.copied())
    }

    /// Whether `chosen` means an exact scan of the segment (`recall_target` 1).
    pub(crate) fn is_exact(chosen: &Chosen) -> bool {
        chosen.nprobe.is_none() && chosen.refine.is_none() && chosen.expected_recall == Some(1.0)
    }

    /// Top-`k` rows passing `filter`, exact scores, searched through the index with the
    /// parameters `chosen` (from [`choose`](Self::choose); the caller scans exactly when
    /// [`is_exact`](Self::is_exact)); what the search did is added to `stats`.
    pub(crate) fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        k: usize,
        chosen: &Chosen,
        filter: &(dyn Fn(u32) -> bool + Sync),
        stats: &mut SearchStats,
    ) -> Vec<Neighbor> {
        let params = SearchParams {
            k,
            nprobe: chosen.nprobe,
            refine: chosen.refine,
            rescore: chosen.rescore,
            tier_margin: chosen.tier_margin,
        };
        match IvfPqView::from_bytes_with(&self.map, &self.coarse) {
            Ok(view) => view.search_with_stats(query, vectors, &params, Some(filter), stats),
            // Validated at open and immutable since; kept as a safe fallback.
            Err(_) => exact_search(vectors, self.dim, self.metric, query, k, Some(filter)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(refine_at_default: u32) -> Calibration {
        let point = |target: f32, refine: u32| CalibrationPoint {
            target,
            nprobe: 8,
            refine,
            recall_in: target,
            recall_shifted: target,
            reached: true,
            codes_recall_in: 0.0,
            codes_recall_shifted: 0.0,
            codes_reached: false,
        };
        Calibration {
            k: 10,
            queries: 128,
            shift: 0.6,
            // A shallower point for a lower target: only the default target's counts.
            points: vec![
                point(0.9, 8),
                point(DEFAULT_RECALL_TARGET, refine_at_default),
            ],
            tier_margin: 0.0,
        }
    }

    /// `Auto` builds the tier exactly where the default target's search would use it; `On`
    /// and `Off` ignore the table; L2 never gets codes.
    #[test]
    fn the_compact_tier_policy_follows_the_calibrated_re_rank_depth() {
        let dim = 8;
        let rows: Vec<f32> = (0..64 * dim).map(|i| (i % 13) as f32 - 6.0).collect();
        let has = |p: CompactRerank, t: Option<&Calibration>, m: Metric| {
            compact_codes(p, t, &rows, dim, m).is_some()
        };
        let deep = table(AUTO_COMPACT_MIN_REFINE);
        // Deep enough for the tier to be used, not enough for `Auto` to build it.
        let shallow = table(AUTO_COMPACT_MIN_REFINE - 1);
        assert!(shallow.points[1].uses_compact_tier());
        assert!(has(CompactRerank::Auto, Some(&deep), Metric::Cosine));
        assert!(!has(CompactRerank::Auto, Some(&shallow), Metric::Cosine));
        assert!(!has(CompactRerank::Auto, None, Metric::Dot));
        assert!(has(CompactRerank::On, Some(&shallow), Metric::Dot));
        assert!(has(CompactRerank::On, None, Metric::Cosine));
        assert!(!has(CompactRerank::Off, Some(&deep), Metric::Cosine));
        assert!(!has(CompactRerank::On, Some(&deep), Metric::L2));
    }
}
