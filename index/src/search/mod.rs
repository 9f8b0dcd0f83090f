//! The query path shared by the in-memory index and the zero-copy view:
//! coarse probe, per-query LUTs, ADC scan with a bounded candidate heap and
//! the row filter applied during the scan, then exact re-ranking.

mod margin;
mod pagein;
#[cfg(all(test, target_os = "linux"))]
mod prune_tests;
mod rerank;

pub(crate) use margin::needed_tier_margin;
use rerank::{best_k, rerank};

use std::time::{Duration, Instant};

use crate::coarse::{self, CoarseI8};
use crate::distance;
use crate::fastscan::{self, BLOCK};
use crate::metric::{Metric, Neighbor};
use crate::params::{PqBits, SearchParams, default_nprobe, default_refine};
use crate::pq::PqCodebooks;
use crate::shape::IndexShape;
use crate::simd::{self, Kernels};
use crate::tier::{CompactKind, TierRef};

/// Where one search spent its time and how much it looked at, for
/// monitoring (the storage engine sums it over segments; the server exports
/// it as the `ann_scan` and `rerank` stages).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SearchStats {
    /// Lists scanned (at least `nprobe`, more when a filter leaves too few candidates).
    pub lists_scanned: u64,
    /// Codes read by the scan.
    pub codes_scanned: u64,
    /// Candidates re-ranked against the raw vectors.
    pub reranked: u64,
    /// Candidates scored on the compact tier's codes before the re-rank (those the
    /// bound could not rule out are the ones re-ranked).
    pub compact_scored: u64,
    /// Coarse ranking, distance tables and list scans.
    pub scan: Duration,
    /// Exact re-ranking of the candidates.
    pub rerank: Duration,
}

impl SearchStats {
    /// Adds `other` (another segment's search for the same query).
    pub fn add(&mut self, other: &SearchStats) {
        self.lists_scanned += other.lists_scanned;
        self.codes_scanned += other.codes_scanned;
        self.reranked += other.reranked;
        self.compact_scored += other.compact_scored;
        self.scan += other.scan;
        self.rerank += other.rerank;
    }
}

/// One inverted list as borrowed slices.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListRef<'a> {
    /// Row numbers of the entries.
    pub ids: &'a [u32],
    /// `1 / ||v||` of each entry's raw vector (cosine only, else empty).
    pub inv_norms: &'a [f32],
    /// Codes: row-major `m` bytes per entry (8-bit) or packed blocks (4-bit).
    pub codes: &'a [u8],
    /// Position of the list's first entry in the index's entry order (lists concatenated), where
    /// a compact tier stored in that order keeps the entry's codes.
    pub first_entry: u32,
}

/// The trained, list-independent parts of an index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Core<'a> {
    pub shape: IndexShape,
    pub centroids: &'a [f32],
    pub coarse: &'a CoarseI8,
    pub codebooks: &'a [f32],
    /// The compact re-rank tier (index files that carry one).
    pub compact: Option<&'a TierRef<'a>>,
}

impl<'a> Core<'a> {
    /// The PQ codebooks as the scanner reads them.
    fn pq(&self) -> PqCodebooks<'a> {
        PqCodebooks {
            dim: self.shape.dim,
            m: self.shape.m,
            ksub: self.shape.bits.ksub(),
            data: self.codebooks,
        }
    }
}

/// Access to inverted lists, implemented by the index and the view.
pub(crate) trait Lists {
    fn list(&self, l: usize) -> ListRef<'_>;
}

/// A scanned candidate: approximate distance (lower is better).
#[derive(Debug, Clone, Copy)]
struct Cand {
    dist: f32,
    row: u32,
    inv_norm: f32,
    /// Position in the index's entry order (see [`ListRef::first_entry`]).
    entry: u32,
}

/// The `cap` smallest candidates by `dist`, kept as a reservoir: candidates below the current
/// threshold are appended, and when the buffer holds `2·cap` a selection keeps the `cap` best
/// (ties by row) and tightens the threshold to the worst kept. Amortised O(1) per candidate,
/// where a binary heap pays `log2(cap)` swaps; with the large re-rank depths that hard data
/// needs (`k·refine` in the hundreds) the scan spent most of its time in the heap.
struct CandidatePool {
    cap: usize,
    items: Vec<Cand>,
    /// Candidates at or above this cannot be among the `cap` best.
    threshold: f32,
}

