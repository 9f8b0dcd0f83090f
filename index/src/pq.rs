//! Product quantization: `m` sub-quantizers over contiguous slices of the
//! dimensions, each with `ksub` (16 or 256) centroids.
//!
//! Sub-space `q` covers dimensions `q * dim / m .. (q + 1) * dim / m`, so
//! any `dim >= m` works (sub-spaces differ in width by at most one).
//! Codebooks are stored as one flat array: sub-space `q` occupies
//! `ksub * width(q)` floats starting at `ksub * start(q)`.

use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::IndexError;
use crate::kmeans::{self, KMeansParams};
use crate::simd::{self, SimdLevel};

/// Dimension range `[start, end)` of sub-space `q` of `m` over `dim`.
#[inline]
pub fn subspace(dim: usize, m: usize, q: usize) -> (usize, usize) {
    (q * dim / m, (q + 1) * dim / m)
}

/// Borrowed view of trained PQ codebooks.
#[derive(Debug, Clone, Copy)]
pub struct PqCodebooks<'a> {
    /// Full vector dimension.
    pub dim: usize,
    /// Number of sub-quantizers.
    pub m: usize,
    /// Centroids per sub-quantizer (16 or 256).
    pub ksub: usize,
    /// `ksub * dim` floats (see the module docs for the layout).
    pub data: &'a [f32],
}

impl<'a> PqCodebooks<'a> {
    /// The `ksub x width` centroid block of sub-space `q` and its width.
    #[inline]
    pub fn sub(&self, q: usize) -> (&'a [f32], usize, usize) {
        let (s, e) = subspace(self.dim, self.m, q);
        let w = e - s;
        (&self.data[self.ksub * s..self.ksub * e], s, w)
    }

    /// Encodes one vector: one code (`< ksub`) per sub-space into `out`.
    /// To encode many vectors, build a [`PqEncoder`] once instead.
    pub fn encode(&self, x: &[f32], out: &mut [u8]) {
        PqEncoder::new(self).encode(x, out, &mut Vec::new());
    }

    /// Reconstructs the vector from its codes (for error measurements).
    pub fn decode(&self, codes: &[u8], out: &mut [f32]) {
        for (q, &c) in codes.iter().enumerate().take(self.m) {
            let (cb, s, w) = self.sub(q);
            out[s..s + w].copy_from_slice(&cb[c as usize * w..(c as usize + 1) * w]);
        }
    }

    /// Distance table of `y` against every centroid: `m * ksub` floats,
    /// entry `q * ksub + j`. With `inner_product` the entries are `-<y_q, c_qj>`
    /// (so lower is better either way), otherwise `||y_q - c_qj||^2`.
    pub fn lut(&self, y: &[f32], inner_product: bool, out: &mut [f32]) {
        for q in 0..self.m {
            let (cb, s, w) = self.sub(q);
            let ys = &y[s..s + w];
            let row = &mut out[q * self.ksub..(q + 1) * self.ksub];
            // Common sub-space widths get a fixed-width loop the compiler unrolls and
            // vectorizes across centroids (this runs once per query, or per list for L2).
            // The arithmetic and its order are the same in every branch.
            match w {
                2 => lut_row::<2>(ys, cb, inner_product, row),
                4 => lut_row::<4>(ys, cb, inner_product, row),
                8 => lut_row::<8>(ys, cb, inner_product, row),
                16 => lut_row::<16>(ys, cb, inner_product, row),
                _ => {
                    for (o, c) in row.iter_mut().zip(cb.chunks_exact(w)) {
                        *o = if inner_product {
                            -ys.iter().zip(c).map(|(a, b)| a * b).sum::<f32>()
                        } else {
                            ys.iter()
                                .zip(c)
                                .map(|(a, b)| (a - b) * (a - b))
                                .sum::<f32>()
                        };
                    }
                }
            }
        }
    }
}

