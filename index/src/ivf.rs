//! The in-memory IVF-PQ index: training, adding rows, searching.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::coarse::CoarseI8;
use crate::distance;
use crate::error::IndexError;
use crate::fastscan;
use crate::kmeans::{self, KMeansParams};
use crate::metric::{Metric, Neighbor};
use crate::params::{IndexParams, PqBits, ResolvedParams, SearchParams};
use crate::pq::{self, PqCodebooks, PqEncoder};
use crate::search::{self, Core, ListRef, Lists};

/// Rows encoded per batch while adding (bounds the temporary memory).
const ADD_BATCH: usize = 32_768;

/// One inverted list of the in-memory index.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct InvList {
    pub ids: Vec<u32>,
    pub inv_norms: Vec<f32>,
    pub codes: Vec<u8>,
}

/// An IVF-PQ index held in memory (see the crate docs for the algorithm).
///
/// The index stores only codes and row numbers; searches re-rank against
/// the caller's raw vectors, passed to [`IvfPqIndex::search`].
#[derive(Debug, Clone, PartialEq)]
pub struct IvfPqIndex {
    pub(crate) dim: usize,
    pub(crate) metric: Metric,
    pub(crate) m: usize,
    pub(crate) bits: PqBits,
    pub(crate) centroids: Vec<f32>,
    /// `i8` copy of the centroids for fast coarse ranking (derived).
    pub(crate) coarse: CoarseI8,
    pub(crate) codebooks: Vec<f32>,
    pub(crate) lists: Vec<InvList>,
    pub(crate) len: usize,
}

fn check_vectors(vectors: &[f32], dim: usize) -> Result<usize, IndexError> {
    if dim == 0 {
        return Err(IndexError::BadVectors("dimension must be > 0".into()));
    }
    if !vectors.len().is_multiple_of(dim) {
        return Err(IndexError::BadVectors(format!(
            "{} floats is not a multiple of dimension {dim}",
            vectors.len()
        )));
    }
    if let Some(i) = vectors.iter().position(|x| !x.is_finite()) {
        return Err(IndexError::BadVectors(format!(
            "non-finite value in row {} (column {})",
            i / dim,
            i % dim
        )));
    }
    Ok(vectors.len() / dim)
}

/// The vectors as the index sees them: unit length for cosine, unchanged
/// otherwise. Borrowed when no change is needed.
fn internal_rows(metric: Metric, rows: &[f32], dim: usize) -> std::borrow::Cow<'_, [f32]> {
    if metric == Metric::Cosine {
        let mut v = rows.to_vec();
        v.par_chunks_mut(dim).for_each(distance::normalize_in_place);
        std::borrow::Cow::Owned(v)
    } else {
        std::borrow::Cow::Borrowed(rows)
    }
}

fn gather(data: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&data[i * dim..(i + 1) * dim]);
    }
    out
}

impl IvfPqIndex {
    /// Trains on `vectors` and adds them all as rows `0..N`.
    pub fn build(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
    ) -> Result<IvfPqIndex, IndexError> {
        IvfPqIndex::build_with(vectors, dim, metric, params, Cancel::NEVER)
    }

    /// [`build`](Self::build) that stops with [`IndexError::Cancelled`] soon
    /// after `cancel` is set (between k-means iterations, PQ sub-quantizers
    /// and batches of added rows).
    pub fn build_with(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
        cancel: Cancel<'_>,
    ) -> Result<IvfPqIndex, IndexError> {
        let mut index = IvfPqIndex::train_with(vectors, dim, metric, params, cancel)?;
        index.add_with(vectors, 0, cancel)?;
        Ok(index)
    }

    /// Trains the coarse quantizer and the PQ codebooks on (a sample of)
    /// `vectors`; the returned index is empty.
    pub fn train(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
    ) -> Result<IvfPqIndex, IndexError> {
        IvfPqIndex::train_with(vectors, dim, metric, params, Cancel::NEVER)
    }

