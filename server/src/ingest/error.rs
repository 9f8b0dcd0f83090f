//! The one error type of the ingest layer.

use std::path::PathBuf;

use crate::ingest::pickle::PickleError;

/// Everything that can go wrong while discovering, reading or writing Parquet shards.
///
/// Every variant that concerns a file carries its path, and every variant that concerns a row
/// carries the row's id, so a message alone tells the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A path given by the user does not exist.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A path names something other than a regular file or a folder (a FIFO, a socket, a
    /// device): opening it could block forever or read without end.
    #[error("{path}: not a regular file or folder")]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
    },
    /// The given paths hold no `*.parquet` file at all.
    #[error("no Parquet shards found under {paths}")]
    NoShards {
        /// The searched paths, joined for display.
        paths: String,
    },
    /// An operating-system error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet library refused the file: not a Parquet file, truncated, or corrupt.
    #[error("{path}: not a readable Parquet file (truncated or corrupt?): {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Corrupt data the Parquet library would panic on: refused up front, or the panic was
    /// contained.
    #[error("{path}: corrupt Parquet data: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The library's panic message.
        reason: String,
    },
    /// Arrow failed while building or decoding a batch.
    #[error("{path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A required column is absent.
    #[error(
        "{path}: missing column `{column}` (found columns: {found}); expected either Glimpse's \
         schema (`id`, `embedding`) or the original pipeline's (`idx`, `output`)"
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The required column.
        column: String,
        /// The columns the file does have, comma-separated.
        found: String,
    },
    /// A column has a type Glimpse cannot read for its role.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The Arrow type found.
        found: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A required value is null.
    #[error("{path}: row {row_id}: column `{column}` is null")]
    NullValue {
        /// The file.
        path: PathBuf,
        /// The row's id, or `row N` when the id itself is missing.
        row_id: String,
        /// The column.
        column: String,
    },
    /// A vector's length differs from the dimension of the data set.
    #[error("{path}: row {row_id}: embedding has dimension {found}, expected {expected}")]
    DimensionMismatch {
        /// The file.
        path: PathBuf,
        /// The row's id.
        row_id: String,
        /// The dimension fixed by earlier rows or files.
        expected: usize,
        /// The offending dimension.
        found: usize,
    },
    /// A vector contains NaN or an infinity.
    #[error("{path}: row {row_id}: embedding value #{index} is {value} (NaN/inf are not allowed)")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The row's id.
        row_id: String,
        /// Position of the first bad component.
        index: usize,
        /// The bad value.
        value: f32,
    },
    /// Two shards of one data set hold vectors of different dimensions.
    #[error("{path}: embeddings have dimension {found}, but {reference} has dimension {expected}")]
    ShardDimensionMismatch {
        /// The shard that disagrees.
        path: PathBuf,
        /// Its dimension.
        found: usize,
        /// The first shard that fixed the dimension.
        reference: PathBuf,
        /// That shard's dimension.
        expected: usize,
    },
    /// A binary embedding whose byte length is not a multiple of 4 (not a run of f32).
    #[error("{path}: row {row_id}: binary embedding is {len} bytes, not a multiple of 4")]
    EmbeddingByteLength {
        /// The file.
        path: PathBuf,
        /// The row's id.
        row_id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A vector has no components.
    #[error("{path}: row {row_id}: embedding is empty")]
    EmptyVector {
        /// The file.
        path: PathBuf,
        /// The row's id.
        row_id: String,
    },
    /// An id is longer than [`MAX_ID_BYTES`](crate::ingest::MAX_ID_BYTES).
    #[error("{path}: id `{id_prefix}…` is {len} bytes long, the limit is {max}")]
    IdTooLong {
        /// The file.
        path: PathBuf,
        /// The first characters of the id.
        id_prefix: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An id is the empty string.
    #[error("{path}: row {row}: id is empty")]
    EmptyId {
        /// The file.
        path: PathBuf,
        /// Zero-based row number in the file.
        row: u64,
    },
    /// The pickled `output` value of an original-pipeline row could not be decoded.
    #[error("{path}: row {row_id}: column `output`: {source}")]
    Pickle {
        /// The file.
        path: PathBuf,
        /// The row's id.
        row_id: String,
        /// What was wrong with the pickle.
        #[source]
        source: PickleError,
    },
    /// A record handed to a writer does not fit the writer's schema.
    #[error("{path}: record {row_id}: {reason}")]
    InvalidRecord {
        /// The file being written.
        path: PathBuf,
        /// The record's id.
        row_id: String,
        /// What is wrong.
        reason: String,
    },
    /// Writer options are contradictory (e.g. dimension 0, reserved column names).
    #[error("{path}: invalid writer options: {reason}")]
    InvalidOptions {
        /// The file being written.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Runs `f`, turning a panic inside it into [`IngestError::Corrupt`].
///
/// The `parquet` crate still has `assert!`s that fire on some corrupt footers and pages; bad
/// input must never bring down the server, so every call that decodes file bytes goes through
/// here. Callers never reuse a reader that panicked.
pub(crate) fn contain_panics<T>(
    path: &std::path::Path,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the Parquet decoder panicked".to_owned());
        Err(IngestError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })
    })
}

/// Shorthand for results of this module.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