impl CandidatePool {
    fn new(cap: usize) -> Self {
        CandidatePool {
            cap,
            // `cap` comes from the caller's k; grow lazily beyond a sane size.
            items: Vec::with_capacity(cap.saturating_mul(2).min(8192) + 1),
            threshold: f32::INFINITY,
        }
    }
    #[inline]
    fn full(&self) -> bool {
        self.items.len() >= self.cap
    }
    /// The bound a candidate must beat to be kept: the worst of the last selection (infinite
    /// before the first).
    #[inline]
    fn worst(&self) -> f32 {
        self.threshold
    }
    /// Keeps entry `i` of `list` at distance `d` if it beats the current
    /// worst and `filter` allows its row (asked last: it may be costly).
    /// Shared by the 4-bit and 8-bit scans; inlined into both loops.
    #[inline(always)]
    fn offer(
        &mut self,
        list: &ListRef<'_>,
        i: usize,
        d: f32,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) {
        if d < self.threshold {
            let row = list.ids[i];
            if filter.is_none_or(|f| f(row)) {
                self.push(Cand {
                    dist: d,
                    row,
                    inv_norm: list.inv_norms.get(i).copied().unwrap_or(1.0),
                    entry: list.first_entry.wrapping_add(i as u32),
                });
            }
        }
    }

    #[inline]
    fn push(&mut self, c: Cand) {
        if c.dist < self.threshold {
            self.items.push(c);
            if self.items.len() >= self.cap.saturating_mul(2).max(self.cap.saturating_add(1)) {
                self.select();
            }
        }
    }

    /// Keeps the `cap` best (ties by row, so the result does not depend on arrival order
    /// within a selection) and sets the threshold to the worst of them.
    fn select(&mut self) {
        if self.items.len() > self.cap && self.cap > 0 {
            let by = |a: &Cand, b: &Cand| a.dist.total_cmp(&b.dist).then(a.row.cmp(&b.row));
            self.items.select_nth_unstable_by(self.cap - 1, by);
            self.items.truncate(self.cap);
            self.threshold = self.items[self.cap - 1].dist;
        } else if self.cap == 0 {
            self.items.clear();
            self.threshold = f32::NEG_INFINITY;
        }
    }

    /// The `cap` best candidates, in no particular order.
    fn into_best(mut self) -> Vec<Cand> {
        self.select();
        self.items
    }
}

/// The query as the index sees it (unit length for cosine).
fn internal_query(metric: Metric, query: &[f32]) -> Vec<f32> {
    let mut q = query.to_vec();
    if metric == Metric::Cosine {
        distance::normalize_in_place(&mut q);
    }
    q
}

/// Lists ordered by coarse distance (lower is better): the first `nprobe`
/// are sorted exactly; the rest follow in sorted order too, computed only
/// when needed (`order_rest`).
struct Probe {
    scored: Vec<(f32, u32)>,
    sorted_upto: usize,
}

impl Probe {
    fn new(core: &Core<'_>, q: &[f32], nprobe: usize) -> Probe {
        // Lists are Voronoi cells of the centroids under L2 (that is how rows were assigned),
        // so cosine probes them by L2 too: the query is unit length, and ranking by inner
        // product instead would favour tight clusters (centroids of larger norm) over the
        // cells the neighbours were actually put in. Only `dot`, where norms carry meaning,
        // ranks by inner product.
        let ip = core.shape.metric == Metric::Dot;
        let scored = coarse::rank(q, core.centroids, core.coarse, core.shape.dim, ip, nprobe);
        let np = nprobe.min(scored.len());
        Probe {
            scored,
            sorted_upto: np,
        }
    }

    fn order_rest(&mut self) {
        let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        self.scored[self.sorted_upto..].sort_unstable_by(cmp);
        self.sorted_upto = self.scored.len();
    }
}

