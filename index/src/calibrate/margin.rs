//! The compact tier's pruning margin, narrowed to what the index's own queries need.
//!
//! The tier's full margin is a bound on the codes' rounding errors that holds at worst (8-bit
//! codes) or with odds far below one in a billion (rotated 6-bit codes); the errors around
//! the k-th place of real queries use a fraction of it, so most of the raw rows read under
//! the full margin are read for nothing (on the hard mixture at 200k, at the 0.95 point: 59.8
//! raw rows a query under the rotated codes' full 12σ, 18.7 under the 3.8σ measured here, with
//! the same top 10 for 1,000 fresh queries). Each calibration query is searched once, at
//! the table's default-target point, with the index as written, and the share of the full margin it needed to keep its exact top k
//! is recorded (`search::needed_tier_margin`). The table keeps the largest share any query
//! needed, times [`MARGIN_HEADROOM`]: with `n` exchangeable queries a fresh one needs more
//! than all of them with odds below `1/(n+1)` (a fifth of a percent for 512), and the
//! headroom widens the margin by a quarter beyond that. Where a fresh query does need more, the
//! cost is a near-tie swapped at the k-th place, not a lost neighbour far above it.

use rayon::prelude::*;

use super::RecallGrid;
use crate::calibration::{Calibration, CalibrationPoint, DEFAULT_RECALL_TARGET};
use crate::cancel::Cancel;
use crate::error::IndexError;
use crate::layout::IvfPqView;
use crate::params::SearchParams;

/// How much wider than the largest share a calibration query needed the stored margin is.
pub(crate) const MARGIN_HEADROOM: f32 = 1.25;

/// The narrowest share of the full margin a table stores, whatever its queries measured: a
/// sample where no query needed any margin says little about the next query's near-ties.
pub(crate) const MIN_TIER_MARGIN: f32 = 0.05;

impl RecallGrid {
    /// Sets `table.tier_margin` from searches of `view` (the index as written, with its
    /// compact tier) over the calibration queries, at the point of `table` nearest the default
    /// target (see the module doc). Leaves the table as it is without a tier, for L2, or when
    /// no query measured anything.
    pub fn measure_tier_margin(
        &self,
        view: &IvfPqView<'_>,
        vectors: &[f32],
        table: &mut Calibration,
        cancel: Cancel<'_>,
    ) -> Result<(), IndexError> {
        let Some(point) = margin_point(table).filter(|_| self.searches_a_tier(view)) else {
            return Ok(());
        };
        if let Some(n) = self.needed_at(view, vectors, &point, cancel)? {
            table.tier_margin = (n * MARGIN_HEADROOM).clamp(MIN_TIER_MARGIN, 1.0);
        }
        Ok(())
    }

    /// The largest share of the full margin any calibration query needed at `point`; `None`
    /// when no query's search pruned on the tier.
    fn needed_at(
        &self,
        view: &IvfPqView<'_>,
        vectors: &[f32],
        point: &CalibrationPoint,
        cancel: Cancel<'_>,
    ) -> Result<Option<f32>, IndexError> {
        let sample = &self.sample;
        let dim = sample.dim;
        let params = SearchParams {
            k: self.k,
            nprobe: Some(point.nprobe as usize),
            refine: Some(point.refine as usize),
            ..SearchParams::default()
        };
        let shares: Vec<Option<f32>> = (0..sample.truth.len())
            .into_par_iter()
            .map(|i| {
                cancel.check()?;
                let own = sample.own[i];
                let not_own = move |r: u32| r != own;
                Ok(view.needed_tier_margin(
                    &sample.queries[i * dim..(i + 1) * dim],
                    vectors,
                    &params,
                    Some(&not_own),
                ))
            })
            .collect::<Result<_, IndexError>>()?;
        Ok(shares.into_iter().flatten().reduce(f32::max))
    }
}

