//! Immutable on-disk segments: one directory per segment.
//!
//! | file            | content                                                  |
//! |-----------------|----------------------------------------------------------|
//! | `vectors.f32`   | rows × dim little-endian f32, row-major, mapped zero-copy |
//! | `ids.rkyv`      | rkyv `IdTable`: ids in row order + rows sorted by id      |
//! | `rows.rkyv`     | rkyv `RowTable`: image path, blob ref, metadata per row   |
//! | `blobs.bin`     | inline image bytes, concatenated (absent when none)       |
//! | `index.ivfpq`   | ANN index over `vectors.f32` (large segments only)        |
//! | `del-<gen>.bits`| tombstone bitmap generation `gen` (named in the manifest) |
//! | `SEGMENT`       | footer: format version, dim, metric, rows, len + crc32 of every file above |

mod format;
mod reader;
mod tombstones;
mod writer;

pub use format::{FileSum, SegmentMeta};
pub(crate) use format::{META_FILE, MetaEntry};
pub(crate) use reader::{IndexSlot, SegmentReader};
pub use reader::{SegmentDump, dump_segment};
pub(crate) use tombstones::Tombstones;
pub(crate) use writer::SegmentWriter;

/// Directory name of segment `id`.
pub(crate) fn dir_name(id: u64) -> String {
    format!("seg-{id:012}")
}

/// Parses a segment directory name.
pub(crate) fn parse_dir_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.parse().ok()
}

/// Temp directory name used while segment `id` is being written. Unique to this writer: a
/// collection dropped and created again under the same name numbers its segments from 1 again,
/// and a writer of the dropped one must never share (or clean up) a path of the new one.
pub(crate) fn tmp_dir_name(id: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "tmp-seg-{id:012}-{:x}-{nanos:x}-{unique:x}",
        std::process::id()
    )
}
