//! Build and search parameters, with defaults derived from the data size.

use crate::error::IndexError;

/// Bits per PQ code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PqBits {
    /// 256 centroids per sub-quantizer, float-LUT scan.
    Eight,
    /// 16 centroids per sub-quantizer, SIMD "fast scan" with `u8` LUTs.
    Four,
    /// Let the index choose (currently 4-bit fast scan, which measured faster
    /// at equal recall once exact re-ranking is applied).
    #[default]
    Auto,
}

impl PqBits {
    /// The concrete choice for `Auto`.
    pub fn resolve(self) -> PqBits {
        match self {
            PqBits::Auto => PqBits::Four,
            b => b,
        }
    }

    /// Centroids per sub-quantizer (16 or 256; `Auto` resolves first).
    pub fn ksub(self) -> usize {
        match self.resolve() {
            PqBits::Eight => 256,
            _ => 16,
        }
    }
}

/// How to build an index. Every `None` is derived from the data size and
/// dimension (see [`IndexParams::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexParams {
    /// Number of inverted lists (coarse centroids). Default `≈ 2·sqrt(N)`,
    /// at most `N / 16`.
    pub nlist: Option<usize>,
    /// Number of PQ sub-quantizers. Default `max(dim / 4, min(dim / 2, 32))`
    /// for 4-bit codes and `dim / 8` for 8-bit codes (at least 1, at most
    /// 256 for 4-bit).
    pub m: Option<usize>,
    /// Code width.
    pub bits: PqBits,
    /// Vectors sampled to train the coarse quantizer; default
    /// `min(N, 48 * nlist)` and at least 10 000 when available.
    pub train_sample: Option<usize>,
    /// Vectors sampled to train the PQ codebooks; default `min(N, 32 768)`.
    pub pq_train_sample: Option<usize>,
    /// Lloyd iterations of the coarse k-means.
    pub kmeans_iters: usize,
    /// Lloyd iterations of each PQ sub-quantizer k-means.
    pub pq_iters: usize,
    /// Seed of every random choice; equal seeds give identical indexes.
    pub seed: u64,
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams {
            nlist: None,
            m: None,
            bits: PqBits::Auto,
            train_sample: None,
            pq_train_sample: None,
            kmeans_iters: 10,
            pq_iters: 12,
            seed: 0x5eed_f1df,
        }
    }
}

/// Parameters with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedParams {
    /// Inverted lists.
    pub nlist: usize,
    /// Sub-quantizers.
    pub m: usize,
    /// Code width (never `Auto`).
    pub bits: PqBits,
    /// Coarse training sample.
    pub train_sample: usize,
    /// PQ training sample.
    pub pq_train_sample: usize,
}

/// Default number of lists for `n` vectors.
pub fn default_nlist(n: usize) -> usize {
    let by_sqrt = (2.0 * (n as f64).sqrt()).round() as usize;
    by_sqrt.min(n / 16).clamp(1, 65_536)
}

impl IndexParams {
    /// Fills in the defaults for `n` training vectors of dimension `dim`
    /// and checks the explicit values.
    pub fn resolve(&self, n: usize, dim: usize) -> Result<ResolvedParams, IndexError> {
        if dim == 0 {
            return Err(IndexError::InvalidParams("dimension must be > 0".into()));
        }
        let bits = self.bits.resolve();
        let nlist = self.nlist.unwrap_or_else(|| default_nlist(n));
        if nlist == 0 || nlist > u32::MAX as usize {
            return Err(IndexError::InvalidParams(format!(
                "nlist {nlist} out of range"
            )));
        }
        let m = match self.m {
            Some(m) => m,
            None => match bits {
                PqBits::Eight => (dim / 8).max(1),
                // 4 dims per sub-quantizer, but at least 32 sub-quantizers
                // (2 dims each) for small dimensions, where 4-dim codes are
                // too coarse to rank candidates.
                _ => (dim / 4).max((dim / 2).min(32)).clamp(1, 256),
            },
        };
        if m == 0 || m > dim {
            return Err(IndexError::InvalidParams(format!(
                "m = {m} must be in 1..={dim} (the dimension)"
            )));
        }
        if bits == PqBits::Four && m > 256 {
            return Err(IndexError::InvalidParams(format!(
                "m = {m} > 256 overflows the 4-bit fast-scan accumulators"
            )));
        }
        if m > u16::MAX as usize {
            return Err(IndexError::InvalidParams(format!("m = {m} too large")));
        }
        let train_sample = self
            .train_sample
            .unwrap_or_else(|| (48 * nlist).max(10_000))
            .min(n)
            .max(nlist.min(n));
        let pq_train_sample = self.pq_train_sample.unwrap_or(32_768).min(n).max(1);
        Ok(ResolvedParams {
            nlist,
            m,
            bits,
            train_sample,
            pq_train_sample,
        })
    }
}

