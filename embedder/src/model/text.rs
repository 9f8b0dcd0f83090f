//! CLIP text tower (`text_model.*` + `text_projection`).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder, embedding};

use super::dense::{Dense, WeightPrecision};
use super::layers::{Encoder, StackShape, layer_norm, projection};
use crate::config::ClipConfig;

/// Text transformer with its projection; input ids, output projected (unnormalised) features.
pub struct TextTower {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
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
    /// `pool[i]` of sequence `i`. Sequences are right-padded to the longest; the causal mask
    /// makes padding invisible to every position before it, so a pooled position inside the
    /// real sequence sees exactly what it would see unpadded.
    pub fn forward(&self, seqs: &[Vec<u32>], pool: &[usize], pad_id: u32) -> Result<Tensor> {
        let b = seqs.len();
        let l = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || l == 0 || l > self.max_len || pool.len() != b {
            candle_core::bail!("bad text batch: {b} sequences, longest {l}");
        }
        let mut ids = Vec::with_capacity(b * l);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(pad_id, l - s.len()));
        }
        let ids = Tensor::from_vec(ids, (b, l), &self.device)?;
        let xs = self.token_embedding.forward(&ids)?;
        let pos = self.position_embedding.narrow(0, 0, l)?;
        let xs = xs.broadcast_add(&pos)?;
        let mask = if l > 1 {
            Some(causal_mask(l, &self.device)?)
        } else {
            None
        };
        let xs = self.encoder.forward(&xs, mask.as_ref())?;
        let h = xs.dim(2)?;
        let flat = xs.reshape((b * l, h))?;
        let rows: Vec<u32> = pool
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * l + p) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, b, &self.device)?;
        let pooled = flat.index_select(&rows, 0)?;
        // LayerNorm is per token, so normalising only the pooled rows equals HF's order.
        let pooled = self.final_layer_norm.forward(&pooled)?;
        self.projection.forward(&pooled)
    }
}

fn causal_mask(l: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (l, l), device)
}
