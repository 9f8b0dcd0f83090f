//! The error type of the storage engine.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the storage engine.
///
/// File errors always carry the path (and, for corruption, the byte offset)
/// so an operator can find the damaged file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O error on a file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed a checksum, length or structure check.
    #[error("corrupt data in {path} at offset {offset}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the first bad byte (or of the bad record).
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A collection name outside `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid collection name {0:?}: use 1 to 64 characters from [A-Za-z0-9_-]")]
    InvalidName(String),
    /// `create_collection` on an existing name with another dimension or metric.
    #[error("collection {name:?} already exists with dim {dim} and metric {metric}")]
    CollectionMismatch {
        /// The collection name.
        name: String,
        /// Its existing dimension.
        dim: usize,
        /// Its existing metric.
        metric: glimpse_index::Metric,
    },
    /// The collection was dropped while a handle to it was still in use.
    #[error("collection {0:?} was dropped or the store was closed")]
    Closed(String),
    /// A point of a write batch is invalid; the whole batch was rejected.
    #[error("invalid point #{index} (id {id:?}): {reason}; the whole batch was rejected")]
    InvalidPoint {
        /// Position of the point in the batch.
        index: usize,
        /// Its id (possibly truncated for display).
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An invalid argument other than a point (query, options...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier write failed in a way that leaves the in-process state
    /// untrustworthy (for example a failed fsync); the collection refuses
    /// further writes until the store is reopened.
    #[error(
        "collection {name:?} refuses writes after an earlier failure ({reason}); reopen the store"
    )]
    Poisoned {
        /// The collection name.
        name: String,
        /// The first failure.
        reason: String,
    },
    /// The store was opened read-only (a replica); it takes no writes.
    #[error("collection {0:?} is read-only (opened as a replica)")]
    ReadOnly(String),
    /// Another process holds the store's lock file.
    #[error("store at {0} is locked by another process")]
    Locked(PathBuf),
    /// Background work (a compaction, an index build) stopped because the
    /// collection is closing; it runs again after the next open.
    #[error("{0} interrupted: the collection is closing")]
    Interrupted(String),
    /// The vector index failed to build or load.
    #[error("index error on {path}: {detail}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Result alias of the storage engine.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl AsRef<Path>, offset: u64, detail: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.as_ref().to_path_buf(),
            offset,
            detail: detail.into(),
        }
    }
}

/// Attaches a path to `std::io` results.
pub(crate) trait IoContext<T> {
    /// Maps an I/O error to [`StorageError::Io`] naming `path`.
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| StorageError::io(path, e))
    }
}