/// One LUT row for sub-spaces of width `W`: `-<y, c_j>` or `||y - c_j||^2`
/// for every centroid `c_j` of the `W`-wide block `cb`, summed left to right.
#[inline]
fn lut_row<const W: usize>(y: &[f32], cb: &[f32], inner_product: bool, row: &mut [f32]) {
    let Ok(y) = <&[f32; W]>::try_from(y) else {
        return;
    };
    let mut centroids = cb.chunks_exact(W);
    if inner_product {
        for (o, c) in row.iter_mut().zip(&mut centroids) {
            let mut acc = 0.0f32;
            for d in 0..W {
                acc += y[d] * c[d];
            }
            *o = -acc;
        }
    } else {
        for (o, c) in row.iter_mut().zip(&mut centroids) {
            let mut acc = 0.0f32;
            for d in 0..W {
                let t = y[d] - c[d];
                acc += t * t;
            }
            *o = acc;
        }
    }
}

/// Codebooks prepared for encoding many vectors: each sub-space's centroids
/// transposed once (see `kmeans::SmallCentroids`), so finding the nearest
/// of 16 (or 256) centroids is a few contiguous vector passes.
#[derive(Debug, Clone)]
pub struct PqEncoder {
    subs: Vec<(usize, usize, kmeans::SmallCentroids)>,
}

impl PqEncoder {
    /// Prepares `pq` for encoding.
    pub fn new(pq: &PqCodebooks<'_>) -> PqEncoder {
        let subs = (0..pq.m)
            .map(|q| {
                let (cb, s, w) = pq.sub(q);
                (s, w, kmeans::SmallCentroids::new(cb, w))
            })
            .collect();
        PqEncoder { subs }
    }

    /// Encodes one vector into `out` (one code per sub-space); `scratch` is
    /// reused between calls. Same codes as [`PqCodebooks::encode`]; the
    /// kernel is that of [`simd::kernels`].
    pub fn encode(&self, x: &[f32], out: &mut [u8], scratch: &mut Vec<f32>) {
        simd::kernels().pq_encode(self, x, out, scratch);
    }

    /// [`encode`](Self::encode) compiled for AVX2 (the portable build only
    /// vectorizes with SSE2); same arithmetic, so the same codes.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn encode_avx2(&self, x: &[f32], out: &mut [u8], scratch: &mut Vec<f32>) {
        self.encode_body(x, out, scratch);
    }

    /// The portable loop: the scalar level's kernel, inlined into the AVX2 one.
    #[inline(always)]
    fn encode_body(&self, x: &[f32], out: &mut [u8], scratch: &mut Vec<f32>) {
        for (o, (s, w, cents)) in out.iter_mut().zip(&self.subs) {
            let (arg, _) = cents.nearest_body(&x[*s..*s + *w], scratch);
            *o = arg as u8;
        }
    }
}

/// Signature of the PQ encoding kernels (see [`PqEncoder::encode`]);
/// `unsafe` because the SIMD builds need their instruction set,
/// [`Kernels::pq_encode`](crate::simd::Kernels::pq_encode) is the safe way in.
pub(crate) type EncodeKernel = unsafe fn(&PqEncoder, &[f32], &mut [u8], &mut Vec<f32>);

/// The encoding kernel of `level`: this module's entry in
/// [`Kernels::of`](crate::simd::Kernels::of), which asks only for levels the
/// CPU supports. The same portable code at every level; on x86-64 from AVX2
/// up it is compiled for AVX2.
pub(crate) fn kernel_for(level: SimdLevel) -> EncodeKernel {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 => PqEncoder::encode_avx2,
        _ => PqEncoder::encode_body,
    }
}