/// Searches `lists` for the `params.k` best rows for `query`, re-ranking
/// against the caller's raw `vectors` (`core.shape.dim` floats a row); adds what
/// it did to `stats`.
pub(crate) fn search<L: Lists + ?Sized>(
    core: &Core<'_>,
    lists: &L,
    query: &[f32],
    vectors: &[f32],
    params: &SearchParams,
    filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    stats: &mut SearchStats,
) -> Vec<Neighbor> {
    let started = Instant::now();
    let dim = core.shape.dim;
    let Some((q, mut cands)) = candidates(core, lists, query, vectors, params, filter, stats)
    else {
        return Vec::new();
    };
    let scanned = Instant::now();
    stats.scan += scanned - started;
    if let Some((tier, q_tier)) = tier_and_query(core, query, &q) {
        let keys = tier_keys(tier, &cands);
        if !params.rescore {
            stats.compact_scored += cands.len() as u64;
            let out = rank_on_codes(tier, q_tier, &keys, cands, |rest| {
                stats.reranked += rest.len() as u64;
                rerank(core.shape.metric, dim, query, &q, vectors, rest, params.k)
            });
            stats.rerank += scanned.elapsed();
            return best_k(core.shape.metric, out, params.k);
        }
        if prunes_on_tier(tier.kind(), params, &cands, vectors, dim) {
            // Rule out, on the tier's codes, the candidates that cannot reach the top k.
            stats.compact_scored += cands.len() as u64;
            let keep = tier.survivors(q_tier, &keys, params.k, params.tier_margin_share());
            cands = keep.into_iter().map(|i| cands[i]).collect();
            // A tier lets the raw rows live out of memory: have the survivors' pages read
            // together rather than fault one after another.
            pagein::page_in_rows(vectors, dim, cands.iter().map(|c| c.row));
        }
    }
    stats.reranked += cands.len() as u64;
    let out = rerank(core.shape.metric, dim, query, &q, vectors, cands, params.k);
    stats.rerank += scanned.elapsed();
    out
}

/// The query in the index's space and the `k·refine` best candidates of the scan of `params`'
/// lists (more lists when a filter leaves too few); `None` for `k` 0, a query of the wrong
/// length or an index without lists.
fn candidates<L: Lists + ?Sized>(
    core: &Core<'_>,
    lists: &L,
    query: &[f32],
    vectors: &[f32],
    params: &SearchParams,
    filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    stats: &mut SearchStats,
) -> Option<(Vec<f32>, Vec<Cand>)> {
    let dim = core.shape.dim;
    if params.k == 0 || query.len() != dim || core.shape.nlist == 0 {
        return None;
    }
    let nprobe = params
        .nprobe
        .unwrap_or_else(|| default_nprobe(core.shape.nlist))
        .clamp(1, core.shape.nlist);
    let refine = params
        .refine
        .unwrap_or_else(|| default_refine(vectors.len() / dim))
        .max(1);
    let cap = params.k.saturating_mul(refine).max(params.k);
    let q = internal_query(core.shape.metric, query);
    let mut probe = Probe::new(core, &q, nprobe);
    let mut heap = CandidatePool::new(cap);
    let pq = core.pq();
    let mut scanner = Scanner::new(core, pq, &q);
    let mut next = 0usize;
    // Probe `nprobe` lists; if they held fewer than `k * refine` (allowed)
    // candidates, keep probing in coarse order until the heap is full or
    // every list was seen, which degenerates into an exact scan over the
    // allowed rows for very selective filters.
    while next < probe.scored.len() {
        if next >= nprobe {
            if heap.full() {
                break;
            }
            if probe.sorted_upto < probe.scored.len() {
                probe.order_rest();
            }
        }
        let (coarse, l) = probe.scored[next];
        next += 1;
        let list = lists.list(l as usize);
        if list.ids.is_empty() {
            continue;
        }
        // The probe's score is the scan's bias only where both are the inner product.
        let exact = (next <= nprobe && core.shape.metric == Metric::Dot).then_some(coarse);
        stats.lists_scanned += 1;
        stats.codes_scanned += list.ids.len() as u64;
        scanner.scan(core, exact, l as usize, list, &mut heap, filter);
    }
    Some((q, heap.into_best()))
}

/// The index's compact tier and the query it scores (`q`, the query in the index's space,
/// for cosine; the caller's `query` for dot); `None` without a tier and for L2.
fn tier_and_query<'a, 'q>(
    core: &Core<'a>,
    query: &'q [f32],
    q: &'q [f32],
) -> Option<(&'a TierRef<'a>, &'q [f32])> {
    let tier = core.compact?;
    match core.shape.metric {
        Metric::Cosine => Some((tier, q)),
        Metric::Dot => Some((tier, query)),
        Metric::L2 => None,
    }
}

