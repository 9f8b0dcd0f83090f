//! The compact re-rank tier: a few bits per dimension of every row, kept in the index file so
//! it stays in memory while the raw `f32` vectors need not.
//!
//! A search with at least `search::COMPACT_MIN_PER_RESULT` candidates per result scores its
//! `k·refine` PQ candidates on these codes first. With `a_k` the k-th best code score and `M`
//! a margin that two code scores' errors cannot exceed together, a candidate scoring below
//! `a_k − M` is beaten by k others, so it cannot be in the top k; only the rest are read from
//! the raw rows. Two kinds of codes:
//!
//! - [`Sq8Codes`] (`sq8`): one byte per dimension; `M` is the worst case of the rounding
//!   errors, so the top k is always the one the full `f32` re-rank returns.
//! - [`Rq6Codes`] (`rq6`): the rows randomly rotated, then six bits per dimension (three
//!   quarters of the bytes); `M` is twelve standard deviations of a code score's error under
//!   the standard model of rounding errors (independent, uniform), which two rows' errors
//!   exceed together with odds below `e^-36` a pair when independent and `4·e^-18` at worst
//!   (see `rq6`); it rules out more candidates than the 8-bit worst case does.
//!
//! L2 indexes get no tier (their error depends on the row, not only on the query).

mod rotation;
mod rq6;
mod sq8;

pub use rq6::Rq6Codes;
pub(crate) use rq6::Rq6Ref;
pub use sq8::Sq8Codes;
pub(crate) use sq8::Sq8Ref;

pub(crate) use rq6::{Rq6Kernel, kernel_for as rq6_kernel_for, section_len as rq6_section_len};
pub(crate) use sq8::{Sq8Kernel, kernel_for as sq8_kernel_for, section_len as sq8_section_len};

use std::borrow::Cow;

use rayon::prelude::*;

use crate::metric::Metric;

/// Fewest dimensions for which a new index's tier is rotated 6-bit codes (see
/// [`CompactKind::for_dim`]).
pub const ROTATED6_MIN_DIM: usize = 256;

/// Which codes a compact tier holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactKind {
    /// One byte per dimension, a worst-case bound ([`Sq8Codes`]).
    Sq8,
    /// Rotated rows, six bits per dimension, a probabilistic bound ([`Rq6Codes`]).
    Rotated6,
}

impl CompactKind {
    /// The kind a new index of `dim` dimensions gets. The rotated codes' margin grows as
    /// `√dim` and the 8-bit worst case as `dim`, so rotation wins on wide rows: on the hard
    /// mixture (6,000 rows, cosine, the raw rows left to read over three settings) rq6 read
    /// 1.52x sq8's at 128 dimensions, 1.15x at 256, 0.91x at 384 and 0.60x at 768, for three
    /// quarters of the bytes. From [`ROTATED6_MIN_DIM`] the bytes saved outweigh the extra reads.
    pub fn for_dim(dim: usize) -> CompactKind {
        if dim >= ROTATED6_MIN_DIM {
            CompactKind::Rotated6
        } else {
            CompactKind::Sq8
        }
    }

    /// Bytes of one row's codes for `dim` dimensions.
    pub fn row_bytes(self, dim: usize) -> usize {
        match self {
            CompactKind::Sq8 => dim,
            CompactKind::Rotated6 => rq6::row_bytes(dim),
        }
    }
}

/// The codes of a compact tier, built for a new index.
#[derive(Debug, Clone, PartialEq)]
pub enum CompactCodes {
    /// See [`Sq8Codes`].
    Sq8(Sq8Codes),
    /// See [`Rq6Codes`].
    Rotated6(Rq6Codes),
}

