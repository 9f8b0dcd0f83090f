//! Text queries to L2-normalised CLIP embeddings.

use crate::config::ClipConfig;
use crate::device::DeviceChoice;
use crate::error::{EmbedderError, Result};
use crate::model::l2_normalize_rows;
use crate::model::{TextTower, WeightPrecision};
use crate::model_dir::ModelDir;
use crate::tokenizer::ClipTokenizer;

/// Sequences run together in one forward pass.
const MAX_BATCH: usize = 64;

/// CLIP text tower + tokenizer. `Send + Sync`; `embed` takes `&self`.
pub struct ClipTextEncoder {
    tower: TextTower,
    tokenizer: ClipTokenizer,
    dim: usize,
    /// HF pools at `argmax(ids)` for legacy configs (`eos_token_id == 2`), else at the first
    /// `eos_token_id`.
    eos_token_id: i64,
}

impl std::fmt::Debug for ClipTextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextEncoder")
            .field("dim", &self.dim)
            .finish()
    }
}

impl ClipTextEncoder {
    /// Loads tokenizer and text weights (the vision weights are never read).
    pub fn load(dir: &ModelDir, device: DeviceChoice) -> Result<Self> {
        let cfg = ClipConfig::from_file(dir.config_path())?;
        let placement = device.place()?;
        let vb = dir.var_builder(placement.dtype, &placement.device)?;
        let tokenizer = ClipTokenizer::from_files(dir.tokenizer())?;
        let encoder =
            Self::from_parts(&cfg, vb, tokenizer, placement.text_precision).map_err(|e| {
                EmbedderError::Config {
                    path: dir.root().to_path_buf(),
                    message: format!("text weights do not match config.json: {e}"),
                }
            })?;
        tracing::info!(
            model = dir.id(),
            dim = cfg.projection_dim,
            device = ?placement.device,
            "loaded CLIP text tower"
        );
        Ok(encoder)
    }

    /// Builds the encoder from weights already behind a `VarBuilder` (in-memory models).
    pub(crate) fn from_parts(
        cfg: &ClipConfig,
        vb: candle_nn::VarBuilder,
        tokenizer: ClipTokenizer,
        precision: WeightPrecision,
    ) -> Result<Self> {
        if tokenizer.vocab_size() > cfg.text_config.vocab_size {
            return Err(EmbedderError::InvalidInput(format!(
                "tokenizer has {} entries, text tower only {}",
                tokenizer.vocab_size(),
                cfg.text_config.vocab_size
            )));
        }
        Ok(Self {
            tower: TextTower::new(cfg, vb, precision)?,
            tokenizer,
            dim: cfg.projection_dim,
            eos_token_id: cfg.text_config.eos_token_id,
        })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The tokenizer in use.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// Token ids of `text` as the tower sees them (start, BPE ids, end; at most 77).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.tokenize(text, self.tower.max_len())
    }

    /// L2-normalised embeddings, one per text, equal to HF `get_text_features` normalised.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t)).collect();
        self.embed_token_ids(&seqs, None)
    }

    /// Embeds pre-tokenised sequences. Each runs at its real length, packed with the others
    /// (no padding), and its embedding has the same bits as when it is embedded alone: batching
    /// queries together changes nothing in any result (on the CPU; a GPU's kernels may choose
    /// other reduction orders for other shapes). `pad_to` lengthens sequences with end tokens,
    /// which only exists to measure what padding would cost.
    pub fn embed_token_ids(
        &self,
        seqs: &[Vec<u32>],
        pad_to: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let max_len = self.tower.max_len();
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(MAX_BATCH) {
            let mut padded = Vec::with_capacity(chunk.len());
            let mut pool = Vec::with_capacity(chunk.len());
            for s in chunk {
                if s.is_empty() || s.len() > max_len {
                    return Err(EmbedderError::InvalidInput(format!(
                        "token sequence of length {} (allowed 1..={max_len})",
                        s.len()
                    )));
                }
                pool.push(self.pool_index(s));
                let mut s = s.clone();
                if let Some(n) = pad_to {
                    let n = n.min(max_len);
                    if s.len() < n {
                        s.resize(n, self.tokenizer.end_id());
                    }
                }
                padded.push(s);
            }
            let features = self.tower.forward(&padded, &pool)?;
            out.extend(l2_normalize_rows(&features)?);
        }
        Ok(out)
    }

    fn pool_index(&self, ids: &[u32]) -> usize {
        if self.eos_token_id == 2 {
            // torch.argmax returns the first maximal index.
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&i| i == max).unwrap_or(0)
        } else {
            ids.iter()
                .position(|&i| i64::from(i) == self.eos_token_id)
                .unwrap_or(0)
        }
    }
}
