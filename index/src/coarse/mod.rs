//! Coarse ranking of the inverted lists for a query.
//!
//! Scanning every centroid in `f32` streams `nlist * dim * 4` bytes per
//! query (1.8 MB at 894 x 512), more than the L2 cache. The lists are
//! therefore first ranked with `i8` copies of the centroids (4x less
//! memory, per-centroid scale), then the best `nprobe + margin` of them are
//! re-scored exactly in `f32`, so the probed lists match an exact coarse
//! ranking except for near-ties.
//!
//! The `i8` dot products have one file per instruction set (`scalar.rs`,
//! `x86.rs`, `neon.rs`); [`kernel_for`] is their entry in the crate's kernel
//! table ([`Kernels`]).

use crate::distance;
use crate::simd::{self, Kernels, SimdLevel};

mod scalar;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

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

/// Signature of the `i8` dot-product kernels: `(q, codes, sums, dim, out)`
/// sets `out[r] = <q, row r of codes>` (`dim` codes a row, `sums[r]` that
/// row's code sum), exactly, in `i32` (|sum| <= dim * 127^2 fits easily).
/// `unsafe` because the SIMD ones need their instruction set and `dim` codes
/// in `q`; [`Kernels::dots_i8`] is the safe way in.
pub(crate) type DotsKernel = unsafe fn(&[i8], &[i8], &[i32], usize, &mut [i32]);

/// The dot-product kernel of `level`: this module's entry in
/// [`Kernels::of`], which asks only for levels the CPU supports. AVX-512
/// uses VNNI where the CPU has it and the AVX2 kernel otherwise.
pub(crate) fn kernel_for(level: SimdLevel) -> DotsKernel {
    match level {
        SimdLevel::Scalar => scalar::dots_i8_scalar,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if simd::has_avx512_vnni() => x86::dots_i8_vnni512,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 => x86::dots_i8_avx2,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => neon::dots_i8_neon,
        // The other architecture's levels: never supported here, never asked for.
        #[allow(unreachable_patterns)]
        _ => scalar::dots_i8_scalar,
    }
}

/// `<q, c>` for every row `c` of the table with the dot-product kernel of `kernels`.
fn dots_i8(kernels: &Kernels, q: &[i8], table: &CoarseI8, dim: usize) -> Vec<i32> {
    let mut out = vec![0i32; table.codes.len() / dim.max(1)];
    kernels.dots_i8(q, &table.codes, &table.sums, dim, &mut out);
    out
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
    let dots = dots_i8(simd::kernels(), &qi, table, dim);
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
                    scalar::dots_i8_scalar(&q, &table.codes, &table.sums, dim, &mut want);
                    for level in SimdLevel::ALL {
                        let Some(kernels) = Kernels::of(level) else {
                            continue;
                        };
                        assert_eq!(
                            dots_i8(&kernels, &q, &table, dim),
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
