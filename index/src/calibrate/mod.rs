//! Measuring an index's own recall when it is built, so searches can ask for a recall target
//! instead of trusting `nprobe`/`refine` constants fitted to one benchmark distribution.
//!
//! A sample of the index's rows (held out of training by the caller, see
//! [`calibration_rows`]) serves as queries twice: as they are, and moved off the data by one
//! common offset, the way CLIP text queries sit apart from image embeddings. Each query's
//! exact top-k (without its own row) is the truth. Then, instead of running a search per
//! candidate setting, each query scans the lists once in probe order
//! ([`search::scan_in_probe_order`]) and records, for every true neighbour and every `nprobe`
//! on the grid, how many entries of the first `nprobe` lists have a better approximate
//! distance: its rank among the candidates. A search with `nprobe` lists and `refine` keeps the
//! `k·refine` best candidates and re-ranks them exactly, so the neighbour is returned iff that
//! rank is below `k·refine`. That gives the recall of every (`nprobe`, `refine`) pair on the
//! grid from one scan per query; the cheapest pair under a cost model of the scan and the
//! re-rank (`cost`) that reaches each target on both query sets, less `margin_se` standard
//! errors and less the selection's optimism (`choose`), is kept.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::calibration::{Calibration, MAX_CALIBRATED_REFINE};
use crate::cancel::Cancel;
use crate::distance;
use crate::error::IndexError;
use crate::exact::{ShiftedQueries, exact_search_batch_shifted};
use crate::layout::IvfPqView;
use crate::metric::Metric;
use crate::search::{self, ScannedEntry};

mod choose;
mod codes;
mod cost;
mod margin;

use choose::{PerQuery, Replicates, Setting};
use cost::CostModel;

/// How a calibration samples and decides.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationOptions {
    /// The k of recall@k.
    pub k: usize,
    /// Queries per set (fewer on small indexes, see [`calibration_rows`]).
    pub queries: usize,
    /// Norm of the shifted set's common offset, relative to each row's norm (CLIP's
    /// text-to-image gap is of this order: text and image embeddings of one concept have a
    /// cosine of about 0.3, unrelated images about 0.5).
    pub shift: f32,
    /// Standard errors subtracted from a measured recall before it counts as reaching a
    /// target: a sample of a few hundred queries must not promise more than the data gives.
    pub margin_se: f32,
    /// Bootstrap replicates of the queries that measure how much choosing the cheapest of
    /// many settings flatters the choice (see `choose`); 0 leaves the margin at `margin_se`.
    pub bootstrap: usize,
    /// Seed of the row sample and of the offset's direction.
    pub seed: u64,
}

impl Default for CalibrationOptions {
    /// 256 queries per set (128 until 2026-12-07: their error of ~0.007 at a 0.95 target and
    /// ~0.011 at 0.90 let a sample drawn high land 0.017 under a 0.90 target at 1M rows), one
    /// and a half standard errors of margin (~0.008 at 0.95, ~0.012 at 0.90; one error let the
    /// default seed's sample of the hard mixture land its 0.90 target at 0.8865 and its 0.95
    /// target at 0.947), and 200 bootstrap replicates for the selection's optimism. A
    /// tolerance below the target was tried (two and a half errors, within 0.01): the hard
    /// mixture's 0.95 target then landed at 0.942–0.944.
    fn default() -> Self {
        CalibrationOptions {
            k: 10,
            queries: 256,
            shift: 0.6,
            margin_se: 1.5,
            bootstrap: 200,
            seed: 0xca1b_0f17,
        }
    }
}

/// Fewest rows a calibration runs on; smaller indexes keep the default parameters.
pub const MIN_CALIBRATION_ROWS: usize = 256;

/// `nprobe` values the calibration considers (those up to the index's list count).
/// Steps of about an eighth from 16 on: coarser steps left recall gaps between neighbours
/// (0.952 at 64:80, 0.967 at 80:80 on the hard mixture) that a target falling between had to
/// round up.
const NPROBE_GRID: [usize; 42] = [
    1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 36, 40, 44, 48, 56, 64, 72, 80, 88,
    96, 112, 128, 144, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024, 1280,
];

/// `refine` values the calibration considers.
const REFINE_GRID: [usize; 32] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 24, 28, 32, 36, 40, 48, 56, 64, 72, 80,
    96, 112, 128, 160, 192, 256,
];

/// Most lists a calibration query scans: beyond this, probing is no cheaper than an exact scan.
const MAX_SCANNED_LISTS: usize = 1280;

