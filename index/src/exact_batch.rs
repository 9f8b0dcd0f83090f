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
        SimdLevel::Avx2 => dots_tile_avx2,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => dots_tile_avx512,
        _ => dots_tile_portable,
    }
}

/// The portable kernel (the scalar and NEON levels; aarch64 fuses the multiply-adds).
unsafe fn dots_tile_portable(tile: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    // Only where the base instruction set fuses them: elsewhere `mul_add` is a libm call.
    dots_tile_blocks::<QUERY_BLOCK, { cfg!(target_arch = "aarch64") }>(tile, queries, dim, out);
}

/// The kernel compiled for AVX2 with FMA: same loop, fused multiply-adds on 8 lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_tile_avx2(tile: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    dots_tile_blocks::<QUERY_BLOCK, true>(tile, queries, dim, out);
}

/// The kernel compiled for AVX-512: a tile's `TILE` lanes are one 512-bit vector, so each
/// query's accumulator is one register where AVX2 needs two, and twice as many queries share
/// a pass over the tile ([`QUERY_BLOCK_512`]). The same fused multiply-adds in the same order
/// per lane: the same bits as [`dots_tile_avx2`].
///
/// # Safety
/// The CPU must support AVX-512F (and AVX2 and FMA, which every AVX-512 CPU has).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dots_tile_avx512(tile: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
    dots_tile_blocks::<QUERY_BLOCK_512, true>(tile, queries, dim, out);
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

/// Queries scored per pass over the tile: `QUERY_BLOCK · TILE / 8` = 12 accumulator vectors
/// at 8 lanes, enough independent fused multiply-add chains to cover their latency on two FMA
/// ports (two queries per pass, 4 chains, left half of them idle), with the tile's two vectors
/// and a broadcast still in registers.
const QUERY_BLOCK: usize = 6;

/// Queries per pass with AVX-512's 32 vector registers: one accumulator each, 12 chains.
#[cfg(target_arch = "x86_64")]
const QUERY_BLOCK_512: usize = 12;

/// Every query against the tile, `B` queries per full pass ([`QUERY_BLOCK`] on AVX2 and the
/// portable build, `QUERY_BLOCK_512` on AVX-512).
#[inline(always)]
fn dots_tile_blocks<const B: usize, const FUSED: bool>(
    tile: &[f32],
    queries: &[f32],
    dim: usize,
    out: &mut [f32],
) {
    let dim = dim.max(1);
    let tile = &tile[..dim * TILE];
    let nq = (queries.len() / dim).min(out.len() / TILE);
    let mut q = 0;
    while q + B <= nq {
        dots_block::<B, FUSED>(tile, &queries[q * dim..], dim, &mut out[q * TILE..]);
        q += B;
    }
    // The rest, a few at a time, each pass with as many chains as there are queries left.
    while q < nq {
        let left = nq - q;
        let (qs, os) = (&queries[q * dim..], &mut out[q * TILE..]);
        q += match left {
            1 => dots_block::<1, FUSED>(tile, qs, dim, os),
            2 => dots_block::<2, FUSED>(tile, qs, dim, os),
            3 => dots_block::<3, FUSED>(tile, qs, dim, os),
            _ => dots_block::<4, FUSED>(tile, qs, dim, os),
        };
    }
}

