//! Coarse ranking of the inverted lists for a query.
//!
//! Scanning every centroid in `f32` streams `nlist * dim * 4` bytes per
//! query (1.8 MB at 894 x 512), more than the L2 cache. The lists are
//! therefore first ranked with `i8` copies of the centroids (4x less
//! memory, per-centroid scale), then the best `nprobe + margin` of them are
//! re-scored exactly in `f32`, so the probed lists match an exact coarse
//! ranking except for near-ties.

use crate::distance;
use crate::simd::SimdLevel;

/// `i8` copies of the centroids with their scales, exact squared norms and
/// code sums (the VNNI kernel's correction term).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CoarseI8 {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub norms: Vec<f32>,
    pub sums: Vec<i32>,
}

/// Quantizes `x` symmetrically to `i8` in `-127..=127`, returning the scale.
fn quantize(x: &[f32], out: &mut [i8]) -> f32 {
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        out.iter_mut().for_each(|o| *o = 0);
        return 0.0;
    }
    let inv = 127.0 / max;
    for (o, &v) in out.iter_mut().zip(x) {
        // Half away from zero like `f32::round`, without its libm call (this runs per query).
        let r = v * inv;
        *o = (r + 0.5f32.copysign(r)).clamp(-127.0, 127.0) as i8;
    }
    max / 127.0
}

impl CoarseI8 {
    /// Builds the `i8` table for row-major `centroids`.
    pub fn new(centroids: &[f32], dim: usize) -> CoarseI8 {
        let n = centroids.len() / dim;
        let mut codes = vec![0i8; n * dim];
        let mut scales = Vec::with_capacity(n);
        let mut norms = Vec::with_capacity(n);
        let mut sums = Vec::with_capacity(n);
        for (c, out) in centroids.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) {
            scales.push(quantize(c, out));
            norms.push(distance::dot(c, c));
            sums.push(out.iter().map(|&v| v as i32).sum());
        }
        CoarseI8 {
            codes,
            scales,
            norms,
            sums,
        }
    }
}

/// `<q, c>` for every row `c` of the table (`dim` codes each), exactly, in `i32`
/// (|sum| <= dim * 127^2 fits easily), with the kernel of [`simd::level`].
fn dots_i8(q: &[i8], table: &CoarseI8, dim: usize) -> Vec<i32> {
    dots_i8_at(crate::simd::level(), q, table, dim)
}

/// [`dots_i8`] with the kernel of `level` (or the best below it this CPU has).
fn dots_i8_at(level: SimdLevel, q: &[i8], table: &CoarseI8, dim: usize) -> Vec<i32> {
    let mut out = vec![0i32; table.codes.len() / dim.max(1)];
    #[cfg(target_arch = "x86_64")]
    {
        if level >= SimdLevel::Avx512
            && SimdLevel::Avx512.supported()
            && crate::simd::has_avx512_vnni()
            && table.sums.len() == out.len()
        {
            // SAFETY: AVX-512 F/BW and VNNI were just detected; the kernel
            // indexes inside the slices it is given.
            unsafe { x86::dots_i8_vnni512(q, &table.codes, &table.sums, dim, &mut out) };
            return out;
        }
        if level >= SimdLevel::Avx2 && SimdLevel::Avx2.supported() {
            // SAFETY: AVX2 was just detected; the kernel indexes inside the slices it is given.
            unsafe { x86::dots_i8_avx2(q, &table.codes, dim, &mut out) };
            return out;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if level >= SimdLevel::Neon && SimdLevel::Neon.supported() {
            // SAFETY: NEON was just detected; the kernel indexes inside the slices it is given.
            unsafe { arm::dots_i8_neon(q, &table.codes, dim, &mut out) };
            return out;
        }
    }
    let _ = level;
    dots_i8_scalar(q, &table.codes, dim, &mut out);
    out
}

fn dots_i8_scalar(q: &[i8], codes: &[i8], dim: usize, out: &mut [i32]) {
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(dim)) {
        *o = dot_i8_from(q, c, 0);
    }
}