/// Where each candidate's codes sit in `tier`: its entry (codes in entry order, list by list,
/// so the candidates of one list are near one another) or, in files written before that, its
/// row.
fn tier_keys(tier: &TierRef<'_>, cands: &[Cand]) -> Vec<u32> {
    if tier.by_entry() {
        cands.iter().map(|c| c.entry).collect()
    } else {
        cands.iter().map(|c| c.row).collect()
    }
}

/// The candidates ranked on the tier's codes, with their code scores (see
/// [`SearchParams::rescore`]); `keys` locate each candidate's codes. The few without codes (none
/// in a file that passed validation) are scored by `exact` instead, the only raw reads.
fn rank_on_codes(
    tier: &TierRef<'_>,
    q_tier: &[f32],
    keys: &[u32],
    cands: Vec<Cand>,
    exact: impl FnOnce(Vec<Cand>) -> Vec<Neighbor>,
) -> Vec<Neighbor> {
    let scores = tier.scores(q_tier, keys);
    let mut out = Vec::with_capacity(cands.len());
    let mut uncoded = Vec::new();
    for (c, s) in cands.into_iter().zip(scores) {
        match s {
            Some(score) => out.push(Neighbor { row: c.row, score }),
            None => uncoded.push(c),
        }
    }
    if !uncoded.is_empty() {
        out.extend(exact(uncoded));
    }
    out
}

/// One entry of a list scanned by [`scan_in_probe_order`]: its approximate distance (lower is
/// better, comparable across lists) and its row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScannedEntry {
    pub dist: f32,
    pub row: u32,
}

/// Scans up to `max_lists` lists in the order a search would probe them for `query`, with no
/// filter and no bound on candidates, and hands each list's entries to `visit` with the list's
/// probe position (0 first); stops early when `visit` returns false. Calibration uses it to
/// find where a search would meet each true neighbour, for every `nprobe` and `refine` at once.
pub(crate) fn scan_in_probe_order<L: Lists + ?Sized>(
    core: &Core<'_>,
    lists: &L,
    query: &[f32],
    max_lists: usize,
    mut visit: impl FnMut(usize, &[ScannedEntry]) -> bool,
) {
    let dim = core.shape.dim;
    if query.len() != dim || core.shape.nlist == 0 {
        return;
    }
    let max_lists = max_lists.clamp(1, core.shape.nlist);
    let q = internal_query(core.shape.metric, query);
    let probe = Probe::new(core, &q, max_lists);
    let pq = core.pq();
    let mut scanner = Scanner::new(core, pq, &q);
    let mut heap = CandidatePool::new(usize::MAX);
    let mut entries = Vec::new();
    for (pos, &(coarse, l)) in probe.scored.iter().take(max_lists).enumerate() {
        heap.items.clear();
        entries.clear();
        let list = lists.list(l as usize);
        if !list.ids.is_empty() {
            let exact = (core.shape.metric == Metric::Dot).then_some(coarse);
            scanner.scan(core, exact, l as usize, list, &mut heap, None);
            entries.extend(heap.items.iter().map(|c| ScannedEntry {
                dist: c.dist,
                row: c.row,
            }));
        }
        if !visit(pos, &entries) {
            break;
        }
    }
}

/// Whether a search with a compact tier of `kind` scores `cands` on it before the re-rank:
/// always from [`min_per_result`] candidates per result; below that only when a raw row it
/// would read is out of memory (a `mincore` of the first and the last candidate's rows: the
/// candidates are in no order, so these are a sample of two). With the rows resident a
/// shallow re-rank reads them faster than it would score their codes; with them out, each row
/// the bound rules out is a page fault saved (on `clip_like` at 200k, whose 0.95 point
/// re-ranks 9 per result, 90 raw reads a query become ~15).
fn prunes_on_tier(
    kind: CompactKind,
    params: &SearchParams,
    cands: &[Cand],
    vectors: &[f32],
    dim: usize,
) -> bool {
    let k = params.k;
    if cands.len() <= k {
        return false;
    }
    let out = |c: &Cand| !pagein::row_resident(vectors, dim, c.row);
    cands.len() >= min_per_result(kind, params.tier_margin_share()).saturating_mul(k)
        || cands.first().is_some_and(out)
        || cands.last().is_some_and(out)
}

