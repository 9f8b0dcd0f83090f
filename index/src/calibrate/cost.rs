//! What a search at a grid setting costs, estimated, so the calibration can rank the settings
//! that reach a target by price.

use crate::layout::IvfPqView;
use crate::metric::Metric;
use crate::params::PqBits;
use crate::search::COMPACT_MIN_PER_RESULT;
use crate::tier::CompactKind;

/// Estimated nanoseconds of a search, to rank settings that reach a target (only the ratios
/// matter). Fitted on the 4-bit, 512-dimension index of `index_bench` (200k rows of the hard
/// mixture, one thread, settings 64:16 to 128:96): a scanned code costs about 0.05 ns per
/// sub-quantizer plus 0.5 ns, a probed list ~60 ns of set-up, and a re-ranked row about 0.75 ns
/// per dimension (a random read of the raw row dominates). With the compact tier, from
/// [`COMPACT_MIN_PER_RESULT`] candidates per result, a candidate costs its codes' score instead
/// (`TIER_NS_PER_DIM`), and only the few it cannot rule out are read raw (`tier_survivors`).
#[derive(Debug, Clone, Copy)]
pub(super) struct CostModel {
    code_ns: f64,
    list_ns: f64,
    rerank_ns: f64,
    tier_ns: f64,
    /// The tier a new index of this dimension gets ([`CompactKind::for_dim`]).
    tier_kind: CompactKind,
}

/// Nanoseconds per dimension of scoring one candidate on the compact tier's codes (list by
/// list, in address order): 0.21 measured between 64:24 and 64:64 on the hard mixture, 200k,
/// AMD EPYC (AVX2), 2026-12-07.
const TIER_NS_PER_DIM: f64 = 0.25;

/// The tiered re-rank's fixed cost (sorting the keys, the bound, the selection), in raw-row
/// reads: ~12 µs a query in the same fit.
const TIER_FIXED_ROWS: usize = 32;

/// Raw rows a tiered re-rank of `reranked` candidates for `k` results still reads: those within
/// the codes' error margin of the k-th best. 8-bit codes: measured at 64 of 240 and 86–90 of
/// 640–800 on the hard mixture and 59 of 640 on CLIP-like data; rotated 6-bit codes: 58–60 of
/// 640–800 on the hard mixture at 512 dimensions (k = 10).
fn tier_survivors(kind: CompactKind, k: usize, reranked: usize) -> usize {
    match kind {
        CompactKind::Sq8 => reranked.min(6 * k + reranked / 32),
        CompactKind::Rotated6 => reranked.min(4 * k + reranked / 40),
    }
}

impl CostModel {
    pub(super) fn for_view(view: &IvfPqView<'_>) -> Self {
        let m = view.m() as f64;
        let dim = view.dim() as f64;
        let code_ns = match view.bits() {
            PqBits::Eight => 0.6 * m,
            _ => 0.5 + 0.05 * m,
        };
        // L2 recomputes the distance table for every list.
        let list_ns = if view.metric() == Metric::L2 {
            60.0 + 2.0 * dim
        } else {
            60.0
        };
        CostModel {
            code_ns,
            list_ns,
            rerank_ns: 0.75 * dim,
            tier_ns: TIER_NS_PER_DIM * dim,
            tier_kind: CompactKind::for_dim(view.dim()),
        }
    }

    /// Cost of `nprobe` lists holding `codes` codes and a re-rank of `refine` candidates per
    /// result for `k` results, on an index with the compact tier when `tier`.
    pub(super) fn estimate(
        &self,
        nprobe: usize,
        codes: f64,
        k: usize,
        refine: usize,
        tier: bool,
    ) -> f64 {
        let reranked = k * refine;
        let rerank = if tier && refine >= COMPACT_MIN_PER_RESULT {
            reranked as f64 * self.tier_ns
                + (tier_survivors(self.tier_kind, k, reranked) + TIER_FIXED_ROWS) as f64
                    * self.rerank_ns
        } else {
            reranked as f64 * self.rerank_ns
        };
        codes * self.code_ns + nprobe as f64 * self.list_ns + rerank
    }
}