/// The point a margin is measured at: the default target's (or the first above it; most
/// searches land there), else the highest below it. Searches at every depth prune on the tier
/// where their raw rows are out of memory (deep ones always), so every point can use the
/// margin. One point: the share a query needs grows little with depth (on the hard mixture at
/// 200k, the largest of 512 queries was 0.245 at the 0.95 point, 56:80, and 0.254 at the 0.98
/// point, 88:160, which doubles the candidates), well inside [`MARGIN_HEADROOM`], and each
/// point measured costs ~1.6 % of the build there.
fn margin_point(table: &Calibration) -> Option<CalibrationPoint> {
    table
        .points
        .iter()
        .find(|p| p.target >= DEFAULT_RECALL_TARGET)
        .or(table.points.last())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;
    use crate::search::SearchStats;
    use crate::synthetic::{SyntheticSpec, generate};
    use crate::tier::{CompactCodes, CompactKind};

    /// On the hard mixture with each kind of tier: the measured share is well under the full
    /// margin, and fresh queries (in-distribution and shifted, none of them calibration
    /// queries) searched at it return the rows the full margin returns, while reading fewer
    /// raw rows. Without a tier the table is left as it was.
    #[test]
    fn the_measured_margin_keeps_fresh_queries_top_k_and_reads_fewer_rows() {
        let dim = 256;
        let spec = SyntheticSpec::hard(5_000, 100, dim, 33);
        let data = generate(&spec);
        // The same rows; queries drawn the same way, not moved off the data.
        let inside = generate(&SyntheticSpec {
            query_shift: 0.0,
            ..spec
        });
        let (ix, grid) = crate::calibrate::tests::held_out_grid(&data);
        let fresh: Vec<&[f32]> = (0..data.n_queries())
            .map(|i| data.query(i))
            .chain((0..inside.n_queries()).map(|i| inside.query(i)))
            .collect();
        for kind in [CompactKind::Rotated6, CompactKind::Sq8] {
            let codes =
                CompactCodes::build(kind, &data.vectors, dim, Metric::Cosine).expect("codes");
            let mut table = grid.table(true);
            let bytes = ix.to_bytes_with(Some(&table), Some(&codes));
            let view = IvfPqView::from_bytes(&bytes).expect("view");
            grid.measure_tier_margin(&view, &data.vectors, &mut table, Cancel::NEVER)
                .expect("margin");
            let share = table.tier_margin;
            assert!(
                (MIN_TIER_MARGIN..0.7).contains(&share),
                "{kind:?}: share {share}"
            );
            // Searched at the default point with a deep re-rank, as the tier is used there.
            let point = table.point_for(DEFAULT_RECALL_TARGET).expect("a point");
            let at = |tier_margin: f32| SearchParams {
                k: 10,
                nprobe: Some(point.nprobe as usize),
                refine: Some((point.refine as usize).max(64)),
                tier_margin,
                ..SearchParams::default()
            };
            let (mut full_stats, mut narrow_stats) =
                (SearchStats::default(), SearchStats::default());
            let mut differ = 0;
            for &q in &fresh {
                let full =
                    view.search_with_stats(q, &data.vectors, &at(1.0), None, &mut full_stats);
                let narrow =
                    view.search_with_stats(q, &data.vectors, &at(share), None, &mut narrow_stats);
                differ += usize::from(full != narrow);
            }
            // 2 in 200 allows for the odds the module doc names, not for a systematic loss.
            assert!(
                differ <= 2,
                "{kind:?}: {differ} of {} queries differ",
                fresh.len()
            );
            assert!(
                (narrow_stats.reranked as f64) < 0.8 * full_stats.reranked as f64,
                "{kind:?}: {} raw rows at {share} against {} at the full margin",
                narrow_stats.reranked,
                full_stats.reranked
            );
        }
        let plain = ix.to_bytes_with(Some(&grid.table(false)), None);
        let mut untouched = grid.table(false);
        grid.measure_tier_margin(
            &IvfPqView::from_bytes(&plain).expect("view"),
            &data.vectors,
            &mut untouched,
            Cancel::NEVER,
        )
        .expect("no-op");
        assert_eq!(untouched.tier_margin, 0.0);
    }
}