/// Fewest candidates per result from which a search prunes on a tier of `kind` with the raw
/// rows resident: [`COMPACT_MIN_PER_RESULT`] under the full margin; under a measured one
/// (`share` below 1), which leaves ~12–17 raw rows a query whatever the depth, fewer: the
/// depth at which scoring the codes first cost no more than re-ranking every candidate from
/// memory (on `index_bench` at 200k × 512, both mixtures, 8:6 to 64:16, measured margins,
/// every search pruning against none: 8-bit codes 1–6 % faster at 6 per result, 6–10 % at 9,
/// 15–20 % at 16; rotated 6-bit codes, which rotate the query first, 6–13 % slower at 6 and 9,
/// within 2 % at 10 and 12, 3–13 % faster from 16).
fn min_per_result(kind: CompactKind, share: f32) -> usize {
    match kind {
        _ if share >= 1.0 => COMPACT_MIN_PER_RESULT,
        CompactKind::Sq8 => 6,
        CompactKind::Rotated6 => 12,
    }
}

/// Fewest candidates per result for which the compact tier is used. Scoring a candidate's codes
/// costs about as much as re-ranking its resident raw row, and the bound rules out a share that
/// grows with the candidates (on `index_bench` at 200k: 56 % of 100 on CLIP-like data, where the
/// tier was 11 % slower with the raw rows in memory; most of 640 on the hard mixture, 9-16 %
/// faster from 320 on), so below this the raw rows are read directly.
pub const COMPACT_MIN_PER_RESULT: usize = 24;

/// Per-query scanning state: float and quantized LUTs.
struct Scanner<'a> {
    pq: PqCodebooks<'a>,
    ip: bool,
    /// Query in the index's space.
    q: Vec<f32>,
    /// Float LUT, `m * ksub` (shared by all lists for inner product).
    lut: Vec<f32>,
    /// Residual query buffer (L2).
    resid: Vec<f32>,
    // 4-bit state.
    mins: Vec<f32>,
    qlut: Vec<u8>,
    scale: f32,
    sum_mins: f32,
    acc: [u16; BLOCK],
    kernels: &'static Kernels,
}

impl<'a> Scanner<'a> {
    fn new(core: &Core<'a>, pq: PqCodebooks<'a>, q: &[f32]) -> Self {
        let ip = core.shape.metric != Metric::L2;
        let mut s = Scanner {
            pq,
            ip,
            q: q.to_vec(),
            lut: vec![0.0; pq.m * pq.ksub],
            resid: vec![0.0; core.shape.dim],
            mins: vec![0.0; pq.m],
            qlut: vec![0; fastscan::lut_bytes(pq.m)],
            scale: 1.0,
            sum_mins: 0.0,
            acc: [0; BLOCK],
            kernels: simd::kernels(),
        };
        if ip {
            pq.lut(q, true, &mut s.lut);
            if core.shape.bits == PqBits::Four {
                s.quantize_shared();
            }
        }
        s
    }

    /// Row minima and the scale mapping the widest row onto 0..=255.
    fn quantize_shared(&mut self) {
        let m = self.pq.m;
        let mut max_range = 0.0f32;
        self.sum_mins = 0.0;
        for q in 0..m {
            let row = &self.lut[q * 16..q * 16 + 16];
            let (mn, mx) = row
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            self.mins[q] = mn;
            self.sum_mins += mn;
            max_range = max_range.max(mx - mn);
        }
        self.scale = if max_range > 0.0 && max_range.is_finite() {
            255.0 / max_range
        } else {
            1.0
        };
        fastscan::quantize_lut(&self.lut, m, &self.mins, self.scale, &mut self.qlut);
    }

