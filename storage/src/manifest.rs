//! The manifest: which segments are live (with their tombstone
//! generations and deferred index files) and up to which WAL sequence
//! number their content reaches.
//!
//! Stored as `MANIFEST` in the collection directory, a framed file (magic
//! `GLIMPMAN`, version 1) holding JSON, replaced atomically (temp file,
//! fsync, rename, directory fsync). Files a new manifest makes obsolete are
//! deleted only after it is durable.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{atomic_replace, decode_framed, encode_framed};

pub(crate) const MANIFEST_FILE: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"GLIMPMAN";
const VERSION: u32 = 1;

/// One live segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSegment {
    /// Segment id (directory `seg-<id:012>`).
    pub id: u64,
    /// Rows in the segment.
    pub rows: u32,
    /// Current tombstone generation (0 = no tombstones, no file).
    pub tombstone_gen: u64,
    /// The segment's index file when it was built after the segment was
    /// committed (a deferred build); `None` when the segment has no index or
    /// its footer lists one. Absent in manifests written before deferral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexFileRef>,
}

/// A deferred index file inside a segment directory, checked like the
/// files a segment footer lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFileRef {
    /// Index kind (as in a footer's `index`).
    pub kind: String,
    /// File length in bytes.
    pub len: u64,
    /// crc32 of the whole file.
    pub crc32: u32,
}

/// The manifest content (public so that object storage can carry it to
/// replicas: see `glimpse-remote`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Collection name.
    pub name: String,
    /// Vector dimension.
    pub dim: usize,
    /// Metric name.
    pub metric: String,
    /// Every WAL record with a sequence number at or below this is in the segments.
    pub checkpoint_seq: u64,
    /// Next unused segment id.
    pub next_segment_id: u64,
    /// Live segments, oldest first.
    pub segments: Vec<ManifestSegment>,
}

impl Manifest {
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).at(&path)?;
        let (_, json) = decode_framed(&path, &bytes, MAGIC, VERSION)?;
        serde_json::from_slice(json)
            .map_err(|e| StorageError::corrupt(&path, 16, format!("bad manifest JSON: {e}")))
    }

    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| StorageError::InvalidArgument(e.to_string()))?;
        atomic_replace(
            &dir.join(MANIFEST_FILE),
            &encode_framed(MAGIC, VERSION, &json),
        )
    }
}