impl CompactCodes {
    /// Encodes `vectors` (row-major, `dim` floats each) for an index of `metric` as `kind`;
    /// `None` for L2 and for empty or non-finite input.
    pub fn build(kind: CompactKind, vectors: &[f32], dim: usize, metric: Metric) -> Option<Self> {
        match kind {
            CompactKind::Sq8 => Sq8Codes::build(vectors, dim, metric).map(CompactCodes::Sq8),
            CompactKind::Rotated6 => {
                Rq6Codes::build(vectors, dim, metric).map(CompactCodes::Rotated6)
            }
        }
    }

    /// Which codes these are.
    pub fn kind(&self) -> CompactKind {
        match self {
            CompactCodes::Sq8(_) => CompactKind::Sq8,
            CompactCodes::Rotated6(_) => CompactKind::Rotated6,
        }
    }

    /// Rows encoded.
    pub fn rows(&self) -> usize {
        match self {
            CompactCodes::Sq8(c) => c.rows(),
            CompactCodes::Rotated6(c) => c.rows(),
        }
    }

    /// Dimension of the rows.
    pub fn dim(&self) -> usize {
        match self {
            CompactCodes::Sq8(c) => c.dim(),
            CompactCodes::Rotated6(c) => c.dim(),
        }
    }

    /// The section bytes with the rows' codes in the order of `rows` (see each kind's
    /// `to_bytes_in_order`); empty when `rows` does not name every row once.
    pub(crate) fn to_bytes_in_order(&self, rows: impl Iterator<Item = u32>) -> Vec<u8> {
        match self {
            CompactCodes::Sq8(c) => c.to_bytes_in_order(rows),
            CompactCodes::Rotated6(c) => c.to_bytes_in_order(rows),
        }
    }
}

impl From<Sq8Codes> for CompactCodes {
    fn from(c: Sq8Codes) -> Self {
        CompactCodes::Sq8(c)
    }
}

impl From<Rq6Codes> for CompactCodes {
    fn from(c: Rq6Codes) -> Self {
        CompactCodes::Rotated6(c)
    }
}

/// The tier as the search reads it (borrowed from the index file where aligned).
#[derive(Debug, Clone)]
pub(crate) enum TierRef<'a> {
    /// 8-bit codes.
    Sq8(Sq8Ref<'a>),
    /// Rotated 6-bit codes.
    Rotated6(Rq6Ref<'a>),
}

impl TierRef<'_> {
    /// Whether the codes are in the index's entry order (else in row order): which key a
    /// candidate is looked up by.
    pub(crate) fn by_entry(&self) -> bool {
        match self {
            TierRef::Sq8(t) => t.by_entry,
            TierRef::Rotated6(t) => t.by_entry,
        }
    }

    /// Which codes these are.
    pub(crate) fn kind(&self) -> CompactKind {
        match self {
            TierRef::Sq8(_) => CompactKind::Sq8,
            TierRef::Rotated6(_) => CompactKind::Rotated6,
        }
    }

    /// Positions (in `keys`' order) of the candidates that may be among the best `k` for `q`
    /// (the query in the index's space), pruning with `share` of the full margin (see the
    /// module doc; 1 is the full margin). A key beyond the codes is always kept.
    pub(crate) fn survivors(&self, q: &[f32], keys: &[u32], k: usize, share: f32) -> Vec<usize> {
        match self {
            TierRef::Sq8(t) => t.survivors(q, keys, k, share),
            TierRef::Rotated6(t) => t.survivors(q, keys, k, share),
        }
    }

    /// `q` (the query in the index's space) prepared for this kind's kernel, with its full
    /// margin; `None` for a query of the wrong length.
    pub(crate) fn prepare(&self, q: &[f32]) -> Option<PreparedQuery> {
        match self {
            TierRef::Sq8(t) => t.prepare(q),
            TierRef::Rotated6(t) => t.prepare(q),
        }
    }

    /// The code score of each candidate (in `keys`' order) for `q` (the query in the index's
    /// space): an estimate of its exact score, `None` for a key beyond the codes or a query
    /// of the wrong length.
    pub(crate) fn scores(&self, q: &[f32], keys: &[u32]) -> Vec<Option<f32>> {
        match self {
            TierRef::Sq8(t) => t.scores(q, keys),
            TierRef::Rotated6(t) => t.scores(q, keys),
        }
    }
}

