//! A collection: one struct, [`Collection`], whose `impl` blocks live in the
//! submodules by concern (the way qdrant splits `segment/`):
//!
//! | module | job |
//! | --- | --- |
//! | `open` | create on disk, open (clean-up, segments, WAL replay), start the background thread |
//! | `write` | validation, the group-commit leader (log, sync, apply), rotation; `upsert`, `delete` |
//! | `read` | snapshot reads: `get`, `ids`, `search`, statistics |
//! | `publish` | tombstone generations, a new manifest, then one `Version` swap |
//! | `flush` | frozen memtables become segments |
//! | `compact` | the merge that the compaction policy picks |
//! | `bulk_writer` | `BulkWriter`: a bulk load streamed into a new segment, and its atomic commit |
//! | `follow` | the committed state as files (for object storage), following a manifest written elsewhere |
//! | `index_build` | deferred ANN index builds, borrowed training |
//! | `background` | the background thread and the deferral of work during bulk loads |

mod background;
mod bulk_writer;
mod compact;
mod flush;
mod follow;
mod index_build;
mod open;
mod publish;
mod read;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use glimpse_index::Metric;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::counters::Counters;
use crate::error::{Result, StorageError};
use crate::group_commit::GroupCommit;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::segment::{SegmentReader, Tombstones};
use crate::types::{CollectionInfo, StorageCounters, StoreOptions, WriteStats};
use crate::wal::{WalOp, WalWriter};

pub use bulk_writer::BulkWriter;
pub use follow::{CommittedFile, CommittedSegment, CommittedState};

pub(crate) const WAL_DIR: &str = "wal";
/// A segment together with its current tombstones.
pub(crate) struct LiveSegment {
    pub reader: Arc<SegmentReader>,
    pub tombstones: Arc<Tombstones>,
    pub generation: u64,
}

impl LiveSegment {
    fn live_rows(&self) -> u64 {
        self.reader.rows as u64 - self.tombstones.count() as u64
    }

    /// Whether a deferred index build is due here (an index over rows that
    /// are all deleted or replaced would never serve anything).
    fn awaits_index(&self, index_min_rows: usize) -> bool {
        self.live_rows() > 0 && self.reader.awaits_index(index_min_rows)
    }

    /// Row holding the live version of `id` here, if any.
    fn live_row(&self, id: &str) -> Option<u32> {
        if self.reader.is_quarantined() {
            return None;
        }
        self.reader
            .find_row(id)
            .filter(|&r| !self.tombstones.contains(r))
    }
}

/// An immutable view: frozen memtables (newest first) and segments.
/// Invariant: across segments, each id has at most one untombstoned row.
pub(crate) struct Version {
    pub frozen: Vec<Arc<Memtable>>,
    pub segments: Vec<Arc<LiveSegment>>,
}

#[derive(Default)]
struct Signal {
    work: bool,
    shutdown: bool,
}

/// State shared by the handle, bulk writers and the background thread.
pub(crate) struct Inner {
    pub name: String,
    pub dim: usize,
    pub metric: Metric,
    pub dir: PathBuf,
    pub opts: StoreOptions,
    active: RwLock<Memtable>,
    version: ArcSwap<Version>,
    version_lock: Mutex<()>,
    /// The maintenance lock: flush, compaction and bulk commits run under
    /// it, and it owns the current manifest.
    maint: Mutex<Manifest>,
    queue: GroupCommit<WalOp, Result<WriteStats>>,
    wal: Mutex<WalWriter>,
    last_sync: Mutex<Instant>,
    poisoned: Mutex<Option<String>>,
    closed: AtomicBool,
    /// Set first thing at shutdown, before taking the maintenance lock:
    /// compactions and deferred index builds poll it and stop, so a close
    /// does not wait out a minute of training.
    closing: AtomicBool,
    next_segment_id: AtomicU64,
    checkpoint: AtomicU64,
    points: AtomicI64,
    pub counters: Counters,
    signal: Mutex<Signal>,
    signal_cv: Condvar,
    /// Bulk writers open now, and when the last one closed: deferred index
    /// builds and compactions wait for [`StoreOptions::bulk_quiet`] of calm.
    bulk_open: AtomicUsize,
    bulk_last: Mutex<Option<Instant>>,
    /// Since when deferred work has been held back by bulk loading (capped
    /// by [`StoreOptions::bulk_quiet_max`]).
    deferred_since: Mutex<Option<Instant>>,
    /// When a due compaction was first held back by bulk loading.
    compaction_since: Mutex<Option<Instant>>,
}

