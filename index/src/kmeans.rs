//! Squared-L2 k-means: k-means++ seeding on a sample, Lloyd iterations
//! with GEMM-based assignment, and repair of empty and oversized clusters.
//!
//! Deterministic for a given seed regardless of the number of threads:
//! every parallel reduction is done in fixed-size chunks combined in order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::distance;
use crate::error::IndexError;
use crate::simd::{self, SimdLevel};

/// Rows per parallel assignment chunk (also the GEMM block height).
const CHUNK: usize = 256;

/// Settings of one k-means run.
#[derive(Debug, Clone, Copy)]
pub struct KMeansParams {
    /// Number of clusters.
    pub k: usize,
    /// Lloyd iterations after seeding.
    pub iters: usize,
    /// Seed of sampling and seeding.
    pub seed: u64,
    /// Points considered by k-means++ seeding: `seed_sample_per_centroid * k`
    /// (k-means++ is sequential in `k`, so the sample keeps it cheap).
    pub seed_sample_per_centroid: usize,
    /// A cluster larger than this multiple of the mean size is split by
    /// moving the smallest cluster's centroid next to it.
    pub max_cluster_ratio: f32,
}

impl KMeansParams {
    /// Defaults for `k` clusters.
    pub fn new(k: usize, seed: u64) -> Self {
        KMeansParams {
            k,
            iters: 10,
            seed,
            seed_sample_per_centroid: 4,
            max_cluster_ratio: 4.0,
        }
    }
}

