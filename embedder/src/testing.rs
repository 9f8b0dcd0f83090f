//! Tiny CLIP checkpoints with formula-generated weights, for tests here and in other crates.
//!
//! Test and benchmark code only: the module exists in this crate's own unit tests and behind
//! the `testing` feature, which the test and benchmark crates turn on, so release builds of
//! the server do not carry it.
//!
//! Every weight is a pure function of the tensor's name and element index, so the Python
//! reference (`embedder/fixtures/make_fixtures.py`) regenerates the identical model without
//! any weight file being committed:
//!
//! ```text
//! seed  = FNV-1a 64 of the tensor name (UTF-8)
//! z     = seed + (i + 1) * 0x9E3779B97F4A7C15            (wrapping u64, i = flat index)
//! z     = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) * 0x94D049BB133111EB
//! z     = z ^ z >> 31;   x = 2 * ((z >> 11) * 2^-53) - 1  (f64 in [-1, 1))
//! value = f32(1 + 0.1 x)            LayerNorm weights
//!         f32(0.05 x)               biases
//!         f32(0.5 x)                token / position / class embeddings
//!         f32(x * sqrt(3 / fan_in)) linear, projection and patch weights
//!         2.6592                    logit_scale
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use crate::config::Activation;
use crate::error::{EmbedderError, Result};

/// Shape of a tiny CLIP. Two presets exist: [`TinyClipSpec::small`] and
/// [`TinyClipSpec::alternate`].
#[derive(Debug, Clone, PartialEq)]
pub struct TinyClipSpec {
    /// Text width.
    pub text_hidden: usize,
    /// Text MLP width.
    pub text_intermediate: usize,
    /// Text blocks.
    pub text_layers: usize,
    /// Text heads.
    pub text_heads: usize,
    /// Text activation.
    pub text_act: Activation,
    /// Text LayerNorm epsilon.
    pub text_eps: f64,
    /// `text_config.eos_token_id` (2 = legacy argmax pooling).
    pub eos_token_id: i64,
    /// Vision width.
    pub vision_hidden: usize,
    /// Vision MLP width.
    pub vision_intermediate: usize,
    /// Vision blocks.
    pub vision_layers: usize,
    /// Vision heads.
    pub vision_heads: usize,
    /// Vision activation.
    pub vision_act: Activation,
    /// Vision LayerNorm epsilon.
    pub vision_eps: f64,
    /// Input side.
    pub image_size: usize,
    /// Patch side.
    pub patch_size: usize,
    /// Shared embedding width.
    pub projection_dim: usize,
    /// `preprocessor_config.json` `size.shortest_edge`.
    pub shortest_edge: usize,
    /// `image_mean`.
    pub image_mean: [f64; 3],
    /// `image_std`.
    pub image_std: [f64; 3],
}

/// Vocabulary size of the real CLIP tokenizer; tiny models keep it so real text works.
pub const VOCAB_SIZE: usize = 49408;
/// Context length.
pub const MAX_POSITIONS: usize = 77;

impl TinyClipSpec {
    /// 2 layers, quick_gelu, legacy pooling, 40 px images in 8 px patches, 24-d output.
    pub fn small() -> Self {
        Self {
            text_hidden: 32,
            text_intermediate: 64,
            text_layers: 2,
            text_heads: 4,
            text_act: Activation::QuickGelu,
            text_eps: 1e-5,
            eos_token_id: 2,
            vision_hidden: 48,
            vision_intermediate: 96,
            vision_layers: 2,
            vision_heads: 4,
            vision_act: Activation::QuickGelu,
            vision_eps: 1e-5,
            image_size: 40,
            patch_size: 8,
            projection_dim: 24,
            shortest_edge: 40,
            image_mean: [0.5, 0.4, 0.3],
            image_std: [0.2, 0.25, 0.3],
        }
    }

    /// Differently shaped: 3 layers, exact GELU, eps 1e-6, first-eos pooling, 33 px images in
    /// 6 px patches (the remainder is ignored as by a stride-6 convolution), 20-d output.
    pub fn alternate() -> Self {
        Self {
            text_hidden: 48,
            text_intermediate: 80,
            text_layers: 3,
            text_heads: 6,
            text_act: Activation::Gelu,
            text_eps: 1e-6,
            eos_token_id: 49407,
            vision_hidden: 40,
            vision_intermediate: 72,
            vision_layers: 3,
            vision_heads: 2,
            vision_act: Activation::Gelu,
            vision_eps: 1e-6,
            image_size: 33,
            patch_size: 6,
            projection_dim: 20,
            shortest_edge: 36,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        }
    }

