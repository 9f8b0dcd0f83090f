//! The recall of ranking on the compact tier's codes alone (`SearchParams::rescore` off), for
//! each point of a chosen table.
//!
//! The rank model of the grid cannot predict it: whether a true neighbour survives depends on
//! the code scores of the other candidates. So each distinct point's parameters are searched
//! for real, once per calibration query (with the query's own row filtered out, as its truth
//! leaves it out), with the index as written, tier included. A point's codes-only recall is
//! reported less the same selection optimism as its plain recall, and it counts as reaching
//! its target by the same rule: less `margin_se` standard errors of the codes-only sample.
//! Points are measured in ascending order up to the first that falls short; those above keep
//! a codes-only recall of 0 (not measured) and never serve codes-only searches.

use std::collections::HashMap;

use rayon::prelude::*;

use super::RecallGrid;
use crate::calibration::Calibration;
use crate::cancel::Cancel;
use crate::error::IndexError;
use crate::layout::IvfPqView;
use crate::metric::Metric;
use crate::params::SearchParams;

/// Mean and standard error of each set's codes-only recall at one point.
#[derive(Debug, Clone, Copy)]
struct CodesRecall {
    inside: (f32, f32),
    shifted: (f32, f32),
}

impl RecallGrid {
    /// Fills in the codes-only recalls of every point of `table` (chosen from this grid) by
    /// searching `view`, the index as written, over `vectors`. Leaves the table as it is when
    /// the index has no compact tier, or an L2 metric (which never ranks on one).
    pub fn measure_codes_only(
        &self,
        view: &IvfPqView<'_>,
        vectors: &[f32],
        table: &mut Calibration,
        cancel: Cancel<'_>,
    ) -> Result<(), IndexError> {
        let sample = &self.sample;
        if !self.searches_a_tier(view) {
            return Ok(());
        }
        let mut measured: HashMap<(u32, u32), CodesRecall> = HashMap::new();
        for p in &mut table.points {
            let key = (p.nprobe, p.refine);
            let r = match measured.get(&key) {
                Some(r) => *r,
                None => {
                    let r = self.codes_recall(view, vectors, key, cancel)?;
                    measured.insert(key, r);
                    r
                }
            };
            // The same optimism the plain recall was reported less.
            let optimism = self
                .settings
                .iter()
                .find(|s| (s.nprobe as u32, s.refine as u32) == key)
                .map_or(0.0, |s| (s.recall_in - p.recall_in).max(0.0));
            let report = |mean: f32| (mean - optimism).clamp(0.0, 1.0);
            p.codes_recall_in = report(r.inside.0);
            p.codes_recall_shifted = report(r.shifted.0);
            let clears = |(mean, se): (f32, f32)| report(mean) - sample.margin_se * se >= p.target;
            p.codes_reached = p.reached && clears(r.inside) && clears(r.shifted);
            // Upward until the first point whose codes fall short: the codes' loss against the
            // exact re-rank grows with the target (near-ties the codes cannot order; on both
            // benchmark mixtures no point above the first shortfall reached its target), and
            // the deep points above would cost most of the searches.
            if !p.codes_reached {
                break;
            }
        }
        Ok(())
    }

    /// Whether `view` has a compact tier its searches use (not L2) and this grid's queries can
    /// search it: what both measurements on the written index need.
    pub(super) fn searches_a_tier(&self, view: &IvfPqView<'_>) -> bool {
        view.compact_kind().is_some()
            && view.metric() != Metric::L2
            && view.dim() == self.sample.dim
            && !self.sample.truth.is_empty()
    }