/// Trains the codebooks on row-major `data` (residuals): one k-means per
/// sub-space, run in parallel across sub-spaces. Returns `ksub * dim` floats,
/// or [`IndexError::Cancelled`] when `cancel` is set.
pub fn train(
    data: &[f32],
    dim: usize,
    m: usize,
    ksub: usize,
    iters: usize,
    seed: u64,
    cancel: Cancel<'_>,
) -> Result<Vec<f32>, IndexError> {
    let n = data.len() / dim;
    let blocks: Vec<Vec<f32>> = (0..m)
        .into_par_iter()
        .map(|q| {
            cancel.check()?;
            let (s, e) = subspace(dim, m, q);
            let w = e - s;
            let mut sub = Vec::with_capacity(n * w);
            for x in data.chunks_exact(dim) {
                sub.extend_from_slice(&x[s..e]);
            }
            let mut p = KMeansParams::new(ksub, seed.wrapping_add(q as u64 * 7919));
            p.iters = iters;
            p.seed_sample_per_centroid = 64;
            kmeans::train(&sub, w, &p, cancel)
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ksub * dim);
    for b in blocks {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect()
    }

    /// The fixed-width LUT loops give exactly the plain definition.
    #[test]
    fn lut_matches_definition_for_every_width() {
        for (dim, m) in [(32, 16), (24, 8), (64, 16), (64, 8), (64, 4), (30, 7)] {
            let ksub = 16;
            let cb = data(ksub, dim, 3);
            let pq = PqCodebooks {
                dim,
                m,
                ksub,
                data: &cb,
            };
            let y = data(1, dim, 4);
            for ip in [true, false] {
                let mut got = vec![0.0f32; m * ksub];
                pq.lut(&y, ip, &mut got);
                for q in 0..m {
                    let (block, s, w) = pq.sub(q);
                    for j in 0..ksub {
                        let c = &block[j * w..(j + 1) * w];
                        let mut acc = 0.0f32;
                        for d in 0..w {
                            acc += if ip {
                                y[s + d] * c[d]
                            } else {
                                (y[s + d] - c[d]) * (y[s + d] - c[d])
                            };
                        }
                        let want = if ip { -acc } else { acc };
                        assert_eq!(got[q * ksub + j], want, "dim {dim} m {m} q {q} j {j}");
                    }
                }
            }
        }
    }

    #[test]
    fn subspaces_cover_dims() {
        for (dim, m) in [(10, 3), (512, 128), (7, 7), (100, 8)] {
            let mut next = 0;
            for q in 0..m {
                let (s, e) = subspace(dim, m, q);
                assert_eq!(s, next);
                assert!(e > s);
                next = e;
            }
            assert_eq!(next, dim);
        }
    }

    /// Reconstruction error is far below the data variance, shrinks with
    /// more centroids, and LUT sums equal distances to the reconstruction.
    #[test]
    fn encode_decode_error_bounds() {
        let dim = 32;
        let x = data(4000, dim, 1);
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4000.0; // ~ dim/3
        let mut errs = Vec::new();
        for (m, ksub) in [(8, 16), (8, 256)] {
            let cb = train(&x, dim, m, ksub, 8, 5, Cancel::NEVER).unwrap();
            let pq = PqCodebooks {
                dim,
                m,
                ksub,
                data: &cb,
            };
            let mut codes = vec![0u8; m];
            let mut rec = vec![0.0f32; dim];
            let mut err = 0.0f32;
            for v in x.chunks(dim) {
                pq.encode(v, &mut codes);
                assert!(codes.iter().all(|&c| (c as usize) < ksub));
                pq.decode(&codes, &mut rec);
                err += crate::distance::l2sq(v, &rec);
            }
            err /= 4000.0;
            assert!(err < 0.6 * var, "m={m} ksub={ksub} err={err} var={var}");
            errs.push(err);

            // ADC identity: sum of LUT entries = ||y - decode(x)||^2.
            let y = &x[..dim];
            let mut lut = vec![0.0f32; m * ksub];
            pq.lut(y, false, &mut lut);
            let v = &x[dim * 10..dim * 11];
            pq.encode(v, &mut codes);
            pq.decode(&codes, &mut rec);
            let adc: f32 = (0..m).map(|q| lut[q * ksub + codes[q] as usize]).sum();
            assert!((adc - crate::distance::l2sq(y, &rec)).abs() < 1e-3);
            pq.lut(y, true, &mut lut);
            let adc: f32 = (0..m).map(|q| lut[q * ksub + codes[q] as usize]).sum();
            assert!((adc + crate::distance::dot(y, &rec)).abs() < 1e-3);
        }
        assert!(errs[1] < errs[0] * 0.8, "256 centroids beat 16: {errs:?}");
    }
}
