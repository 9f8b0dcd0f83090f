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
use crate::shape::{IndexShape, shape_accessors};

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
    /// Dimension, metric, list count, code shape and row count.
    pub(crate) shape: IndexShape,
    pub(crate) centroids: Vec<f32>,
    /// `i8` copy of the centroids for fast coarse ranking (derived).
    pub(crate) coarse: CoarseI8,
    pub(crate) codebooks: Vec<f32>,
    pub(crate) lists: Vec<InvList>,
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
    /// Trains on `vectors` and adds them all as rows `0..N`. Stops with
    /// [`IndexError::Cancelled`] soon after `cancel` is set (between k-means
    /// iterations, PQ sub-quantizers and batches of added rows); pass
    /// [`Cancel::NEVER`] to always run to the end.
    pub fn build(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
        cancel: Cancel<'_>,
    ) -> Result<IvfPqIndex, IndexError> {
        Self::build_holding_out(vectors, dim, metric, params, &[], cancel)
    }

    /// [`build`](Self::build) whose training samples leave out the rows `held_out` (sorted),
    /// which are still added: queries drawn from them are as new to the quantizers as real
    /// ones (what [`calibrate`](crate::calibrate::calibrate) needs).
    pub fn build_holding_out(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
        held_out: &[u32],
        cancel: Cancel<'_>,
    ) -> Result<IvfPqIndex, IndexError> {
        let mut index =
            IvfPqIndex::train_holding_out(vectors, dim, metric, params, held_out, cancel)?;
        index.add(vectors, 0, cancel)?;
        Ok(index)
    }

    /// Trains the coarse quantizer and the PQ codebooks on (a sample of)
    /// `vectors`; the returned index is empty. Stops with
    /// [`IndexError::Cancelled`] when `cancel` is set.
    pub fn train(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
        cancel: Cancel<'_>,
    ) -> Result<IvfPqIndex, IndexError> {
        Self::train_holding_out(vectors, dim, metric, params, &[], cancel)
    }

    /// [`train`](Self::train) whose samples leave out the sorted rows `held_out` (see
    /// [`build_holding_out`](Self::build_holding_out)).
    pub fn train_holding_out(
        vectors: &[f32],
        dim: usize,
        metric: Metric,
        params: &IndexParams,
        held_out: &[u32],
        cancel: Cancel<'_>,
    ) -> Result<IvfPqIndex, IndexError> {
        let n = check_vectors(vectors, dim)?;
        // Held-out rows are dropped from each drawn sample (a few hundred of many thousand);
        // with very few rows they are kept, so training always has data.
        let keep = |idx: Vec<usize>| -> Vec<usize> {
            if held_out.is_empty() || n < 4 * held_out.len() {
                return idx;
            }
            idx.into_iter()
                .filter(|&i| held_out.binary_search(&(i as u32)).is_err())
                .collect()
        };
        if n == 0 {
            return Err(IndexError::NotEnoughData { need: 1, got: 0 });
        }
        let r: ResolvedParams = params.resolve(n, dim)?;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);

        // Coarse quantizer on a sample.
        let idx = keep(kmeans::sample_indices(n, r.train_sample, &mut rng));
        let sample = internal_rows(metric, &gather(vectors, dim, &idx), dim).into_owned();
        let mut kp = KMeansParams::new(r.nlist, params.seed ^ 0xc0a5);
        kp.iters = params.kmeans_iters;
        let centroids = kmeans::train(&sample, dim, &kp, cancel)?;
        cancel.check()?;

        // PQ on residuals of a (possibly different-size) sample.
        let pidx = keep(kmeans::sample_indices(n, r.pq_train_sample, &mut rng));
        let mut psample = internal_rows(metric, &gather(vectors, dim, &pidx), dim).into_owned();
        let (labels, _) = kmeans::assign(&psample, dim, &centroids);
        psample
            .par_chunks_mut(dim)
            .zip(labels.par_iter())
            .for_each(|(x, &l)| {
                let c = &centroids[l as usize * dim..(l as usize + 1) * dim];
                x.iter_mut().zip(c).for_each(|(a, b)| *a -= b);
            });
        let codebooks = pq::train(
            &psample,
            dim,
            r.m,
            r.bits.ksub(),
            params.pq_iters,
            params.seed ^ 0x9e37,
            cancel,
        )?;
        Ok(IvfPqIndex {
            shape: IndexShape {
                dim,
                metric,
                nlist: r.nlist,
                m: r.m,
                bits: r.bits,
                len: 0,
            },
            coarse: CoarseI8::new(&centroids, dim),
            centroids,
            codebooks,
            lists: vec![InvList::default(); r.nlist],
        })
    }

    /// Assigns and encodes `vectors` with the trained quantizers and appends
    /// them as rows `first_row, first_row + 1, ...`. No retraining happens;
    /// rows must not already be in the index (not checked). Stops with
    /// [`IndexError::Cancelled`] when `cancel` is set (checked before each
    /// batch of rows); the index then holds the batches added before it stopped.
    pub fn add(
        &mut self,
        vectors: &[f32],
        first_row: u32,
        cancel: Cancel<'_>,
    ) -> Result<(), IndexError> {
        let IndexShape {
            dim,
            m,
            metric,
            bits,
            ..
        } = self.shape;
        let n = check_vectors(vectors, dim)?;
        if first_row as u64 + n as u64 > u32::MAX as u64 + 1 {
            return Err(IndexError::RowOverflow {
                first_row,
                count: n,
            });
        }
        let encoder = PqEncoder::new(&PqCodebooks {
            dim,
            m,
            ksub: bits.ksub(),
            data: &self.codebooks,
        });
        for (bi, batch) in vectors.chunks(ADD_BATCH * dim).enumerate() {
            cancel.check()?;
            let internal = internal_rows(metric, batch, dim);
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
                let inv_norm = if metric == Metric::Cosine {
                    let nrm = distance::norm(&batch[i * dim..(i + 1) * dim]);
                    if nrm > 0.0 { 1.0 / nrm } else { 0.0 }
                } else {
                    1.0
                };
                let list = &mut self.lists[l as usize];
                push_entry(
                    list,
                    bits,
                    m,
                    (base + i) as u32,
                    inv_norm,
                    metric == Metric::Cosine,
                    &codes[i * m..(i + 1) * m],
                );
            }
            // Per batch, so an index cancelled half way still counts what its lists hold.
            self.shape.len += labels.len();
        }
        Ok(())
    }

    /// Top `params.k` rows for `query`, best first, with exact scores from
    /// `vectors` (the raw row-major data the index was built over): the
    /// search of a loaded index, [`IvfPqView::search`](crate::IvfPqView::search)
    /// (filter and edge cases as documented there), through [`view`](Self::view).
    pub fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        params: &SearchParams,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<Neighbor> {
        self.view().search(query, vectors, params, filter)
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
            .par_chunks(self.shape.dim)
            .map(|q| self.search(q, vectors, params, filter))
            .collect()
    }

    shape_accessors!();

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
