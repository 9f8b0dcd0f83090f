//! Image decoding and CLIPImageProcessor-exact preprocessing.

mod decode;
mod preprocess;
mod resize;

pub use decode::{AlphaMode, MAX_SIDE, decode_rgb, decode_rgb_with};
pub use preprocess::{PreprocessedImage, PreprocessorConfig, Size};
pub use resize::{Filter, Rgb8, resize};
