//! Errors of the batch embedding pipeline. Per-image failures are not errors: they are
//! recorded in the partition's `errors.jsonl` and the run goes on.

use std::path::PathBuf;

/// What can stop `glimpse embed`.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The arguments are inconsistent (range, sizes, missing input).
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An input file (image list, image Parquet) is malformed.
    #[error("invalid input {path}: {reason}")]
    Input {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The output folder holds partitions of an incompatible run.
    #[error(
        "cannot resume into {path}: {reason}; use another --out folder or remove the old partitions"
    )]
    ResumeMismatch {
        /// The partition that does not match.
        path: PathBuf,
        /// How it differs.
        reason: String,
    },
    /// A hub dataset could not be listed or downloaded.
    #[error("cannot obtain dataset `{dataset}`: {reason}")]
    Hub {
        /// The dataset id.
        dataset: String,
        /// Why, and how to work around it.
        reason: String,
    },
    /// The model could not be loaded or failed while running.
    #[error(transparent)]
    Model(#[from] glimpse_embedder::EmbedderError),
    /// Writing a partition failed.
    #[error(transparent)]
    Write(#[from] crate::ingest::IngestError),
    /// A Parquet file could not be read.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// A pipeline thread panicked or hung up (a bug).
    #[error("internal pipeline failure: {0}")]
    Internal(String),
}

/// Result alias of the embedding pipeline.
pub type Result<T, E = EmbedError> = std::result::Result<T, E>;

/// Wraps an I/O error with its path.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EmbedError {
    let path = path.into();
    move |source| EmbedError::Io { path, source }
}