/// `<q[from..], row[from..]>` in `i32`: the scalar reference, and the tail
/// past the last full SIMD step of the kernels.
#[inline]
fn dot_i8_from(q: &[i8], row: &[i8], from: usize) -> i32 {
    q[from..]
        .iter()
        .zip(&row[from..])
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Horizontal sum of eight `i32` lanes.
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// Four rows at a time, 32 dimensions per step. `maddubs` multiplies
    /// unsigned by signed bytes, so the query enters as `|q|` and its signs
    /// move onto the row (`sign_epi8`); with both sides in `-127..=127` a pair
    /// sum is at most 2 * 127 * 127 = 32 258, so the `i16` saturation of
    /// `maddubs` never triggers and the result is exact. Four instructions per
    /// 32 bytes, against six with sign extension to `i16`.
    ///
    /// # Safety
    /// The CPU must support AVX2; codes must be in `-127..=127` (as
    /// `quantize` makes them).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots_i8_avx2(q: &[i8], codes: &[i8], dim: usize, out: &mut [i32]) {
        let rows = out.len().min(codes.len() / dim.max(1));
        let full = dim / 32 * 32;
        // SAFETY (both maps): i + 32 <= full <= q.len() (q has dim entries).
        let qs: Vec<__m256i> = (0..full)
            .step_by(32)
            .map(|i| unsafe { _mm256_loadu_si256(q.as_ptr().add(i).cast()) })
            .collect();
        let qa: Vec<__m256i> = qs.iter().map(|&v| _mm256_abs_epi8(v)).collect();
        let ones = _mm256_set1_epi16(1);
        let tail = |row: &[i8]| super::dot_i8_from(q, row, full);
        let step = |acc: __m256i, j: usize, c: __m256i| -> __m256i {
            let p16 = _mm256_maddubs_epi16(qa[j], _mm256_sign_epi8(c, qs[j]));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones))
        };
        let mut r = 0;
        while r + 4 <= rows {
            let base = codes[r * dim..(r + 4) * dim].as_ptr();
            let mut acc = [_mm256_setzero_si256(); 4];
            for j in 0..qs.len() {
                for (k, a) in acc.iter_mut().enumerate() {
                    // SAFETY: row r + k < rows and 32 * j + 32 <= full <= dim.
                    let c = unsafe { _mm256_loadu_si256(base.add(k * dim + 32 * j).cast()) };
                    *a = step(*a, j, c);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                out[r + k] = hsum(*a) + tail(&codes[(r + k) * dim..(r + k + 1) * dim]);
            }
            r += 4;
        }
        while r < rows {
            let row = &codes[r * dim..(r + 1) * dim];
            let mut acc = _mm256_setzero_si256();
            for j in 0..qs.len() {
                // SAFETY: 32 * j + 32 <= full <= dim = row.len().
                let c = unsafe { _mm256_loadu_si256(row.as_ptr().add(32 * j).cast()) };
                acc = step(acc, j, c);
            }
            out[r] = hsum(acc) + tail(row);
            r += 1;
        }
    }

    /// AVX-512 VNNI: `vpdpbusd` multiplies 64 unsigned by 64 signed bytes and
    /// adds groups of four into `i32` lanes in one instruction, without
    /// saturation. The query enters shifted to unsigned (`q + 128`), so each
    /// row's sum is `<q, c> + 128 * sum(c)`; `sums` holds `sum(c)` per row. The
    /// last partial chunk is loaded with a byte mask (zeros add nothing).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI; `sums` has one entry per row.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dots_i8_vnni512(
        q: &[i8],
        codes: &[i8],
        sums: &[i32],
        dim: usize,
        out: &mut [i32],
    ) {
        let rows = out.len().min(codes.len() / dim.max(1)).min(sums.len());
        let chunks = dim.div_ceil(64);
        let mask_of = |j: usize| -> __mmask64 {
            let left = dim - 64 * j;
            if left >= 64 {
                u64::MAX
            } else {
                (1u64 << left) - 1
            }
        };
        let flip = _mm512_set1_epi8(-128);
        let qu: Vec<__m512i> = (0..chunks)
            .map(|j| {
                // SAFETY: the masked load reads only the `dim - 64 j` bytes left in q.
                let v = unsafe { _mm512_maskz_loadu_epi8(mask_of(j), q.as_ptr().add(64 * j)) };
                // q + 128 as unsigned. Lanes past `dim` meet zero codes, so they add nothing.
                _mm512_xor_si512(v, flip)
            })
            .collect();
        let load = |row: usize, j: usize| -> __m512i {
            // SAFETY: row < rows, so [row * dim + 64 j, row * dim + dim) is inside codes;
            // the mask stops the load at the end of the row.
            unsafe { _mm512_maskz_loadu_epi8(mask_of(j), codes.as_ptr().add(row * dim + 64 * j)) }
        };
        let mut r = 0;
        while r + 4 <= rows {
            let mut acc = [_mm512_setzero_si512(); 4];
            for (j, &qv) in qu.iter().enumerate() {
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_dpbusd_epi32(*a, qv, load(r + k, j));
                }
            }
            for (k, a) in acc.iter().enumerate() {
                out[r + k] = _mm512_reduce_add_epi32(*a) - 128 * sums[r + k];
            }
            r += 4;
        }
        while r < rows {
            let mut acc = _mm512_setzero_si512();
            for (j, &qv) in qu.iter().enumerate() {
                acc = _mm512_dpbusd_epi32(acc, qv, load(r, j));
            }
            out[r] = _mm512_reduce_add_epi32(acc) - 128 * sums[r];
            r += 1;
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    /// Four rows at a time, 16 dimensions per step: `smull`/`smull2` multiply
    /// the signed bytes into `i16` (any two `i8` give at most 16 384 in
    /// magnitude, so no overflow) and `sadalp` adds adjacent products into
    /// `i32` lanes. Exact, like the other kernels.
    ///
    /// # Safety
    /// NEON must be present (it is part of base AArch64); `q` holds `dim` codes.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dots_i8_neon(q: &[i8], codes: &[i8], dim: usize, out: &mut [i32]) {
        let rows = out.len().min(codes.len() / dim.max(1));
        let full = dim.min(q.len()) / 16 * 16;
        // SAFETY: i + 16 <= full <= q.len().
        let qs: Vec<int8x16_t> = (0..full)
            .step_by(16)
            .map(|i| unsafe { vld1q_s8(q.as_ptr().add(i)) })
            .collect();
        let tail = |row: &[i8]| super::dot_i8_from(q, row, full);
        let step = |acc: int32x4_t, qv: int8x16_t, c: int8x16_t| -> int32x4_t {
            let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(qv), vget_low_s8(c)));
            vpadalq_s16(acc, vmull_high_s8(qv, c))
        };
        let mut r = 0;
        while r + 4 <= rows {
            let base = codes[r * dim..(r + 4) * dim].as_ptr();
            let mut acc = [vdupq_n_s32(0); 4];
            for (j, &qv) in qs.iter().enumerate() {
                for (k, a) in acc.iter_mut().enumerate() {
                    // SAFETY: row r + k < rows and 16 * j + 16 <= full <= dim.
                    let c = unsafe { vld1q_s8(base.add(k * dim + 16 * j)) };
                    *a = step(*a, qv, c);
                }
            }
            for (k, a) in acc.iter().enumerate() {
                out[r + k] = vaddvq_s32(*a) + tail(&codes[(r + k) * dim..(r + k + 1) * dim]);
            }
            r += 4;
        }
        while r < rows {
            let row = &codes[r * dim..(r + 1) * dim];
            let mut acc = vdupq_n_s32(0);
            for (j, &qv) in qs.iter().enumerate() {
                // SAFETY: 16 * j + 16 <= full <= dim = row.len().
                let c = unsafe { vld1q_s8(row.as_ptr().add(16 * j)) };
                acc = step(acc, qv, c);
            }
            out[r] = vaddvq_s32(acc) + tail(row);
            r += 1;
        }
    }
}

