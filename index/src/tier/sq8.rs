//! The 8-bit compact tier: every row as one byte per dimension (per-dimension min and step),
//! a quarter of the raw `f32` rows.
//!
//! For cosine and dot the error of a code score is bounded for the whole query: each
//! dimension's value is off by at most half its step, so `|exact − approx| ≤ B =
//! ½·Σ|q_j|·step_j`, and a candidate more than `2B` below the k-th best code score cannot be
//! in the top k (see the parent module). The top k is therefore always the one the full `f32`
//! re-rank would return.

use std::borrow::Cow;

use rayon::prelude::*;

use crate::distance;
use crate::metric::Metric;
use crate::simd::SimdLevel;

/// Per-dimension 8-bit codes of an index's rows (in the index's space: unit rows for cosine).
#[derive(Debug, Clone, PartialEq)]
pub struct Sq8Codes {
    dim: usize,
    mins: Vec<f32>,
    steps: Vec<f32>,
    codes: Vec<u8>,
}

impl Sq8Codes {
    /// Encodes `vectors` (row-major, `dim` floats each) for an index of `metric`; `None` for
    /// L2 (see the module doc) and for empty or non-finite input.
    pub fn build(vectors: &[f32], dim: usize, metric: Metric) -> Option<Sq8Codes> {
        if metric == Metric::L2
            || dim == 0
            || vectors.is_empty()
            || !vectors.len().is_multiple_of(dim)
        {
            return None;
        }
        let unit = |r: &[f32]| -> Vec<f32> {
            let mut v = r.to_vec();
            if metric == Metric::Cosine {
                distance::normalize_in_place(&mut v);
            }
            v
        };
        let (mins, maxs) = super::column_ranges(vectors, dim, unit)?;
        let steps: Vec<f32> = mins
            .iter()
            .zip(&maxs)
            .map(|(lo, hi)| ((hi - lo) / 255.0).max(f32::MIN_POSITIVE))
            .collect();
        // A range wider than f32 holds (values near ±3e38) would be refused when read back.
        if !super::ranges_valid(&mins, &steps) {
            return None;
        }
        let mut codes = vec![0u8; vectors.len()];
        codes
            .par_chunks_mut(dim)
            .zip(vectors.par_chunks(dim))
            .for_each(|(out, r)| {
                for (((o, x), lo), st) in out.iter_mut().zip(unit(r)).zip(&mins).zip(&steps) {
                    *o = ((x - lo) / st).round().clamp(0.0, 255.0) as u8;
                }
            });
        Some(Sq8Codes {
            dim,
            mins,
            steps,
            codes,
        })
    }

    /// Dimension of the rows.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows encoded.
    pub fn rows(&self) -> usize {
        self.codes.len() / self.dim
    }

    /// The section bytes (layout in `docs/format.md`, "Compact re-rank section") with the
    /// rows' codes in the order of `rows` (the index's entry order); empty when `rows` does
    /// not name every row exactly once in range.
    pub(crate) fn to_bytes_in_order(&self, rows: impl Iterator<Item = u32>) -> Vec<u8> {
        let head = head_bytes(self.dim);
        let mut out = vec![0u8; head + self.codes.len()];
        for (i, x) in self.mins.iter().chain(&self.steps).enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
        }
        if !super::write_in_order(&mut out, head, &self.codes, self.dim, rows) {
            return Vec::new();
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn view(&self) -> Sq8Ref<'_> {
        Sq8Ref {
            dim: self.dim,
            mins: Cow::Borrowed(&self.mins),
            steps: Cow::Borrowed(&self.steps),
            codes: &self.codes,
            by_entry: false,
        }
    }
}

/// Bytes before the codes: mins and steps, padded to 64.
pub(crate) fn head_bytes(dim: usize) -> usize {
    (8 * dim).next_multiple_of(64)
}

/// Exact length of the section for `rows` rows of `dim` dimensions.
pub(crate) fn section_len(dim: usize, rows: usize) -> Option<usize> {
    rows.checked_mul(dim)?.checked_add(head_bytes(dim))
}

/// The tier as the search reads it (borrowed from the index file where aligned).
#[derive(Debug, Clone)]
pub(crate) struct Sq8Ref<'a> {
    pub dim: usize,
    pub mins: Cow<'a, [f32]>,
    pub steps: Cow<'a, [f32]>,
    pub codes: &'a [u8],
    /// Codes in the index's entry order (else in row order): which key a candidate is looked
    /// up by.
    pub by_entry: bool,
}