/// The rows of an index of `n` rows that a calibration with `opts` uses as queries, sorted.
/// Training should leave them out so the queries are as new to the quantizers as real ones.
/// Empty when `n` is below [`MIN_CALIBRATION_ROWS`].
pub fn calibration_rows(n: usize, opts: &CalibrationOptions) -> Vec<u32> {
    if n < MIN_CALIBRATION_ROWS || n > u32::MAX as usize {
        return Vec::new();
    }
    let count = opts.queries.min(n / 8).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut rows: Vec<u32> = rand::seq::index::sample(&mut rng, n, count)
        .into_iter()
        .map(|i| i as u32)
        .collect();
    rows.sort_unstable();
    rows
}

/// Where a search would meet one query's true neighbours: for each `nprobe` of the grid and
/// each neighbour, its rank among the candidates (`u32::MAX` when its list is not probed).
struct QueryRanks {
    /// `grid.len() * k` ranks, grid-major.
    ranks: Vec<u32>,
    /// Codes scanned with each grid `nprobe`.
    codes: Vec<u64>,
    /// Neighbours in the truth (k, or fewer on tiny data).
    truths: usize,
}

impl QueryRanks {
    /// Recall@k of this query at grid column `gi` with `refine` candidates per result.
    fn recall(&self, gi: usize, k: usize, refine: usize) -> f32 {
        if self.truths == 0 {
            return 1.0;
        }
        let cap = (k * refine) as u32;
        let hits = self.ranks[gi * k..gi * k + self.truths]
            .iter()
            .filter(|&&r| r < cap)
            .count();
        hits as f32 / self.truths as f32
    }
}

/// Measures the recall of `view` (built over `vectors`) at every grid setting and returns the
/// cheapest settings reaching each of [`CALIBRATION_TARGETS`] for the index as it is, without
/// the compact re-rank tier ([`measure_recall`] and [`RecallGrid::table`] choose for an index
/// with it). `rows` are the query rows (normally [`calibration_rows`]); `None` when there are
/// none. Stops with [`IndexError::Cancelled`] when `cancel` is set.
pub fn calibrate(
    view: &IvfPqView<'_>,
    vectors: &[f32],
    rows: &[u32],
    opts: &CalibrationOptions,
    cancel: Cancel<'_>,
) -> Result<Option<Calibration>, IndexError> {
    Ok(measure_recall(view, vectors, rows, opts, cancel)?.map(|g| g.table(false)))
}

/// What a calibration measured: the recall of every grid setting on both query sets, before
/// any is chosen. One measurement serves an index with or without the compact re-rank tier,
/// whose re-ranks cost differently ([`RecallGrid::table`]).
#[derive(Debug, Clone)]
pub struct RecallGrid {
    k: usize,
    queries: usize,
    shift: f32,
    settings: Vec<Setting>,
    replicates: Replicates,
    cost: CostModel,
    /// What the codes-only measurement re-runs ([`RecallGrid::measure_codes_only`]).
    sample: QuerySample,
}

/// A calibration's queries and their truth, kept for measuring searches that the rank model
/// cannot predict (ranking on the compact tier's codes).
#[derive(Debug, Clone)]
struct QuerySample {
    dim: usize,
    /// Both sets' queries, in-distribution first, `dim` floats each.
    queries: Vec<f32>,
    /// Each query's true top-k rows.
    truth: Vec<Vec<u32>>,
    /// Each query's own row, left out of its results.
    own: Vec<u32>,
    margin_se: f32,
}