    /// Each set's codes-only recall at (`nprobe`, `refine`).
    fn codes_recall(
        &self,
        view: &IvfPqView<'_>,
        vectors: &[f32],
        (nprobe, refine): (u32, u32),
        cancel: Cancel<'_>,
    ) -> Result<CodesRecall, IndexError> {
        let sample = &self.sample;
        let dim = sample.dim;
        let params = SearchParams {
            k: self.k,
            nprobe: Some(nprobe as usize),
            refine: Some(refine as usize),
            rescore: false,
            tier_margin: 1.0,
        };
        let recalls: Vec<f32> = (0..sample.truth.len())
            .into_par_iter()
            .map(|i| {
                cancel.check()?;
                let want = &sample.truth[i];
                if want.is_empty() {
                    return Ok(1.0);
                }
                let own = sample.own[i];
                let not_own = move |r: u32| r != own;
                let got = view.search(
                    &sample.queries[i * dim..(i + 1) * dim],
                    vectors,
                    &params,
                    Some(&not_own),
                );
                let hits = got.iter().filter(|g| want.contains(&g.row)).count();
                Ok(hits as f32 / want.len() as f32)
            })
            .collect::<Result<_, IndexError>>()?;
        let (inside, shifted) = recalls.split_at(recalls.len() / 2);
        Ok(CodesRecall {
            inside: mean_se(inside),
            shifted: mean_se(shifted),
        })
    }
}

/// Mean and standard error of `values`.
fn mean_se(values: &[f32]) -> (f32, f32) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    (mean as f32, (var / n).sqrt() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::exact_search_batch;
    use crate::synthetic::{SyntheticSpec, generate};
    use crate::tier::{CompactCodes, CompactKind};

    /// On the hard mixture with the rotated tier: every point gets a codes-only recall, never
    /// above its exact re-rank's (the same candidates, ranked less exactly), some point's codes
    /// reach its target, and where they do, fresh queries ranked on the codes alone land at
    /// that target (within the noise of 100 queries).
    #[test]
    fn codes_only_recalls_are_measured_and_hold_on_fresh_queries() {
        let dim = 256;
        let data = generate(&SyntheticSpec::hard(5_000, 100, dim, 21));
        let (ix, grid) = crate::calibrate::tests::held_out_grid(&data);
        let codes = CompactCodes::build(CompactKind::Rotated6, &data.vectors, dim, Metric::Cosine)
            .expect("codes");
        let mut table = grid.table(true);
        let bytes = ix.to_bytes_with(Some(&table), Some(&codes));
        let view = IvfPqView::from_bytes(&bytes).expect("view");
        grid.measure_codes_only(&view, &data.vectors, &mut table, Cancel::NEVER)
            .expect("codes-only recalls");
        // Measured upward through the first point that falls short, none above it.
        let shortfall = table
            .points
            .iter()
            .position(|p| !p.codes_reached)
            .expect("the codes alone do not reach 0.995 on the hard mixture");
        for (i, p) in table.points.iter().enumerate() {
            if i > shortfall {
                assert_eq!((p.codes_recall_in, p.codes_reached), (0.0, false), "{p:?}");
                continue;
            }
            assert!(p.codes_recall_in > 0.0, "{p:?}");
            assert!(p.codes_recall_in <= p.recall_in + 0.01, "{p:?}");
            assert!(p.codes_recall_shifted <= p.recall_shifted + 0.01, "{p:?}");
            assert!(!p.codes_reached || p.reached, "{p:?}");
        }
        let reached: Vec<_> = table.points.iter().filter(|p| p.codes_reached).collect();
        assert!(!reached.is_empty(), "{table:?}");
        let nq = data.n_queries();
        let queries: Vec<f32> = (0..nq).flat_map(|i| data.query(i).to_vec()).collect();
        let truth = exact_search_batch(&data.vectors, dim, Metric::Cosine, &queries, 10, None);
        for p in reached {
            let params = SearchParams {
                k: 10,
                nprobe: Some(p.nprobe as usize),
                refine: Some(p.refine as usize),
                rescore: false,
                tier_margin: 1.0,
            };
            let hits: usize = (0..nq)
                .map(|i| {
                    let got = view.search(data.query(i), &[], &params, None);
                    got.iter()
                        .filter(|g| truth[i].iter().any(|t| t.row == g.row))
                        .count()
                })
                .sum();
            let recall = hits as f32 / (10 * nq) as f32;
            assert!(recall >= p.target - 0.03, "{p:?}: fresh queries {recall}");
        }
        // An index without a tier is left as it was.
        let plain = ix.to_bytes_with(Some(&table), None);
        let mut untouched = grid.table(false);
        let before = untouched.clone();
        grid.measure_codes_only(
            &IvfPqView::from_bytes(&plain).expect("view"),
            &data.vectors,
            &mut untouched,
            Cancel::NEVER,
        )
        .expect("no-op");
        assert_eq!(untouched, before);
    }
}
