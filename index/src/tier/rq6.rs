//! The rotated 6-bit compact tier: every row (unit for cosine) randomly rotated
//! ([`Rotation`]), then six bits per dimension (per-dimension min and step over the rotated
//! rows): 24 bytes per 32 dimensions, 0.75 bytes per dimension against 4 for the `f32` rows
//! and 1 for `sq8`.
//!
//! **Why a probabilistic margin.** A code score `Σ q'_j·x̂_j` (`q'` the rotated query) is off
//! from the exact score by `e = Σ q'_j·δ_j`, each `δ_j` the rounding error of one coordinate,
//! within `±step_j/2`. The worst case `½·Σ|q'_j|·step_j` is 5–7 times the errors ever seen
//! (`docs/benchmarks.md`, "Fewer bits for the tier"), and at six bits it rules out almost
//! nothing. The margin rests instead on the standard model of rounding: after the random
//! rotation a row's coordinates fall anywhere within their steps, so the `δ_j` behave as
//! independent uniform draws (a model, not a theorem: the errors are fixed functions of the
//! data, and the rotation's seed is a constant). A uniform draw is strictly sub-Gaussian, so
//! under that model `e` has tails below a Gaussian's of variance `σ² = Σ(q'_j·step_j)²/12`:
//! `P(|e| > 6σ) ≤ 2·e^-18 ≈ 3·10⁻⁸` for each row. A true top-k row is ruled out only when a
//! row that outranks it on the codes scores no better exactly, so the two rows' errors differ
//! by more than the margin `2·SIGMAS·σ = 12σ`: at most `2·(2·e^-18)` a pair even if the two
//! errors were perfectly correlated, and `e^-36 ≈ 2·10⁻¹⁶` when they are independent (the
//! difference then has variance proxy `2σ²`). A query compares its k true neighbours with at
//! most `k·refine` candidates (8,000 pairs at 10:80). `tier_bits_experiment.py` saw no error
//! beyond 4.6σ in 160,000, and every test and benchmark query so far returned the `f32`
//! re-rank's top k exactly.

use std::borrow::Cow;

use rayon::prelude::*;

use super::rotation::{ROUNDS, Rotation};
use crate::distance;
use crate::metric::Metric;
use crate::simd::SimdLevel;

/// Standard deviations of a code score's error allowed for each of the two rows compared.
pub(crate) const SIGMAS: f32 = 6.0;

/// Dimensions per packed chunk, and the chunk's bytes: 16 bytes of low nibbles (dimension `p`
/// in the low half of byte `p`, dimension `p + 16` in its high half), then 8 bytes of the top
/// two bits (dimension `p`'s in byte `p % 8` at bit `2·(p / 8)`).
const CHUNK: usize = 32;
const CHUNK_BYTES: usize = 24;

/// Largest code.
const LEVELS: f32 = 63.0;

/// The section's magic, its first four bytes.
const MAGIC: [u8; 4] = *b"RQ6\0";
/// Bytes of the section's preamble: the magic, then the rotation's rounds, the bits per code
/// and the dimension (`u32` each), zero to 64.
const PREAMBLE: usize = 64;

/// Seed of the rotation's signs (any fixed value: the signs are stored with the codes).
const ROTATION_SEED: u64 = 0x5eed_0f71;

/// Bytes of one row's codes.
pub(crate) fn row_bytes(dim: usize) -> usize {
    dim.div_ceil(CHUNK) * CHUNK_BYTES
}

/// Rotated 6-bit codes of an index's rows (in the index's space: unit rows for cosine).
#[derive(Debug, Clone, PartialEq)]
pub struct Rq6Codes {
    dim: usize,
    rotation: Rotation,
    mins: Vec<f32>,
    steps: Vec<f32>,
    codes: Vec<u8>,
}

