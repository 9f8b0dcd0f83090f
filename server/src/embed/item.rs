//! One input image of `glimpse embed` ([`SourceItem`]) and where its bytes
//! come from ([`Payload`]): the type every input source produces, in a module
//! of its own so the sources (`source`, `hf_parquet`) depend on it and not on
//! each other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ingest::MetaValue;

/// Where an item's encoded image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A file to read.
    File(PathBuf),
    /// Bytes already in memory (from a Parquet row).
    Bytes(Vec<u8>),
    /// No image at all (e.g. a null cell); the reason is recorded as the item's failure.
    Missing(String),
}

/// One input image with its global id.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceItem {
    /// Position in the input order.
    pub id: u64,
    /// The image's path as the input names it, if any.
    pub image_path: Option<String>,
    /// The encoded image.
    pub payload: Payload,
    /// Carried-through column values (Parquet inputs only); null cells are absent.
    pub extra: BTreeMap<String, MetaValue>,
}
