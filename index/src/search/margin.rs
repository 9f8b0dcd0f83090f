//! How much of the compact tier's pruning margin one search needed: what the calibration
//! measures over its queries to set an index's [`Calibration::tier_margin`](crate::Calibration).
//!
//! The tier rules a candidate out when its code score is more than the margin below the k-th
//! best code score. The full margin is what the codes' rounding could do at worst (`sq8`) or
//! with negligible odds (`rq6`); the errors a query actually meets are a fraction of it, so
//! a narrower margin keeps the same top k while reading fewer raw rows. How narrow is a
//! property of the data (how near-tied the neighbours around the k-th place are), so it is
//! measured, not assumed.

use super::{Core, Lists, SearchStats, candidates, rerank, tier_and_query, tier_keys};
use crate::metric::Neighbor;
use crate::params::SearchParams;

/// The smallest share of the tier's full margin that would have kept every row of this
/// search's exact top `params.k` (the best `k` of all its candidates by their raw rows), so
/// that the search at that share returns the same rows as at the full margin; 0 when every
/// one scores at or above the k-th best code score.
///
/// Measured at any depth: a search below
/// [`COMPACT_MIN_PER_RESULT`](super::COMPACT_MIN_PER_RESULT) candidates per result
/// prunes on the tier too when its raw rows are out of memory (`prunes_on_tier`), and then
/// with this margin. `None` where the search could not prune on the tier (no tier, L2, at
/// most `k` candidates), or a result has no codes or a score that is not finite: nothing to
/// learn from that query.
pub(crate) fn needed_tier_margin<L: Lists + ?Sized>(
    core: &Core<'_>,
    lists: &L,
    query: &[f32],
    vectors: &[f32],
    params: &SearchParams,
    filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
) -> Option<f32> {
    let k = params.k;
    let mut stats = SearchStats::default();
    let (q, cands) = candidates(core, lists, query, vectors, params, filter, &mut stats)?;
    let (tier, q_tier) = tier_and_query(core, query, &q)?;
    if cands.len() <= k {
        return None;
    }
    let prepared = tier.prepare(q_tier)?;
    if !(prepared.margin.is_finite() && prepared.margin > 0.0) {
        return None;
    }
    let scores = tier.scores(q_tier, &tier_keys(tier, &cands));
    let mut sorted: Vec<f32> = scores.iter().flatten().copied().collect();
    if sorted.len() <= k {
        return None;
    }
    sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    let dim = core.shape.dim;
    let best: Vec<Neighbor> = rerank(core.shape.metric, dim, query, &q, vectors, cands.clone(), k);
    let mut needed = 0.0f32;
    for n in &best {
        let at = cands.iter().position(|c| c.row == n.row)?;
        let score = scores[at]?;
        let share = (kth - score - prepared.slack) / prepared.margin;
        if !share.is_finite() {
            return None;
        }
        needed = needed.max(share);
    }
    Some(needed)
}