    fn scan(
        &mut self,
        core: &Core<'_>,
        exact_coarse: Option<f32>,
        l: usize,
        list: ListRef<'_>,
        heap: &mut CandidatePool,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) {
        // Distance = bias + sum of LUT entries. Inner product: bias is the
        // (negated) query-centroid product, the LUT is shared. L2: the LUT
        // is built on the query's residual to this list's centroid.
        let bias = if self.ip {
            exact_coarse.unwrap_or_else(|| {
                -distance::dot(
                    &self.q,
                    &core.centroids[l * core.shape.dim..(l + 1) * core.shape.dim],
                )
            })
        } else {
            let c = &core.centroids[l * core.shape.dim..(l + 1) * core.shape.dim];
            for ((r, &a), &b) in self.resid.iter_mut().zip(&self.q).zip(c) {
                *r = a - b;
            }
            self.pq.lut(&self.resid, false, &mut self.lut);
            if core.shape.bits == PqBits::Four {
                self.quantize_shared();
            }
            0.0
        };
        match core.shape.bits {
            PqBits::Eight => self.scan8(bias, list, heap, filter),
            _ => self.scan4(bias, list, heap, filter),
        }
    }

    fn scan8(
        &mut self,
        bias: f32,
        list: ListRef<'_>,
        heap: &mut CandidatePool,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) {
        let m = self.pq.m;
        let n = list.ids.len();
        let lut = &self.lut;
        for (i, codes) in list.codes.chunks_exact(m).take(n).enumerate() {
            let mut acc = [0.0f32; 4];
            let mut chunks = codes.chunks_exact(4);
            let mut q = 0;
            for c in &mut chunks {
                acc[0] += lut[q * 256 + c[0] as usize];
                acc[1] += lut[(q + 1) * 256 + c[1] as usize];
                acc[2] += lut[(q + 2) * 256 + c[2] as usize];
                acc[3] += lut[(q + 3) * 256 + c[3] as usize];
                q += 4;
            }
            for &c in chunks.remainder() {
                acc[0] += lut[q * 256 + c as usize];
                q += 1;
            }
            let d = bias + (acc[0] + acc[1]) + (acc[2] + acc[3]);
            heap.offer(&list, i, d, filter);
        }
    }

    fn scan4(
        &mut self,
        bias: f32,
        list: ListRef<'_>,
        heap: &mut CandidatePool,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) {
        let m = self.pq.m;
        let pairs = m.div_ceil(2);
        let bb = fastscan::block_bytes(m);
        let n = list.ids.len();
        let offset = bias + self.sum_mins;
        let inv_scale = 1.0 / self.scale;
        for (b, block) in list.codes.chunks_exact(bb).enumerate() {
            let start = b * BLOCK;
            if start >= n {
                break;
            }
            let worst = heap.worst();
            let thr = if worst.is_infinite() {
                u16::MAX
            } else {
                let t = (worst - offset) * self.scale;
                if t < 0.0 {
                    // Nothing in this list can beat the current worst.
                    return;
                }
                if t >= u16::MAX as f32 {
                    u16::MAX
                } else {
                    t as u16
                }
            };
            let mut mask = self
                .kernels
                .scan_block(block, &self.qlut, pairs, thr, &mut self.acc);
            let valid = n - start;
            if valid < BLOCK {
                mask &= (1u32 << valid) - 1;
            }
            while mask != 0 {
                let v = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let d = offset + self.acc[v] as f32 * inv_scale;
                heap.offer(&list, start + v, d, filter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows go to their L2-nearest centroid, so cosine must probe lists in L2 order. Here a
    /// long centroid has the larger inner product with the query but a short one is nearer:
    /// the short one's list holds the query's neighbours and must come first.
    #[test]
    fn cosine_ranks_lists_by_l2_like_the_assignment() {
        let dim = 2;
        let (s, c) = 55f32.to_radians().sin_cos();
        let centroids = vec![1.0, 0.0, 0.5 * c, 0.5 * s];
        let q = [c, s];
        assert!(distance::dot(&q, &centroids[..2]) > distance::dot(&q, &centroids[2..]));
        let coarse = CoarseI8::new(&centroids, dim);
        let core = |metric| Core {
            shape: IndexShape {
                dim,
                metric,
                nlist: 2,
                m: 1,
                bits: PqBits::Four,
                len: 0,
            },
            centroids: &centroids,
            coarse: &coarse,
            codebooks: &[],
            compact: None,
        };
        assert_eq!(Probe::new(&core(Metric::Cosine), &q, 1).scored[0].1, 1);
        assert_eq!(Probe::new(&core(Metric::L2), &q, 1).scored[0].1, 1);
        // For `dot` the inner product is the score itself, so it ranks by it.
        assert_eq!(Probe::new(&core(Metric::Dot), &q, 1).scored[0].1, 0);
    }
}