impl Rq6Codes {
    /// Encodes `vectors` (row-major, `dim` floats each) for an index of `metric`; `None` for
    /// L2 (see the parent module) and for empty or non-finite input.
    pub fn build(vectors: &[f32], dim: usize, metric: Metric) -> Option<Rq6Codes> {
        if metric == Metric::L2
            || dim == 0
            || vectors.is_empty()
            || !vectors.len().is_multiple_of(dim)
        {
            return None;
        }
        let rotation = Rotation::random(dim, ROTATION_SEED);
        let rotated = |r: &[f32]| -> Vec<f32> {
            let mut v = r.to_vec();
            if metric == Metric::Cosine {
                distance::normalize_in_place(&mut v);
            }
            rotation.apply(&mut v);
            v
        };
        let (mins, maxs) = super::column_ranges(vectors, dim, rotated)?;
        let steps: Vec<f32> = mins
            .iter()
            .zip(&maxs)
            .map(|(lo, hi)| ((hi - lo) / LEVELS).max(f32::MIN_POSITIVE))
            .collect();
        // A range wider than f32 holds (values near ±3e38) would be refused when read back.
        if !super::ranges_valid(&mins, &steps) {
            return None;
        }
        let rb = row_bytes(dim);
        let mut codes = vec![0u8; vectors.len() / dim * rb];
        codes
            .par_chunks_mut(rb)
            .zip(vectors.par_chunks(dim))
            .for_each(|(out, r)| {
                let levels: Vec<u8> = rotated(r)
                    .iter()
                    .zip(&mins)
                    .zip(&steps)
                    .map(|((x, lo), st)| ((x - lo) / st).round().clamp(0.0, LEVELS) as u8)
                    .collect();
                pack(&levels, out);
            });
        Some(Rq6Codes {
            dim,
            rotation,
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
        self.codes.len() / row_bytes(self.dim)
    }

    /// The section bytes (layout in `docs/format.md`, "Compact re-rank section") with the
    /// rows' codes in the order of `rows` (the index's entry order); empty when `rows` does
    /// not name every row exactly once in range.
    pub(crate) fn to_bytes_in_order(&self, rows: impl Iterator<Item = u32>) -> Vec<u8> {
        let (head, rb) = (head_bytes(self.dim), row_bytes(self.dim));
        let mut out = vec![0u8; head + self.codes.len()];
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&(ROUNDS as u32).to_le_bytes());
        out[8..12].copy_from_slice(&6u32.to_le_bytes());
        out[12..16].copy_from_slice(&(self.dim as u32).to_le_bytes());
        for (i, x) in self.mins.iter().chain(&self.steps).enumerate() {
            let at = PREAMBLE + 4 * i;
            out[at..at + 4].copy_from_slice(&x.to_le_bytes());
        }
        let signs = self.rotation.to_bytes();
        let at = PREAMBLE + 8 * self.dim;
        out[at..at + signs.len()].copy_from_slice(signs);
        if !super::write_in_order(&mut out, head, &self.codes, rb, rows) {
            return Vec::new();
        }
        out
    }

    #[cfg(test)]
    pub(crate) fn view(&self) -> Rq6Ref<'_> {
        Rq6Ref {
            dim: self.dim,
            rotation: self.rotation.clone(),
            mins: Cow::Borrowed(&self.mins),
            steps: Cow::Borrowed(&self.steps),
            codes: &self.codes,
            by_entry: false,
        }
    }
}

/// Bytes before the codes: the preamble, mins, steps and the rotation's signs, padded to 64.
pub(crate) fn head_bytes(dim: usize) -> usize {
    (PREAMBLE + 8 * dim + Rotation::stored_len(dim)).next_multiple_of(64)
}

/// Exact length of the section for `rows` rows of `dim` dimensions.
pub(crate) fn section_len(dim: usize, rows: usize) -> Option<usize> {
    rows.checked_mul(row_bytes(dim))?
        .checked_add(head_bytes(dim))
}

/// The rotated tier as the search reads it (borrowed from the index file where aligned).
#[derive(Debug, Clone)]
pub(crate) struct Rq6Ref<'a> {
    /// Dimension of the rows (before packing).
    pub dim: usize,
    rotation: Rotation,
    /// Per-dimension minimum of the rotated rows.
    pub mins: Cow<'a, [f32]>,
    /// Per-dimension step between codes (finite, > 0).
    pub steps: Cow<'a, [f32]>,
    /// Every row's packed codes, `row_bytes(dim)` each.
    pub codes: &'a [u8],
    /// Codes in the index's entry order (else in row order).
    pub by_entry: bool,
}

