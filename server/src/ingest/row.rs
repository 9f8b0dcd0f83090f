//! The neutral row type every reader produces, and the checks every row passes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ingest::error::{IngestError, Result};

pub use glimpse_storage::{MAX_ID_BYTES, MetaValue};

/// One vector with its id and payload, independent of the file format it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestRow {
    /// Unique id: the `id` column, or `idx` of pipeline shards, integers in decimal.
    pub id: String,
    /// The embedding, converted to `f32`, finite, of the data set's dimension.
    pub vector: Vec<f32>,
    /// Where the image lives, when the file says.
    pub image_path: Option<String>,
    /// The image itself, for old pipeline shards that stored it inline (base64 decoded).
    pub image_bytes: Option<Vec<u8>>,
    /// Extra scalar columns, by column name; null cells are absent.
    pub metadata: BTreeMap<String, MetaValue>,
}

/// Checks an id: non-empty and at most [`MAX_ID_BYTES`].
pub(crate) fn check_id(path: &Path, row: u64, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(IngestError::EmptyId {
            path: path.to_path_buf(),
            row,
        });
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IngestError::IdTooLong {
            path: path.to_path_buf(),
            id_prefix: id.chars().take(32).collect(),
            len: id.len(),
            max: MAX_ID_BYTES,
        });
    }
    Ok(())
}

/// Checks a vector: non-empty, of the expected dimension (fixing it when still unknown), finite.
pub(crate) fn check_vector(
    path: &Path,
    row_id: &str,
    vector: &[f32],
    dim: &mut Option<usize>,
) -> Result<()> {
    if vector.is_empty() {
        return Err(IngestError::EmptyVector {
            path: path.to_path_buf(),
            row_id: row_id.to_owned(),
        });
    }
    match *dim {
        Some(expected) if expected != vector.len() => {
            return Err(IngestError::DimensionMismatch {
                path: path.to_path_buf(),
                row_id: row_id.to_owned(),
                expected,
                found: vector.len(),
            });
        }
        Some(_) => {}
        None => *dim = Some(vector.len()),
    }
    if let Some((index, &value)) = vector.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(IngestError::NonFinite {
            path: path.to_path_buf(),
            row_id: row_id.to_owned(),
            index,
            value,
        });
    }
    Ok(())
}
