//! Error types of the embedder crate.

use std::path::PathBuf;

/// Everything that can go wrong while resolving, loading or running a CLIP model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedderError {
    /// A file of the model directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file (config, preprocessor config, tokenizer) is malformed or inconsistent.
    #[error("invalid {path}: {message}")]
    Config {
        /// The file that is invalid.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The model directory lacks a required file.
    #[error("model directory {dir} has no {what}")]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// Description of the missing file(s).
        what: String,
    },
    /// The model could not be located or downloaded.
    #[error("cannot obtain model `{spec}`: {message}")]
    Resolve {
        /// What the user asked for (directory or hub id).
        spec: String,
        /// Why it failed and how to fix it.
        message: String,
    },
    /// The requested device is unavailable in this build or on this machine.
    #[error("device unavailable: {0}")]
    Device(String),
    /// A tensor operation failed (shape mismatch in weights, out of memory, ...).
    #[error("model error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The input is not acceptable (e.g. empty batch item, bad image tensor shape).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Writing a file (tiny test model) failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why it failed.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = EmbedderError> = std::result::Result<T, E>;

/// Why one image could not be turned into model input; per item, never fatal to a batch.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not a supported image format (JPEG, PNG, WebP, GIF).
    #[error("unsupported image format")]
    UnsupportedFormat,
    /// The bytes look like a supported format but cannot be decoded.
    #[error("corrupt image: {0}")]
    Decode(String),
    /// The image decodes but is unusable (zero-sized, too large).
    #[error("unusable image: {0}")]
    Invalid(String),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EmbedderError {
    let path = path.into();
    move |source| EmbedderError::Io { path, source }
}
