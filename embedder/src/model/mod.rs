//! CLIP towers written on candle-nn, following `transformers.models.clip.modeling_clip`
//! (weight names included), with activation and LayerNorm epsilon taken from the config.

mod attention_core;
mod dense;
mod int8_kernel;
mod layer_norm;
mod layers;
mod packing;
mod rows_kernel;
mod text;
mod vision;

pub(crate) use dense::WeightPrecision;
pub(crate) use layers::l2_normalize_rows;
pub use text::TextTower;
pub use vision::VisionTower;