/// A query ready for a kind's code-score kernel: a code score is `base + Σ weights_j · c_j`.
pub(crate) struct PreparedQuery {
    pub(crate) weights: Vec<f32>,
    pub(crate) base: f32,
    /// How far below the k-th best code score a candidate may still be in the true top k, as
    /// far as the codes' rounding goes (the kind's full margin, before any share of it).
    pub(crate) margin: f32,
    /// What float rounding of the sums adds to it, kept whole at any share.
    pub(crate) slack: f32,
}

impl PreparedQuery {
    /// The pruning margin at `share` of the full one (the rounding part scaled, the float
    /// slack kept).
    pub(crate) fn margin_at(&self, share: f32) -> f32 {
        share * self.margin + self.slack
    }
}

/// The pruning both kinds share: scores every candidate whose key has codes (`row_bytes` each
/// in `codes`) with `score` (see [`score_keys`]) and keeps the positions scoring at least the
/// k-th best less `margin`, plus every candidate without codes. Nothing is ruled out when
/// there are at most `k` scores or the cut is not finite (a NaN or overflowing score).
pub(crate) fn prune(
    codes: &[u8],
    row_bytes: usize,
    keys: &[u32],
    k: usize,
    margin: f32,
    score: impl FnMut(&[u8]) -> f32,
) -> Vec<usize> {
    let all = || (0..keys.len()).collect();
    if keys.len() <= k || k == 0 || row_bytes == 0 {
        return all();
    }
    let scores = score_keys(codes, row_bytes, keys, score);
    let mut sorted: Vec<f32> = scores.iter().flatten().copied().collect();
    if sorted.len() <= k {
        return all();
    }
    let kth = k - 1;
    sorted.select_nth_unstable_by(kth, |a, b| b.total_cmp(a));
    let cut = sorted[kth] - margin;
    if !cut.is_finite() {
        return all();
    }
    (0..keys.len())
        .filter(|&i| scores[i].is_none_or(|s| s >= cut))
        .collect()
}

/// The code score of every candidate (in `keys`' order) whose key has codes (`row_bytes` each
/// in `codes`); `None` for a key beyond them. Scored in address order: with codes in entry
/// order the candidates of one list then come one after another from a few neighbouring pages
/// (measured 2.3x faster than scattered reads over the same section on huge pages).
pub(crate) fn score_keys(
    codes: &[u8],
    row_bytes: usize,
    keys: &[u32],
    mut score: impl FnMut(&[u8]) -> f32,
) -> Vec<Option<f32>> {
    if row_bytes == 0 {
        return vec![None; keys.len()];
    }
    let n = codes.len() / row_bytes;
    // Key in the high half, position in the low half: one integer sort.
    debug_assert!(u32::try_from(keys.len()).is_ok());
    let mut order: Vec<u64> = keys
        .iter()
        .enumerate()
        .map(|(i, &key)| (u64::from(key) << 32) | i as u64)
        .collect();
    order.sort_unstable();
    let key_of = |o: u64| (o >> 32) as usize;
    // Start every first line (and TLB walk) at once, then keep a few whole rows in flight
    // ahead of the one being scored.
    for &o in &order {
        prefetch(codes, key_of(o) * row_bytes, 64, false);
    }
    for &o in order.iter().take(AHEAD) {
        prefetch(codes, key_of(o) * row_bytes, row_bytes, true);
    }
    let mut scores: Vec<Option<f32>> = vec![None; keys.len()];
    for (j, &o) in order.iter().enumerate() {
        if let Some(&ahead) = order.get(j + AHEAD) {
            prefetch(codes, key_of(ahead) * row_bytes, row_bytes, true);
        }
        let r = key_of(o);
        if r < n {
            scores[(o & u64::from(u32::MAX)) as usize] =
                Some(score(&codes[r * row_bytes..(r + 1) * row_bytes]));
        }
    }
    scores
}

