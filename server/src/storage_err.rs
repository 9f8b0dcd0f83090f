//! Mapping storage errors to HTTP answers.

use glimpse_storage::StorageError;

use crate::error::ApiError;

/// Chooses the status for a storage error: the caller's mistakes are 4xx,
/// everything else is a 500 with the engine's message.
pub fn storage_error(e: StorageError) -> ApiError {
    let msg = e.to_string();
    match e {
        StorageError::InvalidName(_)
        | StorageError::InvalidPoint { .. }
        | StorageError::InvalidArgument(_) => ApiError::invalid("invalid_argument", msg),
        StorageError::CollectionMismatch { .. } => ApiError::conflict(msg),
        StorageError::Closed(_) => ApiError::not_found(msg),
        _ => ApiError::internal(msg),
    }
}