/// Per-query search parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchParams {
    /// Number of results.
    pub k: usize,
    /// Lists to scan; default derived from `nlist` (see [`default_nprobe`]).
    pub nprobe: Option<usize>,
    /// Candidates re-ranked exactly = `k * refine`; default derived from the number of
    /// indexed vectors (see [`default_refine`]).
    pub refine: Option<usize>,
    /// Whether the final ranking reads the raw rows (exact scores). When false and the index
    /// has a compact tier (cosine or dot), the candidates are ranked on the tier's codes alone
    /// and their code scores returned: no raw row is read, so the raw file may sit on a slow
    /// disk, at the cost of the codes' ranking errors (near-ties may swap; scores are
    /// estimates). Ignored without a tier.
    pub rescore: bool,
    /// The share of the compact tier's full pruning margin (see the `tier` module) that rules
    /// candidates out before the exact re-rank: 1 (the default) is the full margin; a
    /// calibrated index's table names the share its own queries needed
    /// ([`Calibration::tier_margin`](crate::Calibration::tier_margin)), which reads fewer raw
    /// rows. Values outside (0, 1] (and NaN) mean 1.
    pub tier_margin: f32,
}

impl SearchParams {
    /// [`tier_margin`](Self::tier_margin) as the search applies it: in (0, 1].
    pub fn tier_margin_share(&self) -> f32 {
        if self.tier_margin > 0.0 && self.tier_margin <= 1.0 {
            self.tier_margin
        } else {
            1.0
        }
    }
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams {
            k: 10,
            nprobe: None,
            refine: None,
            rescore: true,
            tier_margin: 1.0,
        }
    }
}

/// Default lists probed for an index of `nlist` lists (`1.5·sqrt(nlist)`, 8 to 256).
pub fn default_nprobe(nlist: usize) -> usize {
    let p = (1.5 * (nlist as f64).sqrt()).round() as usize;
    p.clamp(8, 256).min(nlist).max(1)
}

/// Re-rank multiplier of small indexes (and the floor of [`default_refine`]).
pub const DEFAULT_REFINE: usize = 10;

/// Most candidates per result the default ever re-ranks.
pub const MAX_DEFAULT_REFINE: usize = 64;

/// Default re-rank multiplier for an index over `n` vectors.
///
/// 4-bit codes put a query's true neighbours near the top of the scanned candidates, not at
/// it, and the crowd of near-ties around them grows with the data. On the benchmark's
/// CLIP-like data at default `nprobe`, refine 10 gives recall@10 0.969 at 200k vectors and
/// 0.954 at 1M, where 15 gives 0.975 for 1% fewer queries per second. So the multiplier is
/// [`DEFAULT_REFINE`] up to 200k vectors and grows as `(n / 200k)^0.25` beyond (15 at 1M,
/// 27 at 10M), capped at [`MAX_DEFAULT_REFINE`]; each unit costs `k` exact distances.
pub fn default_refine(n: usize) -> usize {
    let scale = (n as f64 / 200_000.0).max(1.0).powf(0.25);
    ((DEFAULT_REFINE as f64 * scale).round() as usize).clamp(DEFAULT_REFINE, MAX_DEFAULT_REFINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_refine_grows_with_the_data_and_is_capped() {
        assert_eq!(default_refine(0), DEFAULT_REFINE);
        assert_eq!(default_refine(200_000), DEFAULT_REFINE);
        assert_eq!(default_refine(1_000_000), 15);
        assert_eq!(default_refine(10_000_000), 27);
        let mut last = 0;
        for n in (0..2_000_000_000).step_by(25_000_000) {
            let r = default_refine(n);
            assert!(r >= last, "not monotone at {n}");
            last = r;
        }
        assert_eq!(default_refine(usize::MAX), MAX_DEFAULT_REFINE);
    }
}
