//! Glimpse storage engine: write-ahead log, memory-mapped immutable
//! segments, manifest, flush, compaction and crash recovery.
//!
//! Data flows like this (see `docs/architecture.md`, "storage crate", and
//! `docs/format.md` for the byte layouts):
//!
//! 1. [`Collection::upsert`] / [`Collection::delete`] validate the batch and
//!    join a group commit (`group_commit`): one leader appends every
//!    waiting batch to the WAL (`wal`) with one write and one fsync, then
//!    applies them to the active memtable (`memtable`) where reads see them.
//! 2. A full memtable is frozen and the background thread writes it to an
//!    immutable segment (`segment`), tombstones older versions of its ids,
//!    and replaces the `manifest` atomically; WAL files behind the new
//!    checkpoint are then deleted.
//! 3. Compaction (`compaction`) merges segments in the background.
//! 4. Reads take a snapshot (an `ArcSwap`ed `Version` plus the
//!    active memtable) and never wait for a flush or compaction.
//! 5. [`Store::open`] cleans up interrupted work and replays the WAL past
//!    the manifest checkpoint.

mod ann;
mod chunk_writer;
mod codec;
mod collection;
mod compaction;
mod counters;
pub mod error;
pub mod filter;
mod fsutil;
#[cfg(test)]
mod fuzz;
mod group_commit;
mod heap;
pub mod manifest;
mod memtable;
mod meta_value;
pub mod mmap_f32;
mod segment;
mod store;
pub mod types;
mod wal;

pub use ann::{AUTO_COMPACT_MIN_REFINE, auto_builds_compact_tier};
pub use collection::Collection;
pub use collection::{BulkWriter, CommittedFile, CommittedSegment, CommittedState};
pub use error::{Result, StorageError};
pub use filter::{Filter, TextPattern};
pub use glimpse_index::{DEFAULT_RECALL_TARGET, Metric};
pub use heap::{HeapThresholds, release_free_heap, set_heap_thresholds};
pub use segment::{FileSum, SegmentDump, SegmentMeta, dump_segment};
pub use store::{MAX_DIM, Store, is_valid_collection_name};
pub use types::*;
pub use wal::{WalOp, WalRecordSummary, dump_wal};