    /// Full OpenAI ViT-B/32 shapes (for benchmarks; weights from the same formula).
    pub fn vit_b32() -> Self {
        Self {
            text_hidden: 512,
            text_intermediate: 2048,
            text_layers: 12,
            text_heads: 8,
            text_act: Activation::QuickGelu,
            text_eps: 1e-5,
            eos_token_id: 2,
            vision_hidden: 768,
            vision_intermediate: 3072,
            vision_layers: 12,
            vision_heads: 12,
            vision_act: Activation::QuickGelu,
            vision_eps: 1e-5,
            image_size: 224,
            patch_size: 32,
            projection_dim: 512,
            shortest_edge: 224,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        }
    }

    fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": 2.6592,
            "text_config": {
                "vocab_size": VOCAB_SIZE,
                "hidden_size": self.text_hidden,
                "intermediate_size": self.text_intermediate,
                "num_hidden_layers": self.text_layers,
                "num_attention_heads": self.text_heads,
                "max_position_embeddings": MAX_POSITIONS,
                "hidden_act": self.text_act,
                "layer_norm_eps": self.text_eps,
                "projection_dim": self.projection_dim,
                "bos_token_id": 49406,
                "eos_token_id": self.eos_token_id,
                "pad_token_id": 1,
            },
            "vision_config": {
                "hidden_size": self.vision_hidden,
                "intermediate_size": self.vision_intermediate,
                "num_hidden_layers": self.vision_layers,
                "num_attention_heads": self.vision_heads,
                "num_channels": 3,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "hidden_act": self.vision_act,
                "layer_norm_eps": self.vision_eps,
                "projection_dim": self.projection_dim,
            },
        })
    }

    fn preprocessor_json(&self) -> serde_json::Value {
        json!({
            "crop_size": {"height": self.image_size, "width": self.image_size},
            "do_center_crop": true,
            "do_convert_rgb": true,
            "do_normalize": true,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "image_processor_type": "CLIPImageProcessor",
            "resample": 3,
            "rescale_factor": 1.0 / 255.0,
            "size": {"shortest_edge": self.shortest_edge},
        })
    }

    /// `(name, shape)` of every tensor of the checkpoint, in HF `CLIPModel` naming.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut t = Vec::new();
        let (th, ti) = (self.text_hidden, self.text_intermediate);
        t.push((
            "text_model.embeddings.token_embedding.weight".into(),
            vec![VOCAB_SIZE, th],
        ));
        t.push((
            "text_model.embeddings.position_embedding.weight".into(),
            vec![MAX_POSITIONS, th],
        ));
        push_encoder(&mut t, "text_model.encoder", self.text_layers, th, ti);
        push_norm(&mut t, "text_model.final_layer_norm", th);
        let (vh, vi, p) = (
            self.vision_hidden,
            self.vision_intermediate,
            self.patch_size,
        );
        let grid = self.image_size / p;
        t.push(("vision_model.embeddings.class_embedding".into(), vec![vh]));
        t.push((
            "vision_model.embeddings.patch_embedding.weight".into(),
            vec![vh, 3, p, p],
        ));
        t.push((
            "vision_model.embeddings.position_embedding.weight".into(),
            vec![grid * grid + 1, vh],
        ));
        push_norm(&mut t, "vision_model.pre_layrnorm", vh);
        push_encoder(&mut t, "vision_model.encoder", self.vision_layers, vh, vi);
        push_norm(&mut t, "vision_model.post_layernorm", vh);
        t.push((
            "visual_projection.weight".into(),
            vec![self.projection_dim, vh],
        ));
        t.push((
            "text_projection.weight".into(),
            vec![self.projection_dim, th],
        ));
        t.push(("logit_scale".into(), vec![]));
        t
    }
}

fn push_norm(t: &mut Vec<(String, Vec<usize>)>, prefix: &str, h: usize) {
    t.push((format!("{prefix}.weight"), vec![h]));
    t.push((format!("{prefix}.bias"), vec![h]));
}