/// The measuring half of [`calibrate`]: the recall of every grid setting, to choose a table
/// from with [`RecallGrid::table`] once it is known whether the index gets the compact tier.
pub fn measure_recall(
    view: &IvfPqView<'_>,
    vectors: &[f32],
    rows: &[u32],
    opts: &CalibrationOptions,
    cancel: Cancel<'_>,
) -> Result<Option<RecallGrid>, IndexError> {
    let dim = view.dim();
    let n = vectors.len() / dim.max(1);
    if !opts.margin_se.is_finite() || opts.margin_se < 0.0 {
        return Err(IndexError::InvalidParams(format!(
            "calibration margin {} is not a finite count of standard errors ≥ 0",
            opts.margin_se
        )));
    }
    if rows.is_empty() || opts.k == 0 || n <= opts.k || view.len() != n {
        return Ok(None);
    }
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= n) {
        return Err(IndexError::InvalidParams(format!(
            "calibration row {r} beyond the {n} rows"
        )));
    }
    let metric = view.metric();
    let nq = rows.len();
    let mut queries = Vec::with_capacity(2 * nq * dim);
    for &r in rows {
        queries.extend_from_slice(&vectors[r as usize * dim..(r as usize + 1) * dim]);
    }
    let offset = offset_direction(dim, opts.seed);
    let coefs: Vec<f32> = (0..nq)
        .map(|i| shift_coef(metric, &queries[i * dim..(i + 1) * dim], opts.shift))
        .collect();
    for i in 0..nq {
        let mut q = queries[i * dim..(i + 1) * dim].to_vec();
        shift_query(metric, &mut q, &offset, opts.shift);
        queries.extend_from_slice(&q);
    }
    let skip: Vec<u32> = rows.iter().chain(rows).copied().collect();
    cancel.check()?;
    // Both sets' truth in one pass (the moved queries' inner products are the rows' plus a
    // multiple of the offset's): the exact scan is most of a calibration's cost.
    let shifted = ShiftedQueries {
        direction: &offset,
        coefs: &coefs,
    };
    let truth = exact_search_batch_shifted(
        vectors,
        dim,
        metric,
        &queries[..nq * dim],
        shifted,
        opts.k,
        Some(rows),
    );
    cancel.check()?;

    let grid: Vec<usize> = NPROBE_GRID
        .iter()
        .copied()
        .filter(|&g| g <= view.nlist())
        .chain(std::iter::once(view.nlist()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let core = view.core();
    let mean_list = n as f64 / view.nlist() as f64;
    let ranks: Vec<QueryRanks> = (0..2 * nq)
        .into_par_iter()
        .map(|i| {
            cancel.check()?;
            let want: Vec<u32> = truth[i].iter().map(|t| t.row).collect();
            Ok(query_ranks(
                &grid,
                opts.k,
                mean_list,
                &want,
                skip[i],
                |max_lists, visit| {
                    search::scan_in_probe_order(
                        &core,
                        view,
                        &queries[i * dim..(i + 1) * dim],
                        max_lists,
                        visit,
                    )
                },
            ))
        })
        .collect::<Result<_, IndexError>>()?;

    let (inside, shifted) = ranks.split_at(nq);
    let refines: Vec<usize> = REFINE_GRID
        .iter()
        .copied()
        .filter(|&r| r <= MAX_CALIBRATED_REFINE)
        .collect();
    let mut per_query = PerQuery {
        queries: nq,
        ..PerQuery::default()
    };
    let mut shape = Vec::with_capacity(grid.len() * refines.len());
    for (gi, &g) in grid.iter().enumerate() {
        let codes = ranks.iter().map(|q| q.codes[gi] as f64).sum::<f64>() / ranks.len() as f64;
        for &r in &refines {
            per_query
                .inside
                .extend(inside.iter().map(|q| q.recall(gi, opts.k, r)));
            per_query
                .shifted
                .extend(shifted.iter().map(|q| q.recall(gi, opts.k, r)));
            shape.push((g, r, codes));
        }
    }
    cancel.check()?;
    Ok(Some(RecallGrid {
        k: opts.k,
        queries: nq,
        shift: opts.shift,
        settings: choose::settings_from(&per_query, shape.into_iter(), opts.margin_se),
        replicates: Replicates::draw(&per_query, opts.margin_se, opts.bootstrap, opts.seed),
        cost: CostModel::for_view(view),
        sample: QuerySample {
            dim,
            truth: truth
                .iter()
                .map(|t| t.iter().map(|n| n.row).collect())
                .collect(),
            queries,
            own: skip,
            margin_se: opts.margin_se,
        },
    }))
}

/// Scans one query's lists (through `scan`, which calls its visitor per list in probe order)
/// and ranks its true neighbours `want` for every grid `nprobe`. The scan stops once every
/// neighbour was found and as many lists again were scanned; at larger `nprobe` the lists not
/// scanned are assumed to hold as many competitors per list as the farther half of those that
/// were (farther lists hold fewer, so this errs towards more competitors, lower recall).
fn query_ranks(
    grid: &[usize],
    k: usize,
    mean_list: f64,
    want: &[u32],
    own: u32,
    scan: impl FnOnce(usize, &mut dyn FnMut(usize, &[ScannedEntry]) -> bool),
) -> QueryRanks {
    let max_lists = grid.last().copied().unwrap_or(1).min(MAX_SCANNED_LISTS);
    // (dist, probe position, row) of every entry, and where each neighbour was met.
    let mut entries: Vec<(f32, u32, u32)> = Vec::new();
    let mut found: Vec<Option<(f32, u32, u32)>> = vec![None; want.len()];
    let mut per_list: Vec<u32> = Vec::new();
    let mut missing = want.len();
    let mut stop_at = max_lists;
    scan(max_lists, &mut |pos, list| {
        per_list.push(list.len() as u32);
        for e in list {
            if e.row == own {
                continue;
            }
            if let Some(i) = want.iter().position(|&w| w == e.row)
                && found[i].is_none()
            {
                found[i] = Some((e.dist, pos as u32, e.row));
                missing -= 1;
                if missing == 0 {
                    stop_at = (2 * (pos + 1)).max(pos + 1 + 8).min(max_lists);
                }
            }
            entries.push((e.dist, pos as u32, e.row));
        }
        pos + 1 < stop_at
    });
    let scanned = per_list.len();
    let mut codes = Vec::with_capacity(grid.len());
    let mut prefix = 0u64;
    let mut upto = 0usize;
    for &g in grid {
        while upto < g.min(scanned) {
            prefix += per_list[upto] as u64;
            upto += 1;
        }
        let unseen = g.saturating_sub(scanned) as f64 * mean_list;
        codes.push(prefix + unseen as u64);
    }

    // Only entries at least as close as the farthest found neighbour can outrank one.
    let worst = found
        .iter()
        .flatten()
        .map(|f| f.0)
        .fold(f32::NEG_INFINITY, f32::max);
    // The search keeps the best candidates in (distance, row) order (`CandidatePool`), so an
    // entry beats a neighbour when it is before it in that order.
    let before = |a: &(f32, u32, u32), b: &(f32, u32, u32)| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2));
    let mut close: Vec<(f32, u32, u32)> = entries.into_iter().filter(|e| e.0 <= worst).collect();
    close.sort_unstable_by(before);
    let mut order: Vec<(f32, u32, u32, usize)> = found
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|(d, p, r)| (d, p, r, i)))
        .collect();
    order.sort_unstable_by(|a, b| before(&(a.0, a.1, a.2), &(b.0, b.1, b.2)));
    // Count, per probe position, the entries that beat each neighbour.
    let mut beaters = vec![0u32; scanned + 1];
    let mut next = 0usize;
    let mut ranks = vec![u32::MAX; grid.len() * k];
    let tail_from = scanned / 2;
    for (d, p, r, i) in order {
        let me = (d, p, r);
        while next < close.len() && before(&close[next], &me).is_lt() {
            beaters[close[next].1 as usize] += 1;
            next += 1;
        }
        let tail_rate = beaters[tail_from..scanned]
            .iter()
            .map(|&b| b as f64)
            .sum::<f64>()
            / (scanned - tail_from).max(1) as f64;
        let mut acc = 0u32;
        let mut upto = 0usize;
        for (gi, &g) in grid.iter().enumerate() {
            while upto < g.min(scanned) {
                acc += beaters[upto];
                upto += 1;
            }
            if (p as usize) < g {
                let unseen = (tail_rate * g.saturating_sub(scanned) as f64).ceil() as u32;
                ranks[gi * k + i] = acc.saturating_add(unseen);
            }
        }
    }
    QueryRanks {
        ranks,
        codes,
        truths: want.len().min(k),
    }
}

