//! Images to L2-normalised CLIP embeddings.

use candle_core::Tensor;

use crate::config::ClipConfig;
use crate::device::DeviceChoice;
use crate::error::{EmbedderError, ImageError, Result};
use crate::image::{PreprocessedImage, PreprocessorConfig};
use crate::model::{VisionTower, l2_normalize_rows};
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
            Self::from_parts(&cfg, vb, preprocessor).map_err(|e| EmbedderError::Config {
                path: dir.root().to_path_buf(),
                message: format!("vision weights do not match config.json: {e}"),
            })?;
        tracing::info!(
            model = dir.id(),
            dim = cfg.projection_dim,
            "loaded CLIP vision tower"
        );
        Ok(encoder)
    }

    /// Builds the encoder from weights already behind a `VarBuilder` (in-memory models).
    pub(crate) fn from_parts(
        cfg: &ClipConfig,
        vb: candle_nn::VarBuilder,
        preprocessor: PreprocessorConfig,
    ) -> Result<Self> {
        check_output_size(cfg, &preprocessor).map_err(EmbedderError::InvalidInput)?;
        Ok(Self {
            tower: VisionTower::new(cfg, vb)?,
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
        let side = self.tower.image_size();
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(MAX_BATCH) {
            let mut flat = Vec::with_capacity(chunk.len() * 3 * side * side);
            for img in chunk {
                if img.height != side || img.width != side || img.pixels.len() != 3 * side * side {
                    return Err(EmbedderError::InvalidInput(format!(
                        "preprocessed image is {}x{}, model expects {side}x{side}",
                        img.height, img.width
                    )));
                }
                flat.extend_from_slice(&img.pixels);
            }
            let pixels = Tensor::from_vec(flat, (chunk.len(), 3, side, side), self.tower.device())?;
            let features = self.tower.forward(&pixels)?;
            out.extend(l2_normalize_rows(&features)?);
        }
        Ok(out)
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