/// `out[i * TILE + j] = <query i, row j>` for the first `Q` queries of `queries`; returns `Q`.
/// Each step broadcasts one coordinate of every query against the tile's `TILE` lanes of that
/// coordinate, so one tile load feeds `Q` multiply-adds.
#[inline(always)]
fn dots_block<const Q: usize, const FUSED: bool>(
    tile: &[f32],
    queries: &[f32],
    dim: usize,
    out: &mut [f32],
) -> usize {
    let mut acc = [[0.0f32; TILE]; Q];
    let qs: [&[f32]; Q] = std::array::from_fn(|i| &queries[i * dim..(i + 1) * dim]);
    for (c, row) in tile.chunks_exact(TILE).enumerate() {
        for i in 0..Q {
            let x = qs[i][c];
            for l in 0..TILE {
                acc[i][l] = madd::<FUSED>(x, row[l], acc[i][l]);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        out[i * TILE..(i + 1) * TILE].copy_from_slice(a);
    }
    Q
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
    batch(vectors, dim, metric, queries, None, k, skip)
}

/// A second query set derived from the first: query `i` moved along one common `direction`
/// by `coefs[i]`, the way a calibration moves its queries off the data.
#[derive(Debug, Clone, Copy)]
pub struct ShiftedQueries<'a> {
    /// The common direction (`dim` floats).
    pub direction: &'a [f32],
    /// How far each query moves along it. For cosine the move applies to the normalised query
    /// (`q/‖q‖ + c·direction`, then normalised again); for dot and L2 to the query as given
    /// (`q + c·direction`).
    pub coefs: &'a [f32],
}

/// [`exact_search_batch`] for `queries` and for their moved copies `shifted` together: `2·n`
/// answers, the moved copy of query `i` at `n + i` (skipping `skip[i]` too). The inner product
/// of a moved query with a row is that of the query plus `c` times the direction's, so one
/// pass scores `n + 1` queries instead of `2·n`: half the arithmetic of passing the moved
/// copies as queries (the answers are the same up to rounding in the last bits).
pub fn exact_search_batch_shifted(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    queries: &[f32],
    shifted: ShiftedQueries<'_>,
    k: usize,
    skip: Option<&[u32]>,
) -> Vec<Vec<Neighbor>> {
    batch(vectors, dim, metric, queries, Some(shifted), k, skip)
}

/// The moved copies' constants: per query, the coefficient on the direction, the squared norm
/// of the moved query, and the factor turning its raw inner product into its score.
struct Moved {
    coefs: Vec<f32>,
    norms_sq: Vec<f32>,
    scale: Vec<f32>,
}

fn batch(
    vectors: &[f32],
    dim: usize,
    metric: Metric,
    queries: &[f32],
    shifted: Option<ShiftedQueries<'_>>,
    k: usize,
    skip: Option<&[u32]>,
) -> Vec<Vec<Neighbor>> {
    if dim == 0 {
        return Vec::new();
    }
    let nq = queries.len() / dim;
    let n = vectors.len() / dim;
    let answers = if shifted.is_some() { 2 * nq } else { nq };
    if k == 0 || n == 0 {
        return vec![Vec::new(); answers];
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
    // The direction rides along as one more query; each moved copy's inner product is then
    // `<q, r> + c·<direction, r>`, and `‖q + c·u‖² = ‖q‖² + 2c<q, u> + c²‖u‖²`.
    let moved = shifted.map(|s| {
        let u = &s.direction[..dim.min(s.direction.len())];
        let mut u = u.to_vec();
        u.resize(dim, 0.0);
        let uu = crate::distance::dot(&u, &u);
        let coefs: Vec<f32> = (0..nq)
            .map(|i| s.coefs.get(i).copied().unwrap_or(0.0))
            .collect();
        let norms_sq: Vec<f32> = qs
            .chunks_exact(dim)
            .zip(&coefs)
            .zip(&q_norms)
            .map(|((q, &c), &qq)| {
                (qq + 2.0 * c * crate::distance::dot(q, &u) + c * c * uu).max(0.0)
            })
            .collect();
        let scale = norms_sq
            .iter()
            .map(|&m| match metric {
                Metric::Cosine if m > 0.0 => 1.0 / m.sqrt(),
                Metric::Cosine => 0.0,
                _ => 1.0,
            })
            .collect();
        qs.extend_from_slice(&u);
        Moved {
            coefs,
            norms_sq,
            scale,
        }
    });
    let scored = qs.len() / dim;
    let kernels = simd::kernels();
    let empty = || vec![TopK::new(k); answers];
    let tops = vectors[..n * dim]
        .par_chunks(TASK_ROWS * dim)
        .enumerate()
        .fold(empty, |mut tops, (b, task)| {
            let mut tile = vec![0.0f32; dim * TILE];
            let mut dots = vec![0.0f32; scored * TILE];
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
                let along = &dots[nq * TILE..];
                let mut dist = [0.0f32; TILE];
                for qi in 0..nq {
                    let own = skip.and_then(|s| s.get(qi)).copied();
                    let d = &dots[qi * TILE..(qi + 1) * TILE];
                    // Most tiles hold nothing for most queries: the distances of the whole
                    // tile are compared with the query's k-th best at once (branch-free, so
                    // it vectorises) and only a tile with a contender is offered row by row.
                    if distances(metric, d, q_norms[qi], 1.0, &extra, &mut dist) <= tops[qi].worst()
                    {
                        tops[qi].offer_tile(&dist[..count], first, own);
                    }
                    if let Some(m) = &moved {
                        let c = m.coefs[qi];
                        let mut moved_dots = [0.0f32; TILE];
                        for j in 0..TILE {
                            moved_dots[j] = d[j] + c * along[j];
                        }
                        let (q_sq, scale) = (m.norms_sq[qi], m.scale[qi]);
                        if distances(metric, &moved_dots, q_sq, scale, &extra, &mut dist)
                            <= tops[nq + qi].worst()
                        {
                            tops[nq + qi].offer_tile(&dist[..count], first, own);
                        }
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

/// Distances (lower is better for every metric) of one query to a tile's rows from their
/// inner products `dots`, into `out`; returns the smallest. `q_sq` is the query's squared
/// norm, `scale` its inverse norm for cosine, `extra` each row's inverse norm (cosine), 1
/// (dot) or squared norm (L2).
#[inline(always)]
fn distances(
    metric: Metric,
    dots: &[f32],
    q_sq: f32,
    scale: f32,
    extra: &[f32; TILE],
    out: &mut [f32; TILE],
) -> f32 {
    let dots = &dots[..TILE];
    match metric {
        Metric::L2 => {
            for j in 0..TILE {
                out[j] = q_sq + extra[j] - 2.0 * dots[j];
            }
        }
        _ => {
            for j in 0..TILE {
                out[j] = -dots[j] * scale * extra[j];
            }
        }
    }
    // A NaN never wins the minimum, as `offer` never keeps one.
    out.iter()
        .fold(f32::INFINITY, |m, &x| if x < m { x } else { m })
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

    /// The distance a row must not exceed to be kept (ties go to the lower row, so a row at
    /// exactly this distance may still enter); infinite until `k` are kept.
    #[inline]
    fn worst(&self) -> f32 {
        if self.items.len() < self.k {
            f32::INFINITY
        } else {
            self.items.last().map_or(f32::INFINITY, |w| w.0)
        }
    }

    /// [`offer`](Self::offer) each of a tile's rows, numbered from `first`, but `own`.
    #[inline]
    fn offer_tile(&mut self, dist: &[f32], first: usize, own: Option<u32>) {
        for (j, &d) in dist.iter().enumerate() {
            let row = (first + j) as u32;
            if own != Some(row) {
                self.offer(d, row);
            }
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

    /// Rows repeated across tiles and parallel tasks tie exactly; with a tile's distances
    /// compared with the k-th best before its rows are offered, ties must still go to the
    /// lower row, as one query at a time has it.
    #[test]
    fn ties_at_the_kth_best_go_to_the_lower_row_as_one_at_a_time() {
        let dim = 8;
        let distinct = rows(600, dim, 5);
        // Every row four times, 600 rows apart: ties between tiles and between tasks.
        let data: Vec<f32> = (0..4).flat_map(|_| distinct.iter().copied()).collect();
        let queries = rows(6, dim, 6);
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for k in [1, 3, 6, 9] {
                let batch = exact_search_batch(&data, dim, metric, &queries, k, None);
                for (i, got) in batch.iter().enumerate() {
                    let q = &queries[i * dim..(i + 1) * dim];
                    let want = exact_search(&data, dim, metric, q, k, None);
                    let ids = |v: &[Neighbor]| v.iter().map(|n| n.row).collect::<Vec<_>>();
                    assert_eq!(ids(got), ids(&want), "{metric} k {k} query {i}");
                }
            }
        }
    }

    #[test]
    fn moved_queries_match_the_same_queries_moved_by_hand() {
        let dim = 24;
        let data = rows(1500, dim, 3);
        let nq = 9;
        let queries: Vec<f32> = data[..nq * dim].to_vec();
        let skip: Vec<u32> = (0..nq as u32).collect();
        let mut direction: Vec<f32> = rows(1, dim, 4);
        crate::distance::normalize_in_place(&mut direction);
        let coefs: Vec<f32> = (0..nq).map(|i| 0.2 + 0.15 * i as f32).collect();
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let shifted = ShiftedQueries {
                direction: &direction,
                coefs: &coefs,
            };
            let got =
                exact_search_batch_shifted(&data, dim, metric, &queries, shifted, 6, Some(&skip));
            assert_eq!(got.len(), 2 * nq);
            let plain = exact_search_batch(&data, dim, metric, &queries, 6, Some(&skip));
            assert_eq!(&got[..nq], &plain[..], "{metric}: the unmoved half");
            for i in 0..nq {
                let mut q = queries[i * dim..(i + 1) * dim].to_vec();
                if metric == Metric::Cosine {
                    crate::distance::normalize_in_place(&mut q);
                }
                q.iter_mut()
                    .zip(&direction)
                    .for_each(|(x, u)| *x += coefs[i] * u);
                let own = i as u32;
                let not_own = move |r: u32| r != own;
                let want = exact_search(&data, dim, metric, &q, 6, Some(&not_own));
                let ids = |v: &[Neighbor]| v.iter().map(|n| n.row).collect::<Vec<_>>();
                assert_eq!(ids(&got[nq + i]), ids(&want), "{metric} moved query {i}");
                for (a, b) in got[nq + i].iter().zip(&want) {
                    assert!((a.score - b.score).abs() < 1e-3, "{metric}: {a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn every_level_gives_the_same_neighbours() {
        let dim = 33;
        let data = rows(700, dim, 2);
        // 25 queries: two full blocks of AVX-512's 12 and one left; four AVX2 blocks of 6.
        let nq = 25;
        let queries = &data[dim * 3..dim * (3 + nq)];
        let reference = {
            let mut out = vec![0.0f32; nq * TILE];
            let tile: Vec<f32> = (0..dim * TILE).map(|i| (i % 17) as f32 * 0.1).collect();
            // SAFETY: the portable kernel has no requirement.
            unsafe { dots_tile_portable(&tile, queries, dim, &mut out) };
            (tile, out)
        };
        let mut by_level = Vec::new();
        for level in SimdLevel::ALL {
            let Some(kernels) = simd::Kernels::of(level) else {
                continue;
            };
            let mut out = vec![0.0f32; nq * TILE];
            kernels.dots_tile(&reference.0, queries, dim, &mut out);
            for (a, b) in out.iter().zip(&reference.1) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{level:?}: {a} vs {b}"
                );
            }
            by_level.push((level, out));
        }
        // The x86 kernels fuse the same multiply-adds in the same order per lane: equal bits.
        let fused: Vec<_> = by_level
            .iter()
            .filter(|(l, _)| matches!(l, SimdLevel::Avx2 | SimdLevel::Avx512))
            .collect();
        for w in fused.windows(2) {
            assert_eq!(w[0].1, w[1].1, "{:?} vs {:?}", w[0].0, w[1].0);
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
