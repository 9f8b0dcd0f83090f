//! Coarse ranking of the inverted lists for a query.
//!
//! Scanning every centroid in `f32` streams `nlist * dim * 4` bytes per
//! query (1.8 MB at 894 x 512), more than the L2 cache. The lists are
//! therefore first ranked with `i8` copies of the centroids (4x less
//! memory, per-centroid scale), then the best `nprobe + margin` of them are
//! re-scored exactly in `f32`, so the probed lists match an exact coarse
//! ranking except for near-ties.

use crate::distance;

/// `i8` copies of the centroids with their scales and exact squared norms.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CoarseI8 {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub norms: Vec<f32>,
}

/// Quantizes `x` symmetrically to `i8`, returning the scale.
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
        for (c, out) in centroids.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) {
            scales.push(quantize(c, out));
            norms.push(distance::dot(c, c));
        }
        CoarseI8 {
            codes,
            scales,
            norms,
        }
    }
}

/// `<q, c>` for every row `c` of `codes` (`dim` bytes each), exactly, in `i32`
/// (|sum| ≤ dim · 127² fits easily). One pass streams the table; the query is widened once.
fn dots_i8(q: &[i8], codes: &[i8], dim: usize) -> Vec<i32> {
    let mut out = vec![0i32; codes.len() / dim.max(1)];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected; the kernel indexes inside the slices it is given.
            unsafe { x86::dots_i8_avx2(q, codes, dim, &mut out) };
            return out;
        }
    }
    dots_i8_scalar(q, codes, dim, &mut out);
    out
}

fn dots_i8_scalar(q: &[i8], codes: &[i8], dim: usize, out: &mut [i32]) {
    for (o, c) in out.iter_mut().zip(codes.chunks_exact(dim)) {
        *o = q.iter().zip(c).map(|(&x, &y)| x as i32 * y as i32).sum();
    }
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

    /// Four rows at a time: each 16-dim step widens the query once and feeds four
    /// `madd_epi16`s, instead of one library call per row.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots_i8_avx2(q: &[i8], codes: &[i8], dim: usize, out: &mut [i32]) {
        let rows = out.len().min(codes.len() / dim.max(1));
        let full = dim / 16 * 16;
        let qw: Vec<__m256i> = (0..full)
            .step_by(16)
            // SAFETY: i + 16 <= full <= q.len() (q has dim entries).
            .map(|i| _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(q.as_ptr().add(i).cast()) }))
            .collect();
        let tail = |row: &[i8]| -> i32 {
            q[full..]
                .iter()
                .zip(&row[full..])
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum()
        };
        let mut r = 0;
        while r + 4 <= rows {
            let base = codes[r * dim..(r + 4) * dim].as_ptr();
            let mut acc = [_mm256_setzero_si256(); 4];
            for (j, &qv) in qw.iter().enumerate() {
                for (k, a) in acc.iter_mut().enumerate() {
                    // SAFETY: row r + k < rows and 16 * j + 16 <= full <= dim.
                    let c = unsafe { _mm_loadu_si128(base.add(k * dim + 16 * j).cast()) };
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(qv, _mm256_cvtepi8_epi16(c)));
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
            for (j, &qv) in qw.iter().enumerate() {
                // SAFETY: 16 * j + 16 <= full <= dim = row.len().
                let c = unsafe { _mm_loadu_si128(row.as_ptr().add(16 * j).cast()) };
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(qv, _mm256_cvtepi8_epi16(c)));
            }
            out[r] = hsum(acc) + tail(row);
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
    let dots = dots_i8(&qi, &table.codes, dim);
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

    /// The SIMD dot products equal the scalar ones exactly, whatever the dimension.
    #[test]
    fn batched_dots_match_scalar() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for dim in [1usize, 15, 16, 17, 48, 512, 515] {
            for rows in [1usize, 3, 4, 9] {
                let q: Vec<i8> = (0..dim).map(|_| rng.random_range(-127..=127)).collect();
                let codes: Vec<i8> = (0..rows * dim)
                    .map(|_| rng.random_range(-127..=127))
                    .collect();
                let mut want = vec![0; rows];
                dots_i8_scalar(&q, &codes, dim, &mut want);
                assert_eq!(dots_i8(&q, &codes, dim), want, "dim {dim} rows {rows}");
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