    /// [`train`](Self::train) that stops with [`IndexError::Cancelled`] when
    /// `cancel` is set.
    pub fn train_with(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
        cancel: Cancel<'_>,
    ) -> Result<IvfPqIndex, IndexError> {
        let n = check_vectors(vectors, dim)?;
        if n == 0 {
            return Err(IndexError::NotEnoughData { need: 1, got: 0 });
        }
        let r: ResolvedParams = params.resolve(n, dim)?;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);

        // Coarse quantizer on a sample.
        let idx = kmeans::sample_indices(n, r.train_sample, &mut rng);
        let sample = internal_rows(metric, &gather(vectors, dim, &idx), dim).into_owned();
        let mut kp = KMeansParams::new(r.nlist, params.seed ^ 0xc0a5);
        kp.iters = params.kmeans_iters;
        let centroids = kmeans::train_with(&sample, dim, &kp, cancel)?;
        cancel.check()?;

        // PQ on residuals of a (possibly different-size) sample.
        let pidx = kmeans::sample_indices(n, r.pq_train_sample, &mut rng);
        let mut psample = internal_rows(metric, &gather(vectors, dim, &pidx), dim).into_owned();
        let (labels, _) = kmeans::assign(&psample, dim, &centroids);
        psample
            .par_chunks_mut(dim)
            .zip(labels.par_iter())
            .for_each(|(x, &l)| {
                let c = &centroids[l as usize * dim..(l as usize + 1) * dim];
                x.iter_mut().zip(c).for_each(|(a, b)| *a -= b);
            });
        let codebooks = pq::train_with(
            &psample,
            dim,
            r.m,
            r.bits.ksub(),
            params.pq_iters,
            params.seed ^ 0x9e37,
            cancel,
        )?;
        Ok(IvfPqIndex {
            dim,
            metric,
            m: r.m,
            bits: r.bits,
            coarse: CoarseI8::new(&centroids, dim),
            centroids,
            codebooks,
            lists: vec![InvList::default(); r.nlist],
            len: 0,
        })
    }

    /// Assigns and encodes `vectors` with the trained quantizers and appends
    /// them as rows `first_row, first_row + 1, ...`. No retraining happens;
    /// rows must not already be in the index (not checked).
    pub fn add(&mut self, vectors: &[f32], first_row: u32) -> Result<(), IndexError> {
        self.add_with(vectors, first_row, Cancel::NEVER)
    }

    /// [`add`](Self::add) that stops with [`IndexError::Cancelled`] when
    /// `cancel` is set (checked before each batch of rows). The index then
    /// holds the batches added before it stopped.
    pub fn add_with(
        &mut self,
        vectors: &[f32],
        first_row: u32,
        cancel: Cancel<'_>,
    ) -> Result<(), IndexError> {
        let dim = self.dim;
        let n = check_vectors(vectors, dim)?;
        if first_row as u64 + n as u64 > u32::MAX as u64 + 1 {
            return Err(IndexError::RowOverflow {
                first_row,
                count: n,
            });
        }
        let m = self.m;
        let encoder = PqEncoder::new(&PqCodebooks {
            dim,
            m,
            ksub: self.bits.ksub(),
            data: &self.codebooks,
        });
        for (bi, batch) in vectors.chunks(ADD_BATCH * dim).enumerate() {
            cancel.check()?;
            let internal = internal_rows(self.metric, batch, dim);
            let (labels, _) = kmeans::assign(&internal, dim, &self.centroids);
            let mut codes = vec![0u8; labels.len() * m];
            codes
                .par_chunks_mut(m)
                .zip(internal.par_chunks(dim))
                .zip(labels.par_iter())
                .for_each_init(
                    || (vec![0.0f32; dim], Vec::new()),
                    |(resid, scratch), ((out, x), &l)| {
                        let c = &self.centroids[l as usize * dim..(l as usize + 1) * dim];
                        for ((r, &a), &b) in resid.iter_mut().zip(x).zip(c) {
                            *r = a - b;
                        }
                        encoder.encode(resid, out, scratch);
                    },
                );
            let base = first_row as usize + bi * ADD_BATCH;
            for (i, &l) in labels.iter().enumerate() {
                let inv_norm = if self.metric == Metric::Cosine {
                    let nrm = distance::norm(&batch[i * dim..(i + 1) * dim]);
                    if nrm > 0.0 { 1.0 / nrm } else { 0.0 }
                } else {
                    1.0
                };
                let list = &mut self.lists[l as usize];
                push_entry(
                    list,
                    self.bits,
                    m,
                    (base + i) as u32,
                    inv_norm,
                    self.metric == Metric::Cosine,
                    &codes[i * m..(i + 1) * m],
                );
            }
            // Per batch, so an index cancelled half way still counts what its lists hold.
            self.len += labels.len();
        }
        Ok(())
    }

    /// Top `params.k` rows for `query`, best first, with exact scores from
    /// `vectors` (the raw row-major data the index was built over). Rows for
    /// which `filter` returns false are skipped during the scan; when at
    /// least `k` allowed rows exist, `k` results come back. A query of the
    /// wrong length gives no results; candidate rows beyond the end of
    /// `vectors` are dropped.
    pub fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        params: &SearchParams,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<Neighbor> {
        search::search(
            &self.core(),
            self,
            query,
            vectors,
            params,
            filter,
            &mut search::SearchStats::default(),
        )
    }

    /// Searches many queries (row-major, `dim` floats each) in parallel.
    pub fn search_batch(
        &self,
        queries: &[f32],
        vectors: &[f32],
        params: &SearchParams,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<Vec<Neighbor>> {
        queries
            .par_chunks(self.dim)
            .map(|q| self.search(q, vectors, params, filter))
            .collect()
    }

    pub(crate) fn core(&self) -> Core<'_> {
        Core {
            dim: self.dim,
            metric: self.metric,
            nlist: self.lists.len(),
            m: self.m,
            bits: self.bits,
            centroids: &self.centroids,
            coarse: &self.coarse,
            codebooks: &self.codebooks,
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Metric the index was built for.
    pub fn metric(&self) -> Metric {
        self.metric
    }
    /// Number of inverted lists.
    pub fn nlist(&self) -> usize {
        self.lists.len()
    }
    /// Number of PQ sub-quantizers.
    pub fn m(&self) -> usize {
        self.m
    }
    /// Code width.
    pub fn bits(&self) -> PqBits {
        self.bits
    }
    /// Number of indexed rows.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no rows are indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Sizes of the inverted lists.
    pub fn list_sizes(&self) -> Vec<usize> {
        self.lists.iter().map(|l| l.ids.len()).collect()
    }
}

/// Appends one encoded entry to a list in the layout of `bits`.
fn push_entry(
    list: &mut InvList,
    bits: PqBits,
    m: usize,
    row: u32,
    inv_norm: f32,
    with_norms: bool,
    codes: &[u8],
) {
    let i = list.ids.len();
    list.ids.push(row);
    if with_norms {
        list.inv_norms.push(inv_norm);
    }
    match bits {
        PqBits::Eight => list.codes.extend_from_slice(codes),
        _ => {
            if i.is_multiple_of(fastscan::BLOCK) {
                let bb = fastscan::block_bytes(m);
                list.codes.resize(list.codes.len() + bb, 0);
            }
            fastscan::put_codes(&mut list.codes, m, i, codes);
        }
    }
}

impl Lists for IvfPqIndex {
    fn list(&self, l: usize) -> ListRef<'_> {
        let x = &self.lists[l];
        ListRef {
            ids: &x.ids,
            inv_norms: &x.inv_norms,
            codes: &x.codes,
        }
    }
}
