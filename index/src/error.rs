//! Errors of index construction and deserialisation.

/// Everything that can go wrong when building, extending or loading an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The vector slice length is not a multiple of the dimension, or the
    /// dimension is zero.
    #[error("bad vector data: {0}")]
    BadVectors(String),
    /// A parameter is out of its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// Too few vectors to train the requested structure.
    #[error("not enough training vectors: need at least {need}, got {got}")]
    NotEnoughData {
        /// Minimum number of vectors required.
        need: usize,
        /// Number of vectors supplied.
        got: usize,
    },
    /// Row numbers would overflow `u32`.
    #[error("row numbers overflow u32 (first row {first_row}, {count} vectors)")]
    RowOverflow {
        /// First row number of the batch.
        first_row: u32,
        /// Number of vectors in the batch.
        count: usize,
    },
    /// Serialised bytes are not a valid index (wrong magic, version,
    /// truncated, inconsistent sizes or offsets).
    #[error("corrupt index bytes: {0}")]
    Corrupt(String),
    /// The caller's [`Cancel`](crate::Cancel) flag was set before the build finished.
    #[error("index build cancelled")]
    Cancelled,
    /// Serialised bytes are from an unknown format version.
    #[error("unsupported index format version {0}")]
    UnsupportedVersion(u32),
}
