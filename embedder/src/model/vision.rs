//! CLIP vision tower (`vision_model.*` + `visual_projection`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::dense::{Dense, WeightPrecision};
use super::layer_norm::Norm;
use super::layers::{Encoder, Masking, Run, StackShape, layer_norm, projection};
use super::packing::Packing;
use crate::config::ClipConfig;

/// ViT with class token and projection; input `(b, 3, s, s)` pixels, output projected features.
pub struct VisionTower {
    /// Patch embedding as a linear layer from `3·p·p` pixels to `hidden` (no bias): a stride-p
    /// convolution is exactly this product over non-overlapping patches, and the checkpoint's
    /// `(hidden, 3, p, p)` weight is already its `[out, in]` matrix.
    patch_embedding: Dense,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: Norm,
    encoder: Encoder,
    post_layernorm: Norm,
    projection: Dense,
    image_size: usize,
    patch: usize,
    hidden: usize,
    device: Device,
    dtype: DType,
}

impl VisionTower {
    /// Builds the tower from weights named as in `transformers.CLIPModel`, its CPU layers
    /// computing in `precision` (f32, or [`WeightPrecision::Int8Dynamic`]).
    pub(crate) fn new(
        cfg: &ClipConfig,
        vb: VarBuilder,
        precision: WeightPrecision,
    ) -> Result<Self> {
        let v = &cfg.vision_config;
        let shape = StackShape {
            hidden: v.hidden_size,
            intermediate: v.intermediate_size,
            heads: v.num_attention_heads,
            layers: v.num_hidden_layers,
            act: v.hidden_act,
            eps: v.layer_norm_eps,
            // Image batches are arithmetic-bound (50 rows an image for ViT-B/32): f32, or the
            // integer kernel, which cuts the arithmetic; weight-only formats (f16, int8 widened
            // to f32) would save bytes no batch is waiting on. Either kernel computes each row
            // alone, so an image's result is independent of its batch.
            precision,
        };
        let vm = vb.pp("vision_model");
        let emb = vm.pp("embeddings");
        let p = v.patch_size;
        let conv = emb
            .pp("patch_embedding")
            .get((v.hidden_size, v.num_channels, p, p), "weight")?;
        let patch_embedding = Dense::from_parts(
            conv.reshape((v.hidden_size, v.num_channels * p * p))?,
            None,
            precision,
        )?;
        let n_pos = v.grid() * v.grid() + 1;
        Ok(Self {
            patch_embedding,
            class_embedding: emb.get(v.hidden_size, "class_embedding")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((n_pos, v.hidden_size), "weight")?,
            pre_layrnorm: layer_norm(v.hidden_size, v.layer_norm_eps, vm.pp("pre_layrnorm"))?,
            encoder: Encoder::new(&shape, vm.pp("encoder"))?,
            post_layernorm: layer_norm(v.hidden_size, v.layer_norm_eps, vm.pp("post_layernorm"))?,
            projection: projection(
                v.hidden_size,
                cfg.projection_dim,
                precision,
                vb.pp("visual_projection"),
            )?,
            image_size: v.image_size,
            patch: p,
            hidden: v.hidden_size,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// Side of the square input the tower expects.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Dtype the weights are kept in (f16 on a half-precision GPU).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `pixels`: f32 `(b, 3, image_size, image_size)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, hgt, wid) = pixels.dims4()?;
        let p = self.patch;
        let g = self.image_size / p;
        if hgt != self.image_size || wid != self.image_size {
            candle_core::bail!(
                "pixel tensor {hgt}x{wid}, model expects {}",
                self.image_size
            );
        }
        // A stride-p convolution ignores the remainder rows/cols when p does not divide s.
        let pixels = pixels
            .narrow(2, 0, g * p)?
            .narrow(3, 0, g * p)?
            .to_dtype(self.dtype)?;
        let patches = pixels
            .reshape((b, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, c * p * p))?;
        let tokens = self
            .patch_embedding
            .forward(&patches)?
            .reshape((b, g * g, self.hidden))?;
        let cls = self
            .class_embedding
            .reshape((1, 1, self.hidden))?
            .broadcast_as((b, 1, self.hidden))?;
        let xs = Tensor::cat(&[&cls, &tokens], 1)?;
        let xs = xs.broadcast_add(&self.position_embedding)?;
        let xs = self.pre_layrnorm.forward(&xs)?;
        let n = g * g + 1;
        let xs = xs.reshape((b * n, self.hidden))?;
        let run = Run {
            start: 0,
            count: b,
            len: n,
        };
        // The class token (position 0) is pooled; the result is contiguous, so LayerNorm
        // takes its fused per-row kernel at every batch size (a strided view of several
        // images would take its composite path, other bits).
        let pooled = self.encoder.forward_pooled(
            &xs,
            &Packing::from_runs(&[run]),
            Masking::Full,
            &vec![0; b],
        )?;
        let pooled = self.post_layernorm.forward(&pooled)?;
        self.projection.forward(&pooled)
    }
}
