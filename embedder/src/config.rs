//! `config.json` of a Hugging Face CLIP checkpoint, parsed into what the towers need.
//!
//! Defaults are those of `transformers.CLIPTextConfig` / `CLIPVisionConfig`, so old configs
//! that omit fields load the same way as in the reference implementation.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EmbedderError, Result, io_err};

/// Non-linearity of the MLP blocks (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact erf GELU (OpenCLIP conversions).
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh-approximated GELU.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
}

/// Text tower hyper-parameters (`text_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Context length (77 for CLIP).
    pub max_position_embeddings: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// End-of-text id; 2 marks legacy configs where HF pools at `argmax(input_ids)`.
    pub eos_token_id: i64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

/// Vision tower hyper-parameters (`vision_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Input resolution (square).
    pub image_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// The whole `config.json` of a `CLIPModel`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Text tower.
    #[serde(default)]
    pub text_config: TextConfig,
    /// Vision tower.
    #[serde(default)]
    pub vision_config: VisionConfig,
    /// Width of the shared embedding space.
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
}

fn default_projection_dim() -> usize {
    512
}

impl ClipConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let cfg: ClipConfig =
            serde_json::from_slice(&bytes).map_err(|e| EmbedderError::Config {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.validate().map_err(|message| EmbedderError::Config {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        let positive = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("projection_dim", self.projection_dim),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err("text hidden_size is not a multiple of num_attention_heads".into());
        }
        if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err("vision hidden_size is not a multiple of num_attention_heads".into());
        }
        if v.patch_size > v.image_size {
            return Err("vision patch_size exceeds image_size".into());
        }
        if v.num_channels != 3 {
            return Err(format!(
                "num_channels {} unsupported (RGB only)",
                v.num_channels
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_b32_config_parses_with_legacy_fields() {
        let json = r#"{"projection_dim":512,"text_config":{"hidden_size":512,"eos_token_id":2,
            "hidden_act":"quick_gelu","text_config_dict":null},"vision_config":{"patch_size":32}}"#;
        let cfg: ClipConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.text_config.eos_token_id, 2);
        assert_eq!(cfg.vision_config.grid(), 7);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn inconsistent_heads_rejected() {
        let mut cfg: ClipConfig = serde_json::from_str("{}").unwrap();
        cfg.text_config.num_attention_heads = 7;
        assert!(cfg.validate().unwrap_err().contains("num_attention_heads"));
    }

    #[test]
    fn gelu_variants_parse() {
        let a: Activation = serde_json::from_str("\"gelu\"").unwrap();
        assert_eq!(a, Activation::Gelu);
        let a: Activation = serde_json::from_str("\"gelu_pytorch_tanh\"").unwrap();
        assert_eq!(a, Activation::GeluTanh);
    }
}