/// Ranks lists for query `q` (lower is better: `-<q,c>` for inner
/// product, `||q-c||^2` otherwise). Returns `(distance, list)` for all
/// lists; the first `nprobe` are exact and sorted, the rest carry
/// approximate distances in no particular order.
pub(crate) fn rank(
    q: &[f32],
    centroids: &[f32],
    table: &CoarseI8,
    dim: usize,
    inner_product: bool,
    nprobe: usize,
) -> Vec<(f32, u32)> {
    let n = table.scales.len();
    let mut qi = vec![0i8; dim];
    let qs = quantize(q, &mut qi);
    let qn = distance::dot(q, q);
    let exact = |l: usize| {
        let c = &centroids[l * dim..(l + 1) * dim];
        if inner_product {
            -distance::dot(q, c)
        } else {
            distance::l2sq(q, c)
        }
    };
    let dots = dots_i8(&qi, table, dim);
    let mut scored: Vec<(f32, u32)> = dots
        .iter()
        .enumerate()
        .map(|(l, &dot)| {
            let d = dot as f32 * qs * table.scales[l];
            let s = if inner_product {
                -d
            } else {
                qn + table.norms[l] - 2.0 * d
            };
            (s, l as u32)
        })
        .collect();
    let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    let np = nprobe.min(n);
    let wide = (np + (np / 2).max(8)).min(n);
    if wide > 0 && wide < n {
        scored.select_nth_unstable_by(wide - 1, cmp);
    }
    for s in &mut scored[..wide] {
        s.0 = exact(s.1 as usize);
    }
    if np > 0 && np < wide {
        scored[..wide].select_nth_unstable_by(np - 1, cmp);
    }
    scored[..np].sort_unstable_by(cmp);
    scored
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Every SIMD kernel this CPU has equals the scalar one exactly, whatever
    /// the dimension, including the extreme codes (+-127) that would saturate
    /// a careless `maddubs`.
    #[test]
    fn batched_dots_match_scalar() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for dim in [1usize, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 512, 515] {
            for rows in [1usize, 3, 4, 9] {
                for extreme in [false, true] {
                    let mut draw = || -> i8 {
                        if extreme {
                            if rng.random_bool(0.5) { 127 } else { -127 }
                        } else {
                            rng.random_range(-127..=127)
                        }
                    };
                    let q: Vec<i8> = (0..dim).map(|_| draw()).collect();
                    let codes: Vec<i8> = (0..rows * dim).map(|_| draw()).collect();
                    let table = CoarseI8 {
                        sums: codes
                            .chunks(dim)
                            .map(|c| c.iter().map(|&v| v as i32).sum())
                            .collect(),
                        scales: vec![1.0; rows],
                        norms: vec![1.0; rows],
                        codes,
                    };
                    let mut want = vec![0; rows];
                    dots_i8_scalar(&q, &table.codes, dim, &mut want);
                    for level in SimdLevel::ALL {
                        assert_eq!(
                            dots_i8_at(level, &q, &table, dim),
                            want,
                            "{level:?} dim {dim} rows {rows}"
                        );
                    }
                }
            }
        }
    }

    /// The exact top lists come out first and in exact order.
    #[test]
    fn matches_exact_ranking() {
        let dim = 48;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let cents: Vec<f32> = (0..300 * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let table = CoarseI8::new(&cents, dim);
        for ip in [true, false] {
            for t in 0..20 {
                let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let got = rank(&q, &cents, &table, dim, ip, 10);
                let mut want: Vec<(f32, u32)> = cents
                    .chunks(dim)
                    .enumerate()
                    .map(|(l, c)| {
                        let d = if ip {
                            -distance::dot(&q, c)
                        } else {
                            distance::l2sq(&q, c)
                        };
                        (d, l as u32)
                    })
                    .collect();
                want.sort_by(|a, b| a.0.total_cmp(&b.0));
                let got_ids: Vec<u32> = got[..10].iter().map(|x| x.1).collect();
                let want_ids: Vec<u32> = want[..10].iter().map(|x| x.1).collect();
                assert_eq!(got_ids, want_ids, "ip={ip} query {t}");
                assert_eq!(got.len(), 300);
            }
        }
    }
}