impl<'a> Rq6Ref<'a> {
    /// Parses a section of exactly [`section_len`] bytes: the preamble must name this format
    /// and `dim`, every step be finite and positive and every min finite.
    pub(crate) fn parse(
        bytes: &'a [u8],
        dim: usize,
        rows: usize,
        by_entry: bool,
    ) -> Result<Self, String> {
        if Some(bytes.len()) != section_len(dim, rows) {
            return Err(format!(
                "rotated compact section has {} bytes, expected {:?}",
                bytes.len(),
                section_len(dim, rows)
            ));
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if bytes[..4] != MAGIC
            || word(4) as usize != ROUNDS
            || word(8) != 6
            || word(12) as usize != dim
        {
            return Err(format!(
                "rotated compact section's preamble does not name {ROUNDS} rounds of 6-bit codes of {dim} dimensions"
            ));
        }
        let (mins, steps) = (
            super::floats_at(bytes, PREAMBLE, dim),
            super::floats_at(bytes, PREAMBLE + 4 * dim, dim),
        );
        if !super::ranges_valid(&mins, &steps) {
            return Err("compact section has a non-finite min or a step that is not > 0".into());
        }
        let at = PREAMBLE + 8 * dim;
        let rotation = Rotation::from_bytes(dim, &bytes[at..at + Rotation::stored_len(dim)])
            .ok_or("rotated compact section's signs are cut short")?;
        Ok(Rq6Ref {
            dim,
            rotation,
            mins,
            steps,
            codes: &bytes[head_bytes(dim)..],
            by_entry,
        })
    }

    /// Positions (in `keys`' order) of the candidates that may be among the best `k` for `q`
    /// (the query in the index's space), by their code scores and the margin of the module
    /// doc. A key beyond the codes is always kept.
    pub(crate) fn survivors(&self, q: &[f32], keys: &[u32], k: usize, share: f32) -> Vec<usize> {
        let kernels = crate::simd::kernels();
        let Some(p) = self.prepare(q) else {
            return (0..keys.len()).collect();
        };
        super::prune(
            self.codes,
            row_bytes(self.dim),
            keys,
            k,
            p.margin_at(share),
            |c| p.base + kernels.rq6_dot(&p.weights, c),
        )
    }

    /// The code score of each candidate (in `keys`' order) for `q`; `None` for a key beyond
    /// the codes, and for all when `q` has the wrong length.
    pub(crate) fn scores(&self, q: &[f32], keys: &[u32]) -> Vec<Option<f32>> {
        let kernels = crate::simd::kernels();
        let Some(p) = self.prepare(q) else {
            return vec![None; keys.len()];
        };
        super::score_keys(self.codes, row_bytes(self.dim), keys, |c| {
            p.base + kernels.rq6_dot(&p.weights, c)
        })
    }

    /// `q` rotated and folded into per-dimension weights, with the margin of the module doc;
    /// `None` when it has the wrong length.
    pub(crate) fn prepare(&self, q: &[f32]) -> Option<super::PreparedQuery> {
        if q.len() != self.dim {
            return None;
        }
        let mut qr = q.to_vec();
        self.rotation.apply(&mut qr);
        let mut weights = vec![0.0f32; self.dim.div_ceil(CHUNK) * CHUNK];
        for ((w, a), s) in weights.iter_mut().zip(&qr).zip(self.steps.iter()) {
            *w = a * s;
        }
        let base: f32 = distance::dot(&qr, &self.mins);
        let sigma = (weights.iter().map(|w| w * w).sum::<f32>() / 12.0).sqrt();
        // Float rounding of these sums and of the raw re-rank's own (as in `sq8`).
        let magnitude: f32 = qr
            .iter()
            .zip(self.mins.iter().zip(self.steps.iter()))
            .map(|(a, (lo, st))| a.abs() * lo.abs().max((lo + LEVELS * st).abs()))
            .sum();
        let slack = 1e-4 * magnitude + 1e-6;
        Some(super::PreparedQuery {
            weights,
            base,
            margin: 2.0 * SIGMAS * sigma,
            slack,
        })
    }
}

/// Packs `levels` (one code of 0..=63 per dimension) into `out` (`row_bytes` long, zeroed
/// where the last chunk has no dimension).
fn pack(levels: &[u8], out: &mut [u8]) {
    out.fill(0);
    for (chunk, dst) in levels.chunks(CHUNK).zip(out.chunks_exact_mut(CHUNK_BYTES)) {
        for (p, &c) in chunk.iter().enumerate() {
            dst[p % 16] |= (c & 15) << (4 * (p / 16));
            dst[16 + p % 8] |= ((c >> 4) & 3) << (2 * (p / 8));
        }
    }
}

/// The code of dimension `p` of one packed chunk.
#[inline(always)]
fn unpack_one(chunk: &[u8], p: usize) -> u8 {
    let low = (chunk[p % 16] >> (4 * (p / 16))) & 15;
    let high = (chunk[16 + p % 8] >> (2 * (p / 8))) & 3;
    low | high << 4
}

/// Signature of the code-score kernels: `Σ w_j · c_j` over packed codes `c` (`w` holds
/// 32 weights per 24-byte chunk).
pub(crate) type Rq6Kernel = unsafe fn(&[f32], &[u8]) -> f32;

/// The kernel of `level`.
pub(crate) fn kernel_for(level: SimdLevel) -> Rq6Kernel {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 => rq6_dot_avx2,
        _ => rq6_dot_portable,
    }
}