fn push_encoder(
    t: &mut Vec<(String, Vec<usize>)>,
    prefix: &str,
    layers: usize,
    h: usize,
    i: usize,
) {
    for l in 0..layers {
        let p = format!("{prefix}.layers.{l}");
        for proj in ["k_proj", "v_proj", "q_proj", "out_proj"] {
            t.push((format!("{p}.self_attn.{proj}.weight"), vec![h, h]));
            t.push((format!("{p}.self_attn.{proj}.bias"), vec![h]));
        }
        push_norm(t, &format!("{p}.layer_norm1"), h);
        t.push((format!("{p}.mlp.fc1.weight"), vec![i, h]));
        t.push((format!("{p}.mlp.fc1.bias"), vec![i]));
        t.push((format!("{p}.mlp.fc2.weight"), vec![h, i]));
        t.push((format!("{p}.mlp.fc2.bias"), vec![h]));
        push_norm(t, &format!("{p}.layer_norm2"), h);
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Uniform value in [-1, 1) for element `i` of the tensor seeded by `seed` (splitmix64).
fn unit(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    2.0 * ((z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0
}

/// The deterministic values of one tensor (see the module docs for the formula).
pub fn tensor_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name == "logit_scale" {
        return vec![2.6592];
    }
    let seed = fnv1a64(name.as_bytes());
    let is_norm = ["layer_norm", "layernorm", "layrnorm"]
        .iter()
        .any(|k| name.contains(k));
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let scaled = |x: f64| -> f64 {
        if is_norm && name.ends_with(".weight") {
            1.0 + 0.1 * x
        } else if name.ends_with(".bias") {
            0.05 * x
        } else if name.contains("patch_embedding") || name.contains("proj") || name.contains("fc") {
            x * (3.0 / fan_in as f64).sqrt()
        } else {
            0.5 * x
        }
    };
    (0..n as u64)
        .map(|i| scaled(unit(seed, i)) as f32)
        .collect()
}

/// Writes `config.json`, `model.safetensors` and `preprocessor_config.json` of a tiny CLIP
/// into `dir` (created if missing). No tokenizer file: the built-in OpenAI vocabulary applies.
pub fn write_tiny_clip(dir: &Path, spec: &TinyClipSpec) -> Result<()> {
    let write_err = |path: &Path, message: String| EmbedderError::Write {
        path: path.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e.to_string()))?;
    for (file, value) in [
        ("config.json", spec.config_json()),
        ("preprocessor_config.json", spec.preprocessor_json()),
    ] {
        let path = dir.join(file);
        let text =
            serde_json::to_string_pretty(&value).map_err(|e| write_err(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| write_err(&path, e.to_string()))?;
    }
    let tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = spec
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let bytes = tensor_values(&name, &shape)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (name, (shape, bytes))
        })
        .collect();
    let views = tensors
        .iter()
        .map(|(name, (shape, bytes))| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| write_err(dir, e.to_string()))?;
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path)
        .map_err(|e| write_err(&path, e.to_string()))?;
    Ok(())
}

/// Both encoders of `spec` with formula weights built directly in memory (no files), the
/// built-in tokenizer and the spec's preprocessing. Used by benchmarks at full model sizes.
pub fn in_memory_encoders(
    spec: &TinyClipSpec,
    device: crate::DeviceChoice,
) -> Result<(crate::ClipTextEncoder, crate::ClipImageEncoder)> {
    let placement = device.place()?;
    let invalid = |e: String| EmbedderError::InvalidInput(format!("tiny spec: {e}"));
    let cfg: crate::ClipConfig =
        serde_json::from_value(spec.config_json()).map_err(|e| invalid(e.to_string()))?;
    let pre =
        crate::image::PreprocessorConfig::from_json(&spec.preprocessor_json()).map_err(invalid)?;
    let mut tensors = std::collections::HashMap::new();
    for (name, shape) in spec.tensor_shapes() {
        let values = tensor_values(&name, &shape);
        let t = candle_core::Tensor::from_vec(values, shape, &placement.device)?
            .to_dtype(placement.dtype)?;
        tensors.insert(name, t);
    }
    let vb = candle_nn::VarBuilder::from_tensors(tensors, placement.dtype, &placement.device);
    let text = crate::ClipTextEncoder::from_parts(
        &cfg,
        vb.clone(),
        crate::ClipTokenizer::builtin()?,
        placement.text_precision,
    )?;
    let image = crate::ClipImageEncoder::from_parts(&cfg, vb, pre, placement.image_precision)?;
    Ok((text, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_and_bounded() {
        let a = tensor_values("text_model.final_layer_norm.weight", &[8]);
        assert_eq!(a, tensor_values("text_model.final_layer_norm.weight", &[8]));
        assert!(a.iter().all(|v| (0.9..=1.1).contains(v)));
        let b = tensor_values("text_model.final_layer_norm.bias", &[8]);
        assert!(b.iter().all(|v| v.abs() <= 0.05));
        assert_ne!(tensor_values("x.bias", &[4]), tensor_values("y.bias", &[4]));
    }
}
