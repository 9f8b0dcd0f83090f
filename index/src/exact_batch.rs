//! Exact top-k for many queries at once: the ground truth a calibration (or a benchmark)
//! measures recall against.
//!
//! One query at a time, an exact scan reads every row from memory and does one dot product
//! per row, bound by memory bandwidth. Here rows are taken a tile at a time, transposed
//! (`dim × TILE`), and every query is scored against the tile while it sits in L1: each query
//! coordinate is broadcast against `TILE` contiguous row coordinates, so the kernel is a run of
//! fused multiply-adds on full vectors with no horizontal sums, and the data is read from
//! memory once per batch of queries rather than once per query.

use rayon::prelude::*;

use crate::metric::{Metric, Neighbor};
use crate::simd::{self, SimdLevel};

/// Rows per transposed tile (two 256-bit vectors of lanes).
pub(crate) const TILE: usize = 16;
/// Rows per parallel task.
const TASK_ROWS: usize = 64 * TILE;

/// Signature of the tile kernels: `out[q * TILE + j] = <query q, row j>` for the
/// `queries.len() / dim` queries against a transposed tile; `unsafe` because the SIMD build
/// needs its instruction set ([`Kernels::dots_tile`](crate::simd::Kernels) is the safe way in).
pub(crate) type TileKernel = unsafe fn(&[f32], &[f32], usize, &mut [f32]);

/// The tile kernel of `level`.
pub(crate) fn kernel_for(level: SimdLevel) -> TileKernel {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 => dots_tile_avx2,
        _ => dots_tile_portable,
    }
}

/// The portable kernel (the scalar and NEON levels; aarch64 fuses the multiply-adds).
unsafe fn dots_tile_portable(tile: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    // Only where the base instruction set fuses them: elsewhere `mul_add` is a libm call.
    dots_tile_body::<{ cfg!(target_arch = "aarch64") }>(tile, queries, dim, out);
}

/// The kernel compiled for AVX2 with FMA: same loop, fused multiply-adds on 8 lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_tile_avx2(tile: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    dots_tile_body::<true>(tile, queries, dim, out);
}

/// `acc + x * r`, fused when `FUSED`.
#[inline(always)]
fn madd<const FUSED: bool>(x: f32, r: f32, acc: f32) -> f32 {
    if FUSED {
        x.mul_add(r, acc)
    } else {
        acc + x * r
    }
}

#[inline(always)]
fn dots_tile_body<const FUSED: bool>(tile: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    let dim = dim.max(1);
    let tile = &tile[..dim * TILE];
    let mut qs = queries.chunks_exact(dim);
    let mut outs = out.chunks_exact_mut(TILE);
    // Two queries per pass: four accumulator vectors, one tile load feeding both.
    while let (Some(a), Some(oa)) = (qs.next(), outs.next()) {
        match (qs.next(), outs.next()) {
            (Some(b), Some(ob)) => {
                let mut acc_a = [0.0f32; TILE];
                let mut acc_b = [0.0f32; TILE];
                for ((row, &xa), &xb) in tile.chunks_exact(TILE).zip(a).zip(b) {
                    for l in 0..TILE {
                        acc_a[l] = madd::<FUSED>(xa, row[l], acc_a[l]);
                        acc_b[l] = madd::<FUSED>(xb, row[l], acc_b[l]);
                    }
                }
                oa.copy_from_slice(&acc_a);
                ob.copy_from_slice(&acc_b);
            }
            _ => {
                let mut acc = [0.0f32; TILE];
                for (row, &x) in tile.chunks_exact(TILE).zip(a) {
                    for l in 0..TILE {
                        acc[l] = madd::<FUSED>(x, row[l], acc[l]);
                    }
                }
                oa.copy_from_slice(&acc);
                break;
            }
        }
    }
}

