//! The error type of the object-storage layer.

use glimpse_storage::StorageError;

/// Everything that can go wrong between a data directory and its bucket.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The `--remote` URL is not one this build can open.
    #[error("bad remote URL {url:?}: {detail}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The bucket did not answer or refused a request; retried later.
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
    /// Another writer published a newer manifest on the same prefix: this
    /// one takes no more writes.
    #[error(
        "fenced: another writer published manifest version {theirs} on this prefix (ours was {ours}); this writer takes no more writes"
    )]
    Fenced {
        /// The version this writer last published or restored.
        ours: u64,
        /// The version found in the bucket.
        theirs: u64,
    },
    /// The bucket holds something that is not a valid Glimpse manifest.
    #[error("invalid remote manifest {key}: {detail}")]
    BadManifest {
        /// Its object key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The data directory and the bucket disagree about who is ahead.
    #[error("{0}")]
    Diverged(String),
    /// A local file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The storage engine refused an operation.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Result with [`RemoteError`].
pub type Result<T> = std::result::Result<T, RemoteError>;

impl RemoteError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        RemoteError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn store(e: object_store::Error) -> Self {
        RemoteError::Unavailable(e.to_string())
    }
}