impl<'a> Sq8Ref<'a> {
    /// Parses a section of exactly [`section_len`] bytes; every step must be finite and
    /// positive and every min finite (else the bound would mean nothing).
    pub(crate) fn parse(
        bytes: &'a [u8],
        dim: usize,
        rows: usize,
        by_entry: bool,
    ) -> Result<Self, String> {
        if Some(bytes.len()) != section_len(dim, rows) {
            return Err(format!(
                "compact section has {} bytes, expected {:?}",
                bytes.len(),
                section_len(dim, rows)
            ));
        }
        let (mins, steps) = (
            super::floats_at(bytes, 0, dim),
            super::floats_at(bytes, 4 * dim, dim),
        );
        if !super::ranges_valid(&mins, &steps) {
            return Err("compact section has a non-finite min or a step that is not > 0".into());
        }
        Ok(Sq8Ref {
            dim,
            mins,
            steps,
            codes: &bytes[head_bytes(dim)..],
            by_entry,
        })
    }

    /// Positions (in `keys`' order) of the candidates that may be among the best `k` for `q`
    /// (the query in the index's space), by their code scores and the bound (see the module
    /// doc); the others certainly are not. `keys` are where each candidate's codes sit: its
    /// entry when [`by_entry`](Self::by_entry), else its row. A key beyond the codes is always
    /// kept.
    pub(crate) fn survivors(&self, q: &[f32], keys: &[u32], k: usize, share: f32) -> Vec<usize> {
        let kernels = crate::simd::kernels();
        let Some(p) = self.prepare(q) else {
            return (0..keys.len()).collect();
        };
        super::prune(self.codes, self.dim, keys, k, p.margin_at(share), |c| {
            p.base + kernels.sq8_dot(&p.weights, c)
        })
    }

    /// The code score of each candidate (in `keys`' order) for `q`; `None` for a key beyond
    /// the codes, and for all when `q` has the wrong length.
    pub(crate) fn scores(&self, q: &[f32], keys: &[u32]) -> Vec<Option<f32>> {
        let kernels = crate::simd::kernels();
        let Some(p) = self.prepare(q) else {
            return vec![None; keys.len()];
        };
        super::score_keys(self.codes, self.dim, keys, |c| {
            p.base + kernels.sq8_dot(&p.weights, c)
        })
    }

    /// `q` folded into per-dimension weights, with the worst-case margin of two code scores'
    /// errors; `None` when it has the wrong length.
    pub(crate) fn prepare(&self, q: &[f32]) -> Option<super::PreparedQuery> {
        if q.len() != self.dim {
            return None;
        }
        let weights: Vec<f32> = q
            .iter()
            .zip(self.steps.iter())
            .map(|(a, s)| a * s)
            .collect();
        let base: f32 = distance::dot(q, &self.mins);
        let bound: f32 = 0.5 * weights.iter().map(|w| w.abs()).sum::<f32>();
        // Float rounding of these sums and of the raw re-rank's own, which grows with
        // `Σ|q_j|·|v_j|`: kept far above f32's epsilon on that scale.
        let magnitude: f32 = q
            .iter()
            .zip(self.mins.iter().zip(self.steps.iter()))
            .map(|(a, (lo, st))| a.abs() * lo.abs().max((lo + 255.0 * st).abs()))
            .sum();
        let slack = 1e-4 * magnitude + 1e-6;
        Some(super::PreparedQuery {
            weights,
            base,
            margin: 2.0 * bound,
            slack,
        })
    }
}

/// Signature of the code-score kernels: `Σ w_j · c_j`.
pub(crate) type Sq8Kernel = unsafe fn(&[f32], &[u8]) -> f32;

/// The kernel of `level`.
pub(crate) fn kernel_for(level: SimdLevel) -> Sq8Kernel {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 => sq8_dot_avx2,
        _ => sq8_dot_portable,
    }
}