/// Exact top-`k` rows of each of `queries` (row-major, `dim` floats each), best first, ties by
/// row; query `i` never gets row `skip[i]` (a query drawn from the data must not find itself).
/// Scores are computed from inner products (`-2<q, r>` plus the norms for L2), so they may
/// differ from [`exact_search`](crate::exact_search)'s in the last bits.
pub fn exact_search_batch(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    queries: &[f32],
    k: usize,
    skip: Option<&[u32]>,
) -> Vec<Vec<Neighbor>> {
    if dim == 0 {
        return Vec::new();
    }
    let nq = queries.len() / dim;
    let n = vectors.len() / dim;
    if k == 0 || n == 0 {
        return vec![Vec::new(); nq];
    }
    let mut qs = queries[..nq * dim].to_vec();
    if metric == Metric::Cosine {
        qs.chunks_exact_mut(dim)
            .for_each(crate::distance::normalize_in_place);
    }
    let q_norms: Vec<f32> = qs
        .chunks_exact(dim)
        .map(|q| crate::distance::dot(q, q))
        .collect();
    let kernels = simd::kernels();
    let empty = || vec![TopK::new(k); nq];
    let tops = vectors[..n * dim]
        .par_chunks(TASK_ROWS * dim)
        .enumerate()
        .fold(empty, |mut tops, (b, task)| {
            let mut tile = vec![0.0f32; dim * TILE];
            let mut dots = vec![0.0f32; nq * TILE];
            for (t, rows) in task.chunks(TILE * dim).enumerate() {
                let first = b * TASK_ROWS + t * TILE;
                let count = rows.len() / dim;
                // Transpose (zero-padded past the last row) and take each row's norm term.
                tile.iter_mut().for_each(|x| *x = 0.0);
                let mut extra = [0.0f32; TILE];
                for (j, r) in rows.chunks_exact(dim).enumerate() {
                    for (c, &x) in r.iter().enumerate() {
                        tile[c * TILE + j] = x;
                    }
                    let sq = crate::distance::dot(r, r);
                    extra[j] = match metric {
                        Metric::Cosine if sq > 0.0 => 1.0 / sq.sqrt(),
                        Metric::Cosine => 0.0,
                        Metric::Dot => 1.0,
                        Metric::L2 => sq,
                    };
                }
                kernels.dots_tile(&tile, &qs, dim, &mut dots);
                for (qi, top) in tops.iter_mut().enumerate() {
                    let own = skip.and_then(|s| s.get(qi)).copied();
                    let d = &dots[qi * TILE..(qi + 1) * TILE];
                    for j in 0..count {
                        let row = (first + j) as u32;
                        if own == Some(row) {
                            continue;
                        }
                        // A distance: lower is better for every metric.
                        let dist = match metric {
                            Metric::L2 => q_norms[qi] + extra[j] - 2.0 * d[j],
                            _ => -d[j] * extra[j],
                        };
                        top.offer(dist, row);
                    }
                }
            }
            tops
        })
        .reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                for (d, row) in y.items {
                    x.offer(d, row);
                }
            }
            a
        });
    tops.into_iter()
        .map(|t| {
            t.items
                .into_iter()
                .map(|(d, row)| Neighbor {
                    row,
                    score: if metric == Metric::L2 { d.max(0.0) } else { -d },
                })
                .collect()
        })
        .collect()
}

/// The `k` smallest `(distance, row)` pairs, kept sorted (ties by row); `k` is small.
#[derive(Debug, Clone)]
struct TopK {
    k: usize,
    items: Vec<(f32, u32)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    #[inline]
    fn offer(&mut self, d: f32, row: u32) {
        let better = |a: (f32, u32), b: (f32, u32)| a.0 < b.0 || (a.0 == b.0 && a.1 < b.1);
        if d.is_nan() {
            return;
        }
        if self.items.len() == self.k {
            match self.items.last() {
                Some(&worst) if better((d, row), worst) => {
                    self.items.pop();
                }
                _ => return,
            }
        }
        let at = self.items.partition_point(|&x| better(x, (d, row)));
        self.items.insert(at, (d, row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact_search;
    use rand::{Rng, SeedableRng};

    /// Pseudo-random rows in [-0.5, 0.5): no exact ties between distances.
    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * dim).map(|_| rng.random::<f32>() - 0.5).collect()
    }

    #[test]
    fn the_batch_matches_one_query_at_a_time_and_skips_each_query_own_row() {
        let dim = 12;
        let data = rows(1000, dim, 1);
        let queries: Vec<f32> = data[..5 * dim].to_vec();
        let skip: Vec<u32> = (0..5).collect();
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let batch = exact_search_batch(&data, dim, metric, &queries, 7, Some(&skip));
            assert_eq!(batch.len(), 5);
            for (i, got) in batch.iter().enumerate() {
                let own = i as u32;
                let not_own = move |r: u32| r != own;
                let q = &queries[i * dim..(i + 1) * dim];
                let want = exact_search(&data, dim, metric, q, 7, Some(&not_own));
                let ids = |v: &[Neighbor]| v.iter().map(|n| n.row).collect::<Vec<_>>();
                assert_eq!(ids(got), ids(&want), "{metric} query {i}");
                assert!(!ids(got).contains(&own));
                for (a, b) in got.iter().zip(&want) {
                    assert!((a.score - b.score).abs() < 1e-3, "{metric}: {a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn every_level_gives_the_same_neighbours() {
        let dim = 33;
        let data = rows(700, dim, 2);
        let queries = &data[dim * 3..dim * 10];
        let reference = {
            let mut out = vec![0.0f32; 7 * TILE];
            let tile: Vec<f32> = (0..dim * TILE).map(|i| (i % 17) as f32 * 0.1).collect();
            // SAFETY: the portable kernel has no requirement.
            unsafe { dots_tile_portable(&tile, queries, dim, &mut out) };
            (tile, out)
        };
        for level in SimdLevel::ALL {
            let Some(kernels) = simd::Kernels::of(level) else {
                continue;
            };
            let mut out = vec![0.0f32; 7 * TILE];
            kernels.dots_tile(&reference.0, queries, dim, &mut out);
            for (a, b) in out.iter().zip(&reference.1) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{level:?}: {a} vs {b}"
                );
            }
        }
        let rows_of = |v: Vec<Vec<Neighbor>>| -> Vec<Vec<u32>> {
            v.into_iter()
                .map(|x| x.into_iter().map(|n| n.row).collect())
                .collect()
        };
        let got = rows_of(exact_search_batch(&data, dim, Metric::L2, queries, 5, None));
        for (i, g) in got.iter().enumerate() {
            let want = exact_search(
                &data,
                dim,
                Metric::L2,
                &queries[i * dim..(i + 1) * dim],
                5,
                None,
            );
            assert_eq!(g, &want.iter().map(|n| n.row).collect::<Vec<_>>());
        }
    }
}
