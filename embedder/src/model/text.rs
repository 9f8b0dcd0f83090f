//! CLIP text tower (`text_model.*` + `text_projection`).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder, embedding};

use super::dense::{Dense, WeightPrecision};
use super::layer_norm::Norm;
use super::layers::{Encoder, Masking, Run, StackShape, layer_norm, projection};
use super::packing::{Packing, SharedPrefixes};
use crate::config::ClipConfig;

/// Text transformer with its projection; input ids, output projected (unnormalised) features.
pub struct TextTower {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: Norm,
    projection: Dense,
    max_len: usize,
    device: Device,
}

impl TextTower {
    /// Builds the tower from weights named as in `transformers.CLIPModel`.
    /// `precision` says how few-row (query-sized) products read the weights.
    pub(crate) fn new(
        cfg: &ClipConfig,
        vb: VarBuilder,
        precision: WeightPrecision,
    ) -> Result<Self> {
        let t = &cfg.text_config;
        let shape = StackShape {
            hidden: t.hidden_size,
            intermediate: t.intermediate_size,
            heads: t.num_attention_heads,
            layers: t.num_hidden_layers,
            act: t.hidden_act,
            eps: t.layer_norm_eps,
            // Queries are packed into one pass (see `forward`); the CPU kernel computes each
            // row alone, so each query's result is independent of the others.
            precision,
        };
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let token_embedding = embedding(t.vocab_size, t.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = emb
            .pp("position_embedding")
            .get((t.max_position_embeddings, t.hidden_size), "weight")?;
        Ok(Self {
            token_embedding,
            position_embedding,
            encoder: Encoder::new(&shape, tm.pp("encoder"))?,
            final_layer_norm: layer_norm(
                t.hidden_size,
                t.layer_norm_eps,
                tm.pp("final_layer_norm"),
            )?,
            projection: projection(
                t.hidden_size,
                cfg.projection_dim,
                precision,
                vb.pp("text_projection"),
            )?,
            max_len: t.max_position_embeddings,
            device: vb.device().clone(),
        })
    }

    /// Longest sequence the position table covers.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Runs sequences (each at most `max_len` ids) and returns the projected features at
    /// `pool[i]` of sequence `i`.
    ///
    /// The sequences are packed, not padded: their tokens are stacked into one
    /// `(tokens, hidden)` activation. On the CPU, sequences that begin with the same tokens
    /// share those rows (every query begins with the start-of-text token; see
    /// [`Packing::sharing_prefixes`]); elsewhere they are sorted by length so that equal
    /// lengths form runs. Every linear layer, LayerNorm and activation is per token, and
    /// attention runs per sequence (or run), so each sequence goes through exactly the
    /// operations it goes through alone and gets the same bits, whatever else is in the batch
    /// (no padding token enters any of its sums, and the linear layers' kernel does not depend
    /// on the row count).
    pub fn forward(&self, seqs: &[Vec<u32>], pool: &[usize]) -> Result<Tensor> {
        let b = seqs.len();
        if b == 0 || pool.len() != b {
            candle_core::bail!("bad text batch: {b} sequences, {} pool indices", pool.len());
        }
        for (s, &p) in seqs.iter().zip(pool) {
            if s.is_empty() || s.len() > self.max_len || p >= s.len() {
                candle_core::bail!(
                    "bad text sequence: length {} (allowed 1..={}), pooled at {p}",
                    s.len(),
                    self.max_len
                );
            }
        }
        let SharedPrefixes {
            packing,
            ids,
            positions,
            order,
        } = if self.encoder.shares_rows() {
            let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            Packing::sharing_prefixes(&refs)
        } else {
            runs_by_length(seqs)
        };
        let total = ids.len();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let positions = Tensor::from_vec(positions, total, &self.device)?;
        let xs = self.token_embedding.forward(&ids)?;
        let pos = self.position_embedding.index_select(&positions, 0)?;
        let xs = (xs + pos)?;
        // The encoder answers in packed order; `packed_at[i]` is sequence i's place there.
        let picks: Vec<usize> = order.iter().map(|&i| pool[i]).collect();
        let mut packed_at = vec![0u32; b];
        for (at, &i) in order.iter().enumerate() {
            packed_at[i] = at as u32;
        }
        let pooled = self
            .encoder
            .forward_pooled(&xs, &packing, Masking::Causal, &picks)?;
        let packed_at = Tensor::from_vec(packed_at, b, &self.device)?;
        let pooled = pooled.index_select(&packed_at, 0)?;
        // LayerNorm is per token, so normalising only the pooled rows equals HF's order.
        let pooled = self.final_layer_norm.forward(&pooled)?;
        self.projection.forward(&pooled)
    }
}

/// Sequences that own their rows, stably sorted by length so that equal lengths form the runs
/// that attention through candle ops needs.
fn runs_by_length(seqs: &[Vec<u32>]) -> SharedPrefixes {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    let total: usize = seqs.iter().map(Vec::len).sum();
    let mut ids = Vec::with_capacity(total);
    let mut positions = Vec::with_capacity(total);
    let mut runs: Vec<Run> = Vec::new();
    for &i in &order {
        let s = &seqs[i];
        match runs.last_mut() {
            Some(run) if run.len == s.len() => run.count += 1,
            _ => runs.push(Run {
                start: ids.len(),
                count: 1,
                len: s.len(),
            }),
        }
        ids.extend_from_slice(s);
        positions.extend(0..s.len() as u32);
    }
    SharedPrefixes {
        packing: Packing::from_runs(&runs),
        ids,
        positions,
        order,
    }
}