unsafe fn rq6_dot_portable(w: &[f32], c: &[u8]) -> f32 {
    // The AVX2 kernel's order of operations, lane by lane, so every level scores alike to the
    // bit: two sets of eight sums, dimensions `l` and `16 + l` into the first, `8 + l` and
    // `24 + l` into the second, no fused multiply-adds.
    let mut acc0 = [0.0f32; 8];
    let mut acc1 = [0.0f32; 8];
    for (wc, cc) in w.chunks_exact(CHUNK).zip(c.chunks_exact(CHUNK_BYTES)) {
        let code = |p: usize| f32::from(unpack_one(cc, p));
        for l in 0..8 {
            acc0[l] += wc[l] * code(l);
            acc1[l] += wc[8 + l] * code(8 + l);
        }
        for l in 0..8 {
            acc0[l] += wc[16 + l] * code(16 + l);
            acc1[l] += wc[24 + l] * code(24 + l);
        }
    }
    acc0.iter().zip(&acc1).map(|(a, b)| a + b).sum()
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rq6_dot_avx2(w: &[f32], c: &[u8]) -> f32 {
    use std::arch::x86_64::*;
    let chunks = (w.len() / CHUNK).min(c.len() / CHUNK_BYTES);
    let m4 = _mm_set1_epi8(0x0f);
    let m2 = _mm_set1_epi8(0x03);
    // The top-bit byte `b` holds dimensions b, b+8, b+16, b+24 at shifts 0, 2, 4, 6: shifting
    // the 64-bit lanes by (0, 2) and (4, 6) lines up dimensions 0..16 and 16..32.
    let shift_lo = _mm_set_epi64x(2, 0);
    let shift_hi = _mm_set_epi64x(6, 4);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    for i in 0..chunks {
        // SAFETY: chunk `i` is inside both slices (`chunks` bounds it), and the loads are
        // unaligned ones.
        unsafe {
            let p = c.as_ptr().add(i * CHUNK_BYTES);
            let wp = w.as_ptr().add(i * CHUNK);
            let nib = _mm_loadu_si128(p as *const __m128i);
            let top = _mm_set1_epi64x((p.add(16) as *const i64).read_unaligned());
            let low = _mm_and_si128(nib, m4);
            let high = _mm_and_si128(_mm_srli_epi16(nib, 4), m4);
            let t01 = _mm_and_si128(_mm_srlv_epi64(top, shift_lo), m2);
            let t23 = _mm_and_si128(_mm_srlv_epi64(top, shift_hi), m2);
            let c0 = _mm_or_si128(low, _mm_slli_epi16(t01, 4));
            let c1 = _mm_or_si128(high, _mm_slli_epi16(t23, 4));
            let f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c0));
            let f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c0, 8)));
            let f2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c1));
            let f3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c1, 8)));
            // Multiply, then add (not fused): the portable kernel rounds the same way.
            acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(_mm256_loadu_ps(wp), f0));
            acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(_mm256_loadu_ps(wp.add(8)), f1));
            acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(_mm256_loadu_ps(wp.add(16)), f2));
            acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(_mm256_loadu_ps(wp.add(24)), f3));
        }
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc0, acc1)) };
    lanes.iter().sum()
}

#[cfg(test)]
#[path = "rq6_tests.rs"]
mod tests;
