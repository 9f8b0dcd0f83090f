//! Archived (rkyv) and JSON structures of a segment.

use serde::{Deserialize, Serialize};

use crate::filter::{MetaLookup, MetaRef};
use crate::meta_value::{ArchivedMetaValue, MetaValue};

pub(crate) const VECTORS_FILE: &str = "vectors.f32";
pub(crate) const IDS_FILE: &str = "ids.rkyv";
pub(crate) const ROWS_FILE: &str = "rows.rkyv";
pub(crate) const BLOBS_FILE: &str = "blobs.bin";
pub(crate) const META_FILE: &str = "SEGMENT";
pub(crate) const META_MAGIC: &[u8; 8] = b"GLIMPSEG";
pub(crate) const META_VERSION: u32 = 1;

/// Ids of a segment: `ids[row]`, and `sorted` = rows ordered by id (one row
/// per distinct id: the last one written), for binary search without
/// loading anything into a hash map.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct IdTable {
    pub ids: Vec<String>,
    pub sorted: Vec<u32>,
}

/// Where a row's inline image lives in `blobs.bin`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy)]
pub(crate) struct BlobRef {
    pub offset: u64,
    pub len: u64,
}

/// One metadata entry; entries of a row are sorted by key.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone)]
pub(crate) struct MetaEntry {
    pub key: String,
    pub value: MetaValue,
}

/// Everything but the vector of one row.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone)]
pub(crate) struct RowRecord {
    pub image_path: Option<String>,
    pub blob: Option<BlobRef>,
    pub metadata: Vec<MetaEntry>,
}

/// All row records of a segment.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct RowTable {
    pub rows: Vec<RowRecord>,
}

impl MetaLookup for ArchivedRowRecord {
    fn lookup(&self, key: &str) -> Option<MetaRef<'_>> {
        let i = self
            .metadata
            .binary_search_by(|e| e.key.as_str().cmp(key))
            .ok()?;
        Some(archived_meta_ref(&self.metadata[i].value))
    }
}

pub(crate) fn archived_meta_ref(v: &ArchivedMetaValue) -> MetaRef<'_> {
    match v {
        ArchivedMetaValue::Bool(b) => MetaRef::Bool(*b),
        ArchivedMetaValue::Int(i) => MetaRef::Int(i.to_native()),
        ArchivedMetaValue::Float(f) => MetaRef::Float(f.to_native()),
        ArchivedMetaValue::Str(s) => MetaRef::Str(s.as_str()),
    }
}

pub(crate) fn archived_meta_value(v: &ArchivedMetaValue) -> MetaValue {
    match v {
        ArchivedMetaValue::Bool(b) => MetaValue::Bool(*b),
        ArchivedMetaValue::Int(i) => MetaValue::Int(i.to_native()),
        ArchivedMetaValue::Float(f) => MetaValue::Float(f.to_native()),
        ArchivedMetaValue::Str(s) => MetaValue::Str(s.as_str().to_string()),
    }
}

/// Length and checksum of one segment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSum {
    /// File name inside the segment directory.
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// crc32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// The `SEGMENT` footer (JSON inside a framed file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Segment id (matches the directory name).
    pub segment_id: u64,
    /// Vector dimension.
    pub dim: usize,
    /// Metric name.
    pub metric: String,
    /// Rows (including rows superseded within the segment).
    pub rows: u64,
    /// Distinct ids.
    pub distinct_ids: u64,
    /// Kind of the ANN index file, if any.
    pub index: Option<String>,
    /// Every data file with its length and crc32.
    pub files: Vec<FileSum>,
}
