//! Images to L2-normalised CLIP embeddings.

use candle_core::{DType, Tensor};

use crate::config::ClipConfig;
use crate::device::DeviceChoice;
use crate::error::{EmbedderError, ImageError, Result};
use crate::image::{PreprocessedImage, PreprocessorConfig};
use crate::model::{VisionTower, WeightPrecision, l2_normalize_rows};
use crate::model_dir::ModelDir;

/// Images run together in one forward pass.
const MAX_BATCH: usize = 64;

/// CLIP vision tower + preprocessing. `Send + Sync`; `preprocess` is pure and may run on
/// many threads at once.
pub struct ClipImageEncoder {
    tower: VisionTower,
    preprocessor: PreprocessorConfig,
    dim: usize,
}

impl std::fmt::Debug for ClipImageEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipImageEncoder")
            .field("dim", &self.dim)
            .field("preprocessor", &self.preprocessor)
            .finish()
    }
}

impl ClipImageEncoder {
    /// Loads the preprocessing config and the vision weights (the text weights are never read).
    pub fn load(dir: &ModelDir, device: DeviceChoice) -> Result<Self> {
        let cfg = ClipConfig::from_file(dir.config_path())?;
        let preprocessor = match dir.preprocessor_path() {
            Some(p) => PreprocessorConfig::from_file(p)?,
            None => PreprocessorConfig::default(),
        };
        check_output_size(&cfg, &preprocessor).map_err(|message| EmbedderError::Config {
            path: dir
                .preprocessor_path()
                .unwrap_or(dir.config_path())
                .to_path_buf(),
            message,
        })?;
        let placement = device.place()?;
        let vb = dir.var_builder(placement.dtype, &placement.device)?;
        let encoder =
            Self::from_parts(&cfg, vb, preprocessor, placement.image_precision).map_err(|e| {
                EmbedderError::Config {
                    path: dir.root().to_path_buf(),
                    message: format!("vision weights do not match config.json: {e}"),
                }
            })?;
        tracing::info!(
            model = dir.id(),
            dim = cfg.projection_dim,
            "loaded CLIP vision tower"
        );
        Ok(encoder)
    }

    /// Builds the encoder from weights already behind a `VarBuilder` (in-memory models), its
    /// CPU layers computing in `precision`.
    pub(crate) fn from_parts(
        cfg: &ClipConfig,
        vb: candle_nn::VarBuilder,
        preprocessor: PreprocessorConfig,
        precision: WeightPrecision,
    ) -> Result<Self> {
        check_output_size(cfg, &preprocessor).map_err(EmbedderError::InvalidInput)?;
        Ok(Self {
            tower: VisionTower::new(cfg, vb, precision)?,
            preprocessor,
            dim: cfg.projection_dim,
        })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The preprocessing in use.
    pub fn preprocessor(&self) -> &PreprocessorConfig {
        &self.preprocessor
    }

    /// Decodes and preprocesses one encoded image (JPEG, PNG, WebP, GIF).
    pub fn preprocess(&self, bytes: &[u8]) -> Result<PreprocessedImage, ImageError> {
        self.preprocessor.preprocess_bytes(bytes)
    }

    /// L2-normalised embeddings, one per image, equal to HF `get_image_features` normalised.
    pub fn embed(&self, images: &[PreprocessedImage]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(MAX_BATCH) {
            let pixels = self.upload(chunk)?;
            out.extend(self.embed_uploaded(&pixels)?);
        }
        Ok(out)
    }

    /// Stages `images` as one `(n, 3, s, s)` pixel tensor on the model's device, already in
    /// the tower's dtype. For half-precision weights the f32 to f16 rounding (the same
    /// round-to-nearest-even the tower would otherwise apply on the device) runs here on all
    /// cores, which halves the bytes copied to the GPU. [`embed`](Self::embed) is `upload`
    /// then [`embed_uploaded`](Self::embed_uploaded) per batch of 64.
    pub fn upload(&self, images: &[PreprocessedImage]) -> Result<Tensor> {
        use rayon::prelude::*;
        let side = self.tower.image_size();
        let per_image = 3 * side * side;
        for img in images {
            if img.height != side || img.width != side || img.pixels.len() != per_image {
                return Err(EmbedderError::InvalidInput(format!(
                    "preprocessed image is {}x{}, model expects {side}x{side}",
                    img.height, img.width
                )));
            }
        }
        let shape = (images.len(), 3, side, side);
        let device = self.tower.device();
        if self.tower.dtype() == DType::F16 {
            let mut flat = vec![half::f16::ZERO; images.len() * per_image];
            flat.par_chunks_mut(per_image)
                .zip(images.par_iter())
                .for_each(|(dst, img)| {
                    for (d, &v) in dst.iter_mut().zip(&img.pixels) {
                        *d = half::f16::from_f32(v);
                    }
                });
            return Ok(Tensor::from_vec(flat, shape, device)?);
        }
        let mut flat = vec![0f32; images.len() * per_image];
        flat.par_chunks_mut(per_image)
            .zip(images.par_iter())
            .for_each(|(dst, img)| dst.copy_from_slice(&img.pixels));
        Ok(Tensor::from_vec(flat, shape, device)?)
    }

    /// L2-normalised embeddings of pixels staged by [`upload`](Self::upload).
    pub fn embed_uploaded(&self, pixels: &Tensor) -> Result<Vec<Vec<f32>>> {
        let features = self.tower.forward(pixels)?;
        Ok(l2_normalize_rows(&features)?)
    }
}

/// The preprocessing must produce exactly the square the tower was trained on.
fn check_output_size(
    cfg: &ClipConfig,
    pre: &PreprocessorConfig,
) -> std::result::Result<(), String> {
    let side = cfg.vision_config.image_size;
    let (h, w) = pre.output_size(side, side);
    let aspect_dependent =
        !pre.do_center_crop && matches!(pre.size, crate::image::Size::ShortestEdge(_));
    if aspect_dependent || (h, w) != (side, side) {
        return Err(format!(
            "preprocessing does not always yield {side}x{side} images (got {h}x{w} for a square input)"
        ));
    }
    Ok(())
}