unsafe fn sq8_dot_portable(w: &[f32], c: &[u8]) -> f32 {
    sq8_dot_body(w, c)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sq8_dot_avx2(w: &[f32], c: &[u8]) -> f32 {
    sq8_dot_body(w, c)
}

/// Sixteen running sums (two 256-bit vectors), so the loop vectorizes without reassociating.
#[inline(always)]
fn sq8_dot_body(w: &[f32], c: &[u8]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let mut wc = w.chunks_exact(L);
    let mut cc = c.chunks_exact(L);
    for (a, b) in (&mut wc).zip(&mut cc) {
        for l in 0..L {
            acc[l] += a[l] * b[l] as f32;
        }
    }
    let tail: f32 = wc
        .remainder()
        .iter()
        .zip(cc.remainder())
        .map(|(a, &b)| a * b as f32)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim).map(|_| rng.random::<f32>() - 0.5).collect()
    }

    /// The bound holds for every row: no code score is further than B from the exact score.
    #[test]
    fn code_scores_stay_within_the_bound_and_survivors_hold_the_true_top_k() {
        let (n, dim) = (3000, 40);
        let data = rows(n, dim, 1);
        for metric in [Metric::Cosine, Metric::Dot] {
            let sq = Sq8Codes::build(&data, dim, metric).expect("codes");
            let r = sq.view();
            for qi in 0..20 {
                let mut q = rows(1, dim, 100 + qi);
                if metric == Metric::Cosine {
                    distance::normalize_in_place(&mut q);
                }
                let exact = |row: usize| {
                    let v = &data[row * dim..(row + 1) * dim];
                    match metric {
                        Metric::Cosine => distance::dot(&q, v) / distance::norm(v),
                        _ => distance::dot(&q, v),
                    }
                };
                let cands: Vec<u32> = (0..n as u32).step_by(3).collect();
                let keep = r.survivors(&q, &cands, 10, 1.0);
                assert!(
                    keep.len() >= 10 && keep.len() < cands.len() / 4,
                    "{}",
                    keep.len()
                );
                let mut truth: Vec<(f32, u32)> =
                    cands.iter().map(|&c| (exact(c as usize), c)).collect();
                truth.sort_by(|a, b| b.0.total_cmp(&a.0));
                for (_, row) in &truth[..10] {
                    let pos = cands.iter().position(|c| c == row).expect("a candidate");
                    assert!(keep.contains(&pos), "{metric}: true neighbour {row} pruned");
                }
            }
        }
        assert!(Sq8Codes::build(&data, dim, Metric::L2).is_none());
    }

    /// Searches through the tier return exactly what the full `f32` re-rank returns (rows and
    /// scores), while re-ranking far fewer raw rows.
    #[test]
    fn the_tier_gives_the_f32_top_k_from_fewer_raw_rows() {
        use crate::synthetic::{SyntheticSpec, generate};
        use crate::{Cancel, IndexParams, IvfPqIndex, IvfPqView, SearchParams, SearchStats};
        for metric in [Metric::Cosine, Metric::Dot] {
            let data = generate(&SyntheticSpec::hard(6_000, 100, 48, 9));
            let ix = IvfPqIndex::build(
                &data.vectors,
                48,
                metric,
                &IndexParams::default(),
                Cancel::NEVER,
            )
            .expect("build");
            let compact = super::super::CompactCodes::Sq8(
                Sq8Codes::build(&data.vectors, 48, metric).expect("codes"),
            );
            let with = ix.to_bytes_with(None, Some(&compact));
            // Files written before the codes were stored list by list hold them by row.
            let with_by_row = ix.to_bytes_with_tier_by_row(None, Some(&compact));
            let without = ix.to_bytes();
            assert_ne!(with, with_by_row);
            let (a, b, old) = (
                IvfPqView::from_bytes(&with).expect("view"),
                IvfPqView::from_bytes(&without).expect("view"),
                IvfPqView::from_bytes(&with_by_row).expect("view"),
            );
            assert!(a.has_compact_tier() && !b.has_compact_tier() && old.has_compact_tier());
            assert!(a.core().compact.is_some_and(|t| t.by_entry()));
            assert!(old.core().compact.is_some_and(|t| !t.by_entry()));
            let (mut sa, mut sb, mut so) = (
                SearchStats::default(),
                SearchStats::default(),
                SearchStats::default(),
            );
            for (nprobe, refine) in [(4, 24), (16, 40), (64, 100)] {
                let params = SearchParams {
                    k: 10,
                    nprobe: Some(nprobe),
                    refine: Some(refine),
                    rescore: true,
                    tier_margin: 1.0,
                };
                for i in 0..data.n_queries() {
                    let q = data.query(i);
                    let x = a.search_with_stats(q, &data.vectors, &params, None, &mut sa);
                    let y = b.search_with_stats(q, &data.vectors, &params, None, &mut sb);
                    let z = old.search_with_stats(q, &data.vectors, &params, None, &mut so);
                    assert_eq!(x, y, "{metric} nprobe {nprobe} refine {refine} query {i}");
                    assert_eq!(z, y, "{metric} nprobe {nprobe} refine {refine} query {i}");
                }
            }
            assert_eq!(sa.compact_scored, sb.reranked);
            assert_eq!(
                (so.compact_scored, so.reranked),
                (sa.compact_scored, sa.reranked)
            );
            // Below 24 candidates per result the raw rows are read directly.
            let few = SearchParams {
                k: 10,
                nprobe: Some(8),
                refine: Some(10),
                rescore: true,
                tier_margin: 1.0,
            };
            let mut s = SearchStats::default();
            a.search_with_stats(data.query(0), &data.vectors, &few, None, &mut s);
            assert_eq!(s.compact_scored, 0);
            assert!(
                sa.reranked * 4 < sb.reranked,
                "{metric}: {} raw rows re-ranked with the tier, {} without",
                sa.reranked,
                sb.reranked
            );
        }
    }

    /// Rows beyond the codes (a damaged file) and non-finite scores rule nothing out.
    #[test]
    fn what_the_tier_cannot_score_it_keeps() {
        let data = rows(200, 16, 3);
        let sq = Sq8Codes::build(&data, 16, Metric::Dot).expect("codes");
        let r = sq.view();
        let q = rows(1, 16, 4);
        let mut cands: Vec<u32> = (0..200).collect();
        cands.extend([500, 501]);
        let keep = r.survivors(&q, &cands, 5, 1.0);
        assert!(keep.contains(&200) && keep.contains(&201));
        assert!(keep.len() < cands.len());
        let nan = vec![f32::NAN; 16];
        assert_eq!(r.survivors(&nan, &cands, 5, 1.0).len(), cands.len());
        assert_eq!(r.survivors(&q, &cands, 0, 1.0).len(), cands.len());
    }

    #[test]
    fn every_level_scores_alike_and_the_section_is_checked() {
        let w: Vec<f32> = rows(1, 37, 5);
        let c: Vec<u8> = (0..37).map(|i| (i * 37 % 256) as u8).collect();
        // SAFETY: the portable kernel has no requirement.
        let want = unsafe { sq8_dot_portable(&w, &c) };
        for level in SimdLevel::ALL {
            if let Some(k) = crate::simd::Kernels::of(level) {
                assert!((k.sq8_dot(&w, &c) - want).abs() < 1e-3, "{level:?}");
            }
        }
        let data = rows(50, 8, 2);
        let sq = Sq8Codes::build(&data, 8, Metric::Cosine).expect("codes");
        // Written in any order that names every row once; any other order writes nothing.
        let reversed = sq.to_bytes_in_order((0..50).rev());
        let at = |i: usize| head_bytes(8) + 8 * i;
        assert_eq!(&reversed[at(0)..at(1)], &sq.codes[49 * 8..50 * 8]);
        assert_eq!(&reversed[at(49)..at(50)], &sq.codes[0..8]);
        assert_eq!(
            reversed[..head_bytes(8)],
            sq.to_bytes_in_order(0..50)[..head_bytes(8)]
        );
        assert!(sq.to_bytes_in_order((0..49).chain([48])).is_empty());
        assert!(sq.to_bytes_in_order(0..49).is_empty());
        assert!(sq.to_bytes_in_order(0..51).is_empty());
        assert!(sq.to_bytes_in_order((1..50).chain([50])).is_empty());
        let bytes = sq.to_bytes_in_order(0..50);
        assert!(Sq8Ref::parse(&bytes, 8, 50, true).is_ok());
        assert!(Sq8Ref::parse(&bytes, 8, 49, true).is_err());
        assert!(Sq8Ref::parse(&bytes[..bytes.len() - 1], 8, 50, false).is_err());
        let mut bad = bytes.clone();
        bad[4 * 8..4 * 9].copy_from_slice(&0f32.to_le_bytes());
        assert!(Sq8Ref::parse(&bad, 8, 50, true).is_err());
        let mut bad = bytes;
        bad[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Sq8Ref::parse(&bad, 8, 50, true).is_err());
    }
}
