//! The CLIP model as the server uses it: one loaded embedder, text queries
//! through its LRU cache, images decoded and preprocessed per request.

use std::sync::Arc;

use anyhow::Context;
use glimpse_embedder::{ClipEmbedder, DEFAULT_TEXT_CACHE, DeviceChoice, resolve_model};

use crate::error::ApiError;

/// `--device` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// CUDA when built with it and a GPU is present, else CPU.
    Auto,
    /// Always the CPU, f32 weights (the reference's numbers).
    Cpu,
    /// The CPU with the text tower's weights rounded to f16: text queries about 1.2x
    /// faster (half the memory traffic) for ~4e-4 drift from the reference.
    CpuF16,
    /// CUDA GPU 0 in half precision (error without the `cuda` build feature or a GPU).
    Cuda,
    /// CUDA GPU 0 in f32: slower, as close to the reference as the CPU.
    CudaF32,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::CpuF16 => DeviceChoice::CpuF16,
            DeviceArg::Cuda => DeviceChoice::Cuda,
            DeviceArg::CudaF32 => DeviceChoice::CudaF32,
        }
    }
}

/// A loaded CLIP model.
pub struct Model {
    inner: ClipEmbedder,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("id", &self.id()).finish()
    }
}

impl Model {
    /// Resolves (local dir or hub id) and loads both towers.
    pub fn load(spec: &str, device: DeviceArg) -> anyhow::Result<Model> {
        let dir = resolve_model(spec).with_context(|| format!("resolving model {spec:?}"))?;
        let inner = ClipEmbedder::load(&dir, device.into(), DEFAULT_TEXT_CACHE)
            .with_context(|| format!("loading model {spec:?}"))?;
        tracing::info!(
            model = inner.model_id(),
            dim = inner.dim(),
            "CLIP model loaded"
        );
        Ok(Model { inner })
    }

    /// The model's id (hub id or directory).
    pub fn id(&self) -> &str {
        self.inner.model_id()
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// The underlying embedder (for batch image embedding).
    pub fn embedder(&self) -> &ClipEmbedder {
        &self.inner
    }

    /// Embeds a text query through the cache; the flag says whether it was a hit.
    pub fn embed_text(&self, text: &str) -> Result<(Arc<[f32]>, bool), ApiError> {
        self.inner
            .embed_text_cached(text)
            .map_err(|e| ApiError::internal(format!("embedding text: {e}")))
    }

    /// Decodes, preprocesses and embeds one encoded image.
    pub fn embed_image(&self, bytes: &[u8]) -> Result<Vec<f32>, ApiError> {
        let img = self
            .inner
            .image()
            .preprocess(bytes)
            .map_err(|e| ApiError::invalid("invalid_image", format!("image: {e}")))?;
        let mut out = self
            .inner
            .image()
            .embed(std::slice::from_ref(&img))
            .map_err(|e| ApiError::internal(format!("embedding image: {e}")))?;
        out.pop()
            .ok_or_else(|| ApiError::internal("the image tower returned no embedding"))
    }
}