/// Computes `out[i * nb + j] = <a_i, b_j>` for row-major `a` (`na x dim`)
/// and `b` (`nb x dim`) with a single-threaded GEMM.
pub(crate) fn dot_matrix(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
    let na = a.len() / dim;
    let nb = b.len() / dim;
    assert!(out.len() >= na * nb && a.len() == na * dim && b.len() == nb * dim);
    if na == 0 || nb == 0 {
        return;
    }
    // SAFETY: all three pointers cover exactly the extents described by the
    // sizes and strides passed (checked by the assert above); `out` is not
    // aliased by `a` or `b` (distinct borrows).
    unsafe {
        gemm::gemm(
            na,
            nb,
            dim,
            out.as_mut_ptr(),
            1,
            nb as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Squared norms of the rows of `m`.
pub(crate) fn row_norms(m: &[f32], dim: usize) -> Vec<f32> {
    m.chunks_exact(dim).map(|r| distance::dot(r, r)).collect()
}

/// Nearest centroid (squared L2) of every row of `data`, with its distance.
/// Uses GEMM when the problem is big enough for it to pay off.
pub fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> (Vec<u32>, Vec<f32>) {
    let n = data.len() / dim;
    let k = centroids.len() / dim;
    let mut labels = vec![0u32; n];
    let mut dists = vec![0.0f32; n];
    if k == 0 {
        return (labels, dists);
    }
    let c_norms = row_norms(centroids, dim);
    let use_gemm = dim >= 16 && k >= 16;
    let small = (!use_gemm).then(|| SmallCentroids::new(centroids, dim));
    labels
        .par_chunks_mut(CHUNK)
        .zip(dists.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each_init(Vec::new, |buf, (ci, (lab, dis))| {
            let rows = &data[ci * CHUNK * dim..(ci * CHUNK + lab.len()) * dim];
            if use_gemm {
                buf.resize(lab.len() * k, 0.0);
                dot_matrix(rows, centroids, dim, buf);
                for (i, x) in rows.chunks_exact(dim).enumerate() {
                    let dots = &mut buf[i * k..(i + 1) * k];
                    // In place, branch-free passes the compiler vectorizes: the scores, their
                    // minimum, then the first index holding it, which is the index a
                    // strict `<` scan would keep.
                    for (d, &cn) in dots.iter_mut().zip(&c_norms) {
                        *d = cn - 2.0 * *d;
                    }
                    let (arg, best) = first_min(dots);
                    lab[i] = arg as u32;
                    dis[i] = (best + distance::dot(x, x)).max(0.0);
                }
            } else if let Some(small) = &small {
                small.assign_rows(rows, lab, dis, buf);
            }
        });
    (labels, dists)
}

/// Centroids laid out for the nearest-centroid search of small problems (PQ
/// sub-spaces: a few dimensions, 16 or 256 centroids): transposed to
/// `[dim][k]`, so one pass per dimension updates every centroid's distance
/// with contiguous, vectorizable arithmetic. Per centroid the squared
/// differences are summed in dimension order from 0, exactly as a plain loop
/// over the row-major centroids does, so the answers are identical.
#[derive(Debug, Clone)]
pub(crate) struct SmallCentroids {
    transposed: Vec<f32>,
    k: usize,
    dim: usize,
}

impl SmallCentroids {
    /// Transposes row-major `centroids` (`dim` floats each).
    pub(crate) fn new(centroids: &[f32], dim: usize) -> SmallCentroids {
        let k = centroids.len() / dim.max(1);
        let mut transposed = vec![0.0f32; k * dim];
        for (j, c) in centroids.chunks_exact(dim.max(1)).enumerate() {
            for (t, &v) in c.iter().enumerate() {
                transposed[t * k + j] = v;
            }
        }
        SmallCentroids { transposed, k, dim }
    }

    /// Nearest centroid of every row of `rows` into `labels` and `dists`,
    /// with the kernel of [`simd::kernels`] (the
    /// instruction set is chosen once for the whole loop).
    pub(crate) fn assign_rows(
        &self,
        rows: &[f32],
        labels: &mut [u32],
        dists: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        simd::kernels().assign_rows(self, rows, labels, dists, scratch);
    }

    /// [`assign_rows`](Self::assign_rows) compiled for AVX2 (the portable
    /// build only vectorizes with SSE2); same arithmetic, so the same answers.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn assign_rows_avx2(
        &self,
        rows: &[f32],
        labels: &mut [u32],
        dists: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        self.assign_rows_body(rows, labels, dists, scratch);
    }

    /// The portable loop: the scalar level's kernel, inlined into the AVX2 one.
    #[inline(always)]
    fn assign_rows_body(
        &self,
        rows: &[f32],
        labels: &mut [u32],
        dists: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        for ((x, l), d) in rows.chunks_exact(self.dim.max(1)).zip(labels).zip(dists) {
            let (arg, best) = self.nearest_body(x, scratch);
            *l = arg as u32;
            *d = best;
        }
    }

    /// The first of the centroids closest to `x` and its squared distance
    /// (`(0, inf)` without centroids); `scratch` is reused between calls.
    /// Portable code, inlined into callers that pick the instruction set once
    /// around a whole loop of searches (`assign_rows`, `PqEncoder::encode`).
    #[inline(always)]
    pub(crate) fn nearest_body(&self, x: &[f32], scratch: &mut Vec<f32>) -> (usize, f32) {
        if self.k == 16 {
            // 4-bit PQ (the default): the 16 running sums stay in registers.
            let mut acc = [0.0f32; 16];
            for (row, &xt) in self.transposed.chunks_exact(16).zip(x).take(self.dim) {
                for (a, &c) in acc.iter_mut().zip(row) {
                    let e = xt - c;
                    *a += e * e;
                }
            }
            return first_min(&acc);
        }
        scratch.clear();
        scratch.resize(self.k, 0.0);
        for (t, &xt) in x.iter().enumerate().take(self.dim) {
            let row = &self.transposed[t * self.k..(t + 1) * self.k];
            for (a, &c) in scratch.iter_mut().zip(row) {
                let e = xt - c;
                *a += e * e;
            }
        }
        first_min(scratch)
    }
}

/// Signature of the small-problem assignment kernels (see
/// [`SmallCentroids::assign_rows`]); `unsafe` because the SIMD builds need
/// their instruction set, [`Kernels::assign_rows`](crate::simd::Kernels::assign_rows)
/// is the safe way in.
pub(crate) type AssignKernel =
    unsafe fn(&SmallCentroids, &[f32], &mut [u32], &mut [f32], &mut Vec<f32>);

/// The assignment kernel of `level`: this module's entry in
/// [`Kernels::of`](crate::simd::Kernels::of), which asks only for levels the
/// CPU supports. The loop is the same portable code at every level; on
/// x86-64 from AVX2 up it is compiled for AVX2.
pub(crate) fn kernel_for(level: SimdLevel) -> AssignKernel {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 => SmallCentroids::assign_rows_avx2,
        _ => SmallCentroids::assign_rows_body,
    }
}

/// The first position of the smallest value and the value, as a strict `<`
/// scan from `inf` finds them (`(0, inf)` when nothing is below `inf`), in two
/// branch-free passes instead of a data-dependent branch per element.
#[inline(always)]
fn first_min(values: &[f32]) -> (usize, f32) {
    let best = values
        .iter()
        .fold(f32::INFINITY, |m, &d| if d < m { d } else { m });
    let arg = if best < f32::INFINITY {
        values.iter().position(|&d| d == best).unwrap_or(0)
    } else {
        0
    };
    (arg, best)
}

/// Picks `count` distinct indices out of `0..n` (all of them, in order, when
/// `count >= n`), deterministically from `rng`.
pub(crate) fn sample_indices(n: usize, count: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    if count >= n {
        return (0..n).collect();
    }
    let mut idx = rand::seq::index::sample(rng, n, count).into_vec();
    idx.sort_unstable();
    idx
}

/// k-means++ seeding on `data` (already a sample).
fn kmeanspp(data: &[f32], dim: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = data.len() / dim;
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut mind: Vec<f32> = data
        .par_chunks(dim)
        .map(|x| distance::l2sq(x, &centroids[..dim]))
        .collect();
    for _ in 1..k {
        let total: f64 = mind.iter().map(|&d| d as f64).sum();
        let pick = if total > 0.0 {
            let mut u = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &d) in mind.iter().enumerate() {
                u -= d as f64;
                if u <= 0.0 && d > 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            rng.random_range(0..n)
        };
        let c = data[pick * dim..(pick + 1) * dim].to_vec();
        mind.par_chunks_mut(1024)
            .zip(data.par_chunks(1024 * dim))
            .for_each(|(md, xs)| {
                for (m, x) in md.iter_mut().zip(xs.chunks_exact(dim)) {
                    let d = distance::l2sq(x, &c);
                    if d < *m {
                        *m = d;
                    }
                }
            });
        centroids.extend_from_slice(&c);
    }
    centroids
}

/// Trains `params.k` centroids on the row-major `data` (`dim` floats a
/// row). If there are fewer points than clusters, the points themselves
/// (repeated) are the centroids. Stops with [`IndexError::Cancelled`] when
/// `cancel` is set (checked after seeding and after every Lloyd iteration).
pub fn train(
    data: &[f32],
    dim: usize,
    params: &KMeansParams,
    cancel: Cancel<'_>,
) -> Result<Vec<f32>, IndexError> {
    let n = data.len() / dim;
    let k = params.k.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    if n == 0 {
        return Ok(vec![0.0; k * dim]);
    }
    if n <= k {
        let mut c = Vec::with_capacity(k * dim);
        for i in 0..k {
            let r = i % n;
            c.extend_from_slice(&data[r * dim..(r + 1) * dim]);
        }
        return Ok(c);
    }
    let seed_n = (params.seed_sample_per_centroid.max(1) * k).min(n);
    let seed_idx = sample_indices(n, seed_n, &mut rng);
    let seed_data: Vec<f32> = seed_idx
        .iter()
        .flat_map(|&i| data[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    let mut centroids = kmeanspp(&seed_data, dim, k, &mut rng);

    for _ in 0..params.iters {
        cancel.check()?;
        let (labels, _) = assign(data, dim, &centroids);
        let (sums, counts) = accumulate(data, dim, k, &labels);
        for j in 0..k {
            if counts[j] > 0 {
                let inv = 1.0 / counts[j] as f64;
                for t in 0..dim {
                    centroids[j * dim + t] = (sums[j * dim + t] * inv) as f32;
                }
            }
        }
        repair(
            &mut centroids,
            dim,
            counts,
            params.max_cluster_ratio,
            &mut rng,
        );
    }
    Ok(centroids)
}

/// Per-cluster coordinate sums (f64 for stability) and sizes, reduced in
/// fixed chunks so the result does not depend on thread scheduling.
fn accumulate(data: &[f32], dim: usize, k: usize, labels: &[u32]) -> (Vec<f64>, Vec<usize>) {
    const RED: usize = 8192;
    let partials: Vec<(Vec<f64>, Vec<usize>)> = data
        .par_chunks(RED * dim)
        .zip(labels.par_chunks(RED))
        .map(|(xs, ls)| {
            let mut s = vec![0.0f64; k * dim];
            let mut c = vec![0usize; k];
            for (x, &l) in xs.chunks_exact(dim).zip(ls) {
                let l = l as usize;
                c[l] += 1;
                for (a, &b) in s[l * dim..(l + 1) * dim].iter_mut().zip(x) {
                    *a += b as f64;
                }
            }
            (s, c)
        })
        .collect();
    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (s, c) in partials {
        sums.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
        counts.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
    }
    (sums, counts)
}

/// Moves the centroids of empty (and, while any cluster is oversized,
/// the smallest) clusters next to the largest cluster, splitting it in two
/// by a small symmetric perturbation: the next assignment divides its points.
fn repair(
    centroids: &mut [f32],
    dim: usize,
    mut counts: Vec<usize>,
    max_ratio: f32,
    rng: &mut ChaCha8Rng,
) {
    let k = counts.len();
    let total: usize = counts.iter().sum();
    let mean = total as f32 / k as f32;
    const EPS: f32 = 1.0 / 1024.0;
    for _ in 0..k {
        let (big, &big_n) = match counts
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, usize::MAX - i))
        {
            Some(x) => x,
            None => return,
        };
        let (small, &small_n) = match counts.iter().enumerate().min_by_key(|&(i, &c)| (c, i)) {
            Some(x) => x,
            None => return,
        };
        let oversized = big_n as f32 > max_ratio * mean && (small_n as f32) < mean / max_ratio;
        if big_n < 2 || (small_n > 0 && !oversized) || big == small {
            return;
        }
        for t in 0..dim {
            let v = centroids[big * dim + t];
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            let delta = sign * EPS * v.abs().max(1e-6);
            centroids[small * dim + t] = v + delta;
            centroids[big * dim + t] = v - delta;
        }
        counts[small] = big_n / 2;
        counts[big] = big_n - big_n / 2;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The fixed-width nearest-centroid search and the GEMM argmin give
    /// exactly what a plain strict-`<` loop gives, ties (duplicate
    /// centroids) included.
    #[test]
    fn nearest_matches_plain_loop_with_ties() {
        use rand::{Rng, SeedableRng};
        let plain = |x: &[f32], cents: &[f32], dim: usize| {
            let mut best = f32::INFINITY;
            let mut arg = 0usize;
            for (j, c) in cents.chunks_exact(dim).enumerate() {
                let d: f32 = x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
                if d < best {
                    best = d;
                    arg = j;
                }
            }
            (arg, best)
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for dim in [2usize, 3, 4, 8, 16, 24] {
            for k in [1usize, 15, 16, 17, 256] {
                let mut cents: Vec<f32> =
                    (0..k * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                if k > 3 {
                    // Duplicate centroid 1 at the end: the first copy must win.
                    let c1 = cents[dim..2 * dim].to_vec();
                    cents[(k - 1) * dim..].copy_from_slice(&c1);
                }
                for _ in 0..50 {
                    let x: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
                    assert_eq!(
                        SmallCentroids::new(&cents, dim).nearest_body(&x, &mut Vec::new()),
                        plain(&x, &cents, dim)
                    );
                }
                if k > 1 {
                    let x = cents[dim..2 * dim].to_vec();
                    assert_eq!(
                        SmallCentroids::new(&cents, dim).nearest_body(&x, &mut Vec::new()),
                        plain(&x, &cents, dim)
                    );
                }
            }
        }
        // The small path of `assign` (dispatched once per chunk, AVX2 where present).
        for (dim, k) in [(4usize, 16usize), (3, 16), (8, 256), (4, 7)] {
            let cents: Vec<f32> = (0..k * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let rows: Vec<f32> = (0..300 * dim)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let (labels, dists) = assign(&rows, dim, &cents);
            for (i, x) in rows.chunks_exact(dim).enumerate() {
                let (want, d) = plain(x, &cents, dim);
                assert_eq!(
                    (labels[i] as usize, dists[i]),
                    (want, d),
                    "dim {dim} k {k} row {i}"
                );
            }
        }
        // GEMM path (dim >= 16, k >= 16): labels of rows equal to a duplicated centroid.
        let (dim, k) = (32, 40);
        let mut cents: Vec<f32> = (0..k * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let c3 = cents[3 * dim..4 * dim].to_vec();
        cents[(k - 1) * dim..].copy_from_slice(&c3);
        let mut rows = c3.clone();
        rows.extend((0..99 * dim).map(|_| rng.random_range(-1.0f32..1.0)));
        let (labels, _) = assign(&rows, dim, &cents);
        assert_eq!(labels[0], 3);
        for (i, x) in rows.chunks_exact(dim).enumerate().skip(1) {
            // Away from ties, the GEMM argmin agrees with exact distances.
            let (want, _) = plain(x, &cents, dim);
            assert_eq!(labels[i] as usize, want, "row {i}");
        }
    }

    /// Four well separated blobs: k-means must put one centroid in each.
    #[test]
    fn recovers_separable_clusters() {
        let dim = 24;
        let centres: Vec<Vec<f32>> = (0..4)
            .map(|c| {
                (0..dim)
                    .map(|t| if t % 4 == c { 10.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut data = Vec::new();
        let mut truth = Vec::new();
        for i in 0..2000 {
            let c = i % 4;
            truth.push(c);
            for &x in &centres[c] {
                data.push(x + rng.random_range(-1.0f32..1.0));
            }
        }
        let p = KMeansParams::new(4, 11);
        let cents = train(&data, dim, &p, Cancel::NEVER).unwrap();
        // Every true centre has a centroid within distance 1.
        for c in &centres {
            let (_, d) = SmallCentroids::new(&cents, dim).nearest_body(c, &mut Vec::new());
            assert!(d < 1.0, "centre not recovered, dist {d}");
        }
        let (labels, _) = assign(&data, dim, &cents);
        // Same partition as the ground truth (up to relabelling).
        for i in 0..data.len() / dim {
            for j in 0..4 {
                assert_eq!(truth[i] == truth[j], labels[i] == labels[j]);
            }
        }
        assert_eq!(
            train(&data, dim, &p, Cancel::NEVER).unwrap(),
            cents,
            "deterministic for a seed"
        );
    }

    #[test]
    fn empty_clusters_get_repaired() {
        // 3 distinct points repeated, asking for 3 clusters but seeding can
        // collide; after training every cluster must be used.
        let dim = 2;
        let mut data = Vec::new();
        for i in 0..300 {
            let p = [[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]][i % 3];
            data.extend_from_slice(&p);
        }
        let cents = train(&data, dim, &KMeansParams::new(3, 1), Cancel::NEVER).unwrap();
        let (labels, _) = assign(&data, dim, &cents);
        let mut used = [false; 3];
        labels.iter().for_each(|&l| used[l as usize] = true);
        assert!(used.iter().all(|&u| u));
    }

    #[test]
    fn gemm_assignment_matches_direct() {
        let dim = 40;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let data: Vec<f32> = (0..600 * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let cents: Vec<f32> = data[..50 * dim].to_vec();
        let (labels, dists) = assign(&data, dim, &cents);
        for (i, x) in data.chunks(dim).enumerate() {
            let (arg, d) = SmallCentroids::new(&cents, dim).nearest_body(x, &mut Vec::new());
            assert!((dists[i] - d).abs() < 1e-3);
            if labels[i] as usize != arg {
                let other = distance::l2sq(x, &cents[labels[i] as usize * dim..][..dim]);
                assert!((other - d).abs() < 1e-3);
            }
        }
    }
}
