//! In-process CLIP text and image embedding on candle, numerically equal to the reference
//! (Hugging Face `CLIPModel` + `CLIPImageProcessor`, OpenAI's tokenizer).
//!
//! * [`resolve_model`] finds a checkpoint (local directory or hub id) as a [`ModelDir`].
//! * [`ClipTextEncoder`] tokenizes and embeds queries; [`ClipImageEncoder`] decodes,
//!   preprocesses and embeds images; [`ClipEmbedder`] holds both plus a query cache.
//! * `testing::write_tiny_clip` (feature `testing`) writes tiny formula-weighted checkpoints
//!   for tests.
//!
//! All outputs are L2-normalised `f32` vectors of width `projection_dim`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod device;
mod embedder;
mod error;
pub mod image;
mod image_encoder;
mod model;
mod model_dir;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod text_encoder;
pub mod tokenizer;

pub use config::{Activation, ClipConfig, TextConfig, VisionConfig};
pub use device::DeviceChoice;
pub use embedder::{CacheStats, ClipEmbedder, DEFAULT_TEXT_CACHE};
pub use error::{EmbedderError, ImageError, Result};
pub use image::PreprocessedImage;
pub use image_encoder::ClipImageEncoder;
pub use model_dir::{
    DEFAULT_MODEL, ModelDir, TokenizerFiles, WeightFiles, hub_token, resolve_model,
};
pub use text_encoder::ClipTextEncoder;
pub use tokenizer::ClipTokenizer;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn encoders_are_shareable() {
        assert_send_sync::<super::ClipTextEncoder>();
        assert_send_sync::<super::ClipImageEncoder>();
        assert_send_sync::<super::ClipEmbedder>();
    }
}