/// Per-dimension minimum and maximum of `vectors` (`dim` floats a row) as `view` transforms
/// each row (to unit length, rotated, ...); `None` when any is not finite.
pub(crate) fn column_ranges(
    vectors: &[f32],
    dim: usize,
    view: impl Fn(&[f32]) -> Vec<f32> + Sync,
) -> Option<(Vec<f32>, Vec<f32>)> {
    let (mins, maxs) = vectors
        .par_chunks(dim * 1024)
        .map(|block| {
            let mut lo = vec![f32::INFINITY; dim];
            let mut hi = vec![f32::NEG_INFINITY; dim];
            for r in block.chunks_exact(dim) {
                for ((l, h), x) in lo.iter_mut().zip(hi.iter_mut()).zip(view(r)) {
                    *l = l.min(x);
                    *h = h.max(x);
                }
            }
            (lo, hi)
        })
        .reduce(
            || (vec![f32::INFINITY; dim], vec![f32::NEG_INFINITY; dim]),
            |(mut a, mut b), (c, d)| {
                a.iter_mut().zip(c).for_each(|(x, y)| *x = x.min(y));
                b.iter_mut().zip(d).for_each(|(x, y)| *x = x.max(y));
                (a, b)
            },
        );
    mins.iter()
        .chain(&maxs)
        .all(|x| x.is_finite())
        .then_some((mins, maxs))
}

/// Copies each row's `row_bytes` codes from `codes` into `out` from `at` on, in the order of
/// `rows`; false (and `out` unfinished) unless `rows` names every row exactly once and fills
/// `out` to its end.
pub(crate) fn write_in_order(
    out: &mut [u8],
    mut at: usize,
    codes: &[u8],
    row_bytes: usize,
    rows: impl Iterator<Item = u32>,
) -> bool {
    let n = codes.len() / row_bytes.max(1);
    let mut seen = vec![false; n];
    for r in rows {
        let r = r as usize;
        if r >= n || seen[r] || at + row_bytes > out.len() {
            return false;
        }
        seen[r] = true;
        out[at..at + row_bytes].copy_from_slice(&codes[r * row_bytes..(r + 1) * row_bytes]);
        at += row_bytes;
    }
    at == out.len()
}

/// `count` little-endian `f32`s from `bytes` at `at`: borrowed where aligned, else copied.
pub(crate) fn floats_at(bytes: &[u8], at: usize, count: usize) -> Cow<'_, [f32]> {
    let b = &bytes[at..at + 4 * count];
    match bytemuck::try_cast_slice::<u8, f32>(b) {
        Ok(s) if cfg!(target_endian = "little") => Cow::Borrowed(s),
        _ => Cow::Owned(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
    }
}

/// Whether every min is finite and every step finite and positive (else no bound means
/// anything).
pub(crate) fn ranges_valid(mins: &[f32], steps: &[f32]) -> bool {
    mins.iter().all(|x| x.is_finite()) && steps.iter().all(|x| x.is_finite() && *x > 0.0)
}

/// Candidate rows whose codes are fetched while the current one is scored.
const AHEAD: usize = 8;

/// Asks the CPU to start loading `len` bytes of `codes` from `at` (into L1 when `near`, else
/// the outer caches); a hint that never faults, and nothing for out-of-range rows.
#[inline(always)]
fn prefetch(codes: &[u8], at: usize, len: usize, near: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T2, _mm_prefetch};
        if at >= codes.len() {
            return;
        }
        let end = (at + len).min(codes.len());
        let mut off = at;
        while off < end {
            // SAFETY: prefetch is a hint and never faults; the address is inside `codes`.
            unsafe {
                let p = codes.as_ptr().add(off) as *const i8;
                if near {
                    _mm_prefetch(p, _MM_HINT_T0)
                } else {
                    _mm_prefetch(p, _MM_HINT_T2)
                }
            };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (codes, at, len, near);
}