/// The direction of the shifted set's common offset: a seeded random unit vector.
fn offset_direction(dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0ff5_e7d1);
    // Box-Muller: Gaussian components make the direction uniform on the sphere.
    let mut u: Vec<f32> = (0..dim)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-300);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    distance::normalize_in_place(&mut u);
    u
}

/// How far [`shift_query`] moves `q` along the offset, in the terms of
/// [`ShiftedQueries::coefs`]: `shift` for cosine (which moves the normalised query), `shift`
/// times the query's norm otherwise.
fn shift_coef(metric: Metric, q: &[f32], shift: f32) -> f32 {
    if metric == Metric::Cosine {
        shift
    } else {
        shift * distance::norm(q)
    }
}

/// Moves `q` by `shift` times its own norm along `offset` (re-normalised for cosine).
fn shift_query(metric: Metric, q: &mut [f32], offset: &[f32], shift: f32) {
    let norm = distance::norm(q);
    if metric == Metric::Cosine {
        distance::normalize_in_place(q);
        q.iter_mut().zip(offset).for_each(|(x, u)| *x += shift * u);
        distance::normalize_in_place(q);
    } else {
        q.iter_mut()
            .zip(offset)
            .for_each(|(x, u)| *x += shift * norm * u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::{CALIBRATION_TARGETS, CalibrationPoint};
    use crate::synthetic::{SyntheticSpec, generate};
    use crate::{IndexParams, IvfPqIndex, SearchParams, exact_search_batch};

    /// A cosine index over `data` trained without the default calibration's rows, and its
    /// recall grid over those rows (the tests of the measurements on a written index).
    pub(super) fn held_out_grid(
        data: &crate::synthetic::SyntheticData,
    ) -> (IvfPqIndex, RecallGrid) {
        let (ix, rows) = held_out_index(data);
        let opts = CalibrationOptions::default();
        let grid = measure_recall(&ix.view(), &data.vectors, &rows, &opts, Cancel::NEVER)
            .expect("measure")
            .expect("a grid");
        (ix, grid)
    }

    /// A cosine index over `data` trained without the default calibration's rows, and those
    /// rows.
    fn held_out_index(data: &crate::synthetic::SyntheticData) -> (IvfPqIndex, Vec<u32>) {
        let rows = calibration_rows(data.n(), &CalibrationOptions::default());
        let ix = IvfPqIndex::build_holding_out(
            &data.vectors,
            data.dim,
            Metric::Cosine,
            &IndexParams::default(),
            &rows,
            Cancel::NEVER,
        )
        .expect("build");
        (ix, rows)
    }

    /// A calibrated index over `data` (cosine) and its table.
    fn calibrated(data: &crate::synthetic::SyntheticData) -> (IvfPqIndex, Calibration) {
        let opts = CalibrationOptions::default();
        let (ix, rows) = held_out_index(data);
        assert_eq!(rows.len(), opts.queries.min(data.n() / 8));
        let table = calibrate(&ix.view(), &data.vectors, &rows, &opts, Cancel::NEVER)
            .expect("calibrate")
            .expect("a table");
        (ix, table)
    }

    /// Recall@10 of `view` on `queries` with the table's parameters for `target`.
    fn measured(
        view: &IvfPqView<'_>,
        vectors: &[f32],
        queries: &[f32],
        p: &CalibrationPoint,
    ) -> f64 {
        let dim = view.dim();
        let truth = exact_search_batch(vectors, dim, view.metric(), queries, 10, None);
        let params = SearchParams {
            k: 10,
            nprobe: Some(p.nprobe as usize),
            refine: Some(p.refine as usize),
            rescore: true,
            tier_margin: 1.0,
        };
        let hits: usize = truth
            .iter()
            .enumerate()
            .map(|(i, want)| {
                let got = view.search(&queries[i * dim..(i + 1) * dim], vectors, &params, None);
                got.iter()
                    .filter(|g| want.iter().any(|w| w.row == g.row))
                    .count()
            })
            .sum();
        hits as f64 / (10 * truth.len()) as f64
    }

    /// The table is measured on rows of the data and on those rows moved along one random
    /// direction; it must hold on queries it never saw, drawn another way: fresh points of the
    /// mixture, shifted along the generator's own (different) direction, and unshifted.
    #[test]
    fn calibrated_parameters_reach_their_target_on_queries_of_another_distribution() {
        for (name, mut spec) in [
            ("hard", SyntheticSpec::hard(20_000, 400, 64, 7)),
            ("clip_like", SyntheticSpec::clip_like(20_000, 400, 64, 7)),
        ] {
            for shift in [0.0, 0.45] {
                spec.query_shift = shift;
                let data = generate(&spec);
                let (ix, table) = calibrated(&data);
                for target in [0.9, 0.95] {
                    let p = table.point_for(target).expect("a point");
                    assert!(p.reached, "{name}: {target} not reached: {p:?}");
                    let got = measured(&ix.view(), &data.vectors, &data.queries, p);
                    assert!(
                        got >= target as f64 - 0.01,
                        "{name}, query shift {shift}: target {target} with {p:?} measured {got:.4}"
                    );
                }
            }
        }
    }

    /// The compact tier makes a re-rank cheaper and nothing else, so a table costed for it
    /// never re-ranks less for a target than the plain one, reaches the same targets, and on
    /// the hard mixture (whose targets need deep re-ranks) re-ranks deeper somewhere.
    #[test]
    fn a_table_costed_for_the_compact_tier_reranks_at_least_as_deep() {
        let data = generate(&SyntheticSpec::hard(20_000, 0, 64, 9));
        let opts = CalibrationOptions::default();
        let (ix, rows) = held_out_index(&data);
        let grid = measure_recall(&ix.view(), &data.vectors, &rows, &opts, Cancel::NEVER)
            .expect("measure")
            .expect("a grid");
        let (plain, tier) = (grid.table(false), grid.table(true));
        assert_eq!(
            calibrate(&ix.view(), &data.vectors, &rows, &opts, Cancel::NEVER).expect("calibrate"),
            Some(plain.clone())
        );
        for (p, t) in plain.points.iter().zip(&tier.points) {
            assert_eq!(p.target, t.target);
            assert_eq!(p.reached, t.reached, "{p:?} vs {t:?}");
            assert!(t.refine >= p.refine, "{p:?} vs {t:?}");
        }
        assert!(
            plain
                .points
                .iter()
                .zip(&tier.points)
                .any(|(p, t)| t.refine > p.refine),
            "{plain:?} vs {tier:?}"
        );
    }

    #[test]
    fn cheaper_targets_never_cost_more_and_the_table_survives_the_index_file() {
        let data = generate(&SyntheticSpec::clip_like(8_000, 0, 32, 3));
        let (ix, table) = calibrated(&data);
        let opts = CalibrationOptions::default();
        let rows = calibration_rows(data.n(), &opts);
        assert_eq!(table.points.len(), CALIBRATION_TARGETS.len());
        for w in table.points.windows(2) {
            if w[1].reached {
                assert!(w[1].expected_recall() >= w[0].target - 1e-6, "{w:?}");
            }
        }
        let bytes = ix.to_bytes_with(Some(&table), None);
        assert_eq!(
            IvfPqView::read_calibration(&bytes).expect("valid").as_ref(),
            Some(&table)
        );
        // The same index without a table reads as uncalibrated; both search alike.
        let plain = ix.to_bytes();
        assert_eq!(IvfPqView::read_calibration(&plain).expect("valid"), None);
        let q = &data.vectors[..32];
        let params = SearchParams::default();
        let a =
            IvfPqView::from_bytes(&bytes)
                .expect("view")
                .search(q, &data.vectors, &params, None);
        let b =
            IvfPqView::from_bytes(&plain)
                .expect("view")
                .search(q, &data.vectors, &params, None);
        assert_eq!(a, b);
        // A table too small to calibrate gives none; a cancelled one stops.
        assert!(calibration_rows(MIN_CALIBRATION_ROWS - 1, &opts).is_empty());
        // A margin that is not a finite count of errors is refused, not turned into NaN bounds.
        for margin_se in [f32::NAN, f32::INFINITY, -1.0] {
            let bad = CalibrationOptions {
                margin_se,
                ..opts.clone()
            };
            assert!(matches!(
                calibrate(&ix.view(), &data.vectors, &rows, &bad, Cancel::NEVER),
                Err(IndexError::InvalidParams(_))
            ));
        }
        let flag = std::sync::atomic::AtomicBool::new(true);
        assert!(matches!(
            calibrate(&ix.view(), &data.vectors, &rows, &opts, Cancel::on(&flag)),
            Err(IndexError::Cancelled)
        ));
    }

    #[test]
    fn a_damaged_calibration_section_is_an_error_not_a_panic() {
        let data = generate(&SyntheticSpec::clip_like(4_000, 0, 16, 5));
        let (ix, table) = calibrated(&data);
        let bytes = ix.to_bytes_with(Some(&table), None);
        let at = u64::from_le_bytes(bytes[168..176].try_into().expect("8 bytes")) as usize;
        let len = u64::from_le_bytes(bytes[176..184].try_into().expect("8 bytes")) as usize;
        assert!(at >= 192 && at + len <= bytes.len());
        // Every byte of the section flipped in turn: an error or a valid table, never a panic.
        for i in at..at + len {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = IvfPqView::read_calibration(&b);
        }
        // The section pointed past the end, or into the header.
        let mut b = bytes.clone();
        b[168..176].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        assert!(IvfPqView::from_bytes(&b).is_err());
        let mut b = bytes.clone();
        b[168..176].copy_from_slice(&64u64.to_le_bytes());
        assert!(IvfPqView::from_bytes(&b).is_err());
        // An nprobe beyond the index's lists.
        let mut b = bytes.clone();
        b[at + 24 + 4..at + 24 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(IvfPqView::read_calibration(&b).is_err());
    }
}