/// A named set of points with a fixed dimension and metric.
///
/// All methods take `&self` and may be called from many threads.
pub struct Collection {
    inner: Arc<Inner>,
    bg: Mutex<Option<JoinHandle<()>>>,
}
impl Inner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed(self.name.clone()));
        }
        Ok(())
    }

    /// [`check_open`](Self::check_open), and refuses a read-only store.
    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.opts.read_only {
            return Err(StorageError::ReadOnly(self.name.clone()));
        }
        Ok(())
    }

    fn poison(&self, reason: String) {
        tracing::error!(collection = %self.name, %reason, "write path failed; refusing writes until reopen");
        let mut p = self.poisoned.lock();
        if p.is_none() {
            *p = Some(reason);
        }
    }

    fn alloc_segment_id(&self) -> u64 {
        self.next_segment_id.fetch_add(1, Ordering::AcqRel)
    }
}
impl Collection {
    /// Collection name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.inner.dim
    }

    /// Similarity metric.
    pub fn metric(&self) -> Metric {
        self.inner.metric
    }

    /// crc-checks every file of every segment; a failing segment is taken
    /// out of service and its error returned.
    pub fn verify(&self) -> Result<()> {
        let v = self.inner.version.load_full();
        for s in &v.segments {
            s.reader.verify(true)?;
        }
        Ok(())
    }

    /// Live point count (cheap).
    pub fn len(&self) -> u64 {
        self.inner.points.load(Ordering::Relaxed).max(0) as u64
    }

    /// Whether the collection holds no live point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Summary for listings.
    pub fn info(&self) -> CollectionInfo {
        CollectionInfo {
            name: self.inner.name.clone(),
            dim: self.inner.dim,
            metric: self.inner.metric.as_str().to_string(),
            points: self.len(),
            segments: self.inner.version.load().segments.len(),
        }
    }

    /// Monotonic counters for monitoring.
    pub fn counters(&self) -> StorageCounters {
        self.inner.counters.snapshot()
    }

    /// Stops the background thread and syncs the WAL. Later calls on this
    /// handle fail with [`StorageError::Closed`].
    pub fn close(&self) -> Result<()> {
        let r = self.inner.sync_wal();
        self.shutdown();
        r
    }

    pub(crate) fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        {
            let _maint = self.inner.maint.lock();
            self.inner.closed.store(true, Ordering::Release);
        }
        {
            let mut s = self.inner.signal.lock();
            s.shutdown = true;
        }
        self.inner.signal_cv.notify_all();
        if let Some(h) = self.bg.lock().take()
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dir
    }
}
impl Drop for Collection {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opening real collections in a temp directory for the unit tests of the
/// submodules.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod test_support {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use glimpse_index::Metric;

    use super::Collection;
    use crate::types::{Point, StoreOptions};

    /// A fresh collection `t` of dimension `dim` (cosine) under `dir`.
    pub(crate) fn open(dir: &std::path::Path, dim: usize, opts: &StoreOptions) -> Arc<Collection> {
        let cdir = dir.join("t");
        if !cdir.exists() {
            Collection::create_on_disk(&cdir, "t", dim, Metric::Cosine).unwrap();
        }
        Collection::open(&cdir, opts).unwrap()
    }

    /// Point `id` whose vector is a deterministic function of `(id, seed)`.
    pub(crate) fn point(id: usize, seed: u64, dim: usize) -> Point {
        let mut h = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        let vector = (0..dim)
            .map(|_| {
                h ^= h << 13;
                h ^= h >> 7;
                h ^= h << 17;
                (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        Point {
            id: format!("p{id}"),
            vector,
            image_path: None,
            image_bytes: None,
            metadata: BTreeMap::new(),
        }
    }
}
