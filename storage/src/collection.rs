//! A collection: the write path (WAL + memtable under group commit),
//! snapshot reads over memtables and segments, flush, compaction and the
//! background maintenance thread.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use glimpse_index::{Cancel, Metric};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::bulk::BulkWriter;
use crate::compaction;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::group_commit::GroupCommit;
use crate::manifest::{MANIFEST_FILE, Manifest, ManifestSegment};
use crate::memtable::{MemEntry, Memtable};
use crate::metrics::Counters;
use crate::segment::{self, MetaEntry, SegmentReader, SegmentWriter, Tombstones};
use crate::types::{
    CollectionInfo, CollectionStats, Durability, Hit, MAX_ID_BYTES, MAX_K, MAX_META_KEY_BYTES,
    MetaValue, Point, SearchRequest, SearchTimings, StorageCounters, StoreOptions, VerifyPolicy,
    WriteStats,
};
use crate::wal::{self, MAX_RECORD_BODY, WalOp, WalWriter};

pub(crate) const WAL_DIR: &str = "wal";

/// Where a deferred index build writes before renaming to the index file.
const DEFERRED_INDEX_TMP: &str = "index.ivfpq.tmp";

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

fn meta_entries(m: &BTreeMap<String, MetaValue>) -> Vec<MetaEntry> {
    m.iter()
        .map(|(k, v)| MetaEntry {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn short_id(id: &str) -> String {
    id.chars().take(64).collect()
}

/// Checks one point against the collection's rules.
pub(crate) fn validate_point(dim: usize, index: usize, p: &Point) -> Result<()> {
    let bad = |reason: String| StorageError::InvalidPoint {
        index,
        id: short_id(&p.id),
        reason,
    };
    validate_id(&p.id).map_err(bad)?;
    if p.vector.len() != dim {
        return Err(bad(format!(
            "vector has {} values, the collection has dimension {dim}",
            p.vector.len()
        )));
    }
    if let Some(i) = p.vector.iter().position(|x| !x.is_finite()) {
        return Err(bad(format!("vector value #{i} is not finite")));
    }
    if let Some(path) = &p.image_path
        && path.len() > 4096
    {
        return Err(bad("image_path longer than 4096 bytes".into()));
    }
    if let Some(b) = &p.image_bytes
        && b.len() > 64 << 20
    {
        return Err(bad("inline image larger than 64 MiB".into()));
    }
    for (k, v) in &p.metadata {
        if k.is_empty() || k.len() > MAX_META_KEY_BYTES {
            return Err(bad(format!(
                "metadata key {:?} must be 1..={MAX_META_KEY_BYTES} bytes",
                short_id(k)
            )));
        }
        if let MetaValue::Float(f) = v
            && !f.is_finite()
        {
            return Err(bad(format!("metadata value of {k:?} is not finite")));
        }
        if let MetaValue::Str(s) = v
            && s.len() > 1 << 20
        {
            return Err(bad(format!("metadata value of {k:?} is longer than 1 MiB")));
        }
    }
    Ok(())
}

fn validate_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!(
            "id must be 1..={MAX_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    Ok(())
}

/// Copies an error for the other writers of a failed group.
fn replicate(e: &StorageError) -> StorageError {
    match e {
        StorageError::Io { path, source } => StorageError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StorageError::Poisoned { name, reason } => StorageError::Poisoned {
            name: name.clone(),
            reason: reason.clone(),
        },
        StorageError::Closed(n) => StorageError::Closed(n.clone()),
        other => StorageError::InvalidArgument(other.to_string()),
    }
}

/// Whether `id` currently has a live version.
fn exists(active: &Memtable, v: &Version, id: &str) -> bool {
    for m in std::iter::once(active).chain(v.frozen.iter().map(|m| &**m)) {
        match m.entry(id) {
            Some(MemEntry::Put { .. }) => return true,
            Some(MemEntry::Deleted) => return false,
            None => {}
        }
    }
    v.segments.iter().any(|s| s.live_row(id).is_some())
}

/// Applies one logged operation to the active memtable, keeping the live
/// point count in `points`.
fn apply_op(
    active: &mut Memtable,
    v: &Version,
    seq: u64,
    op: WalOp,
    points: &AtomicI64,
) -> WriteStats {
    let mut stats = WriteStats::default();
    match op {
        WalOp::Upsert(batch) => {
            for p in batch {
                if exists(active, v, &p.id) {
                    stats.replaced += 1;
                } else {
                    stats.inserted += 1;
                    points.fetch_add(1, Ordering::Relaxed);
                }
                active.upsert(seq, p);
            }
        }
        WalOp::Delete(ids) => {
            for id in ids {
                if exists(active, v, &id) {
                    stats.replaced += 1;
                    points.fetch_sub(1, Ordering::Relaxed);
                }
                active.delete(seq, &id);
            }
        }
    }
    active.note_seq(seq);
    stats
}

impl Inner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed(self.name.clone()));
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

    /// A bulk writer opened.
    pub(crate) fn bulk_started(&self) {
        self.bulk_open.fetch_add(1, Ordering::AcqRel);
    }

    /// A bulk writer committed or was dropped.
    pub(crate) fn bulk_ended(&self) {
        *self.bulk_last.lock() = Some(Instant::now());
        self.bulk_open.fetch_sub(1, Ordering::AcqRel);
        self.wake_background();
    }

    /// How much longer deferred work must wait for bulk loading to calm
    /// down (zero when it may start now).
    fn bulk_quiet_left(&self) -> Duration {
        if self.bulk_open.load(Ordering::Acquire) > 0 {
            return self.opts.bulk_quiet.max(Duration::from_millis(1));
        }
        match *self.bulk_last.lock() {
            Some(t) => self.opts.bulk_quiet.saturating_sub(t.elapsed()),
            None => Duration::ZERO,
        }
    }

    /// How much longer deferred work (compaction, deferred index builds)
    /// must wait: until bulk loading has been quiet for `bulk_quiet`, but
    /// no more than `bulk_quiet_max` (index builds) or
    /// `bulk_compaction_quiet_max` (compaction) after the work was first held
    /// back, so that a steady stream of loads cannot leave data unindexed or
    /// unmerged for long. The shorter of the two, zero when nothing is due.
    fn deferred_wait(&self) -> Duration {
        let quiet_left = self.bulk_quiet_left();
        let index = Self::held_wait(
            &self.deferred_since,
            quiet_left,
            self.index_pending(),
            self.opts.bulk_quiet_max,
        );
        let merge = Self::held_wait(
            &self.compaction_since,
            quiet_left,
            self.compaction_pick(false).is_some(),
            self.opts.bulk_compaction_quiet_max,
        );
        match (index, merge) {
            (Some(a), Some(b)) => a.min(b),
            (Some(w), None) | (None, Some(w)) => w,
            (None, None) => Duration::ZERO,
        }
    }

    /// Wait left for one kind of deferred work, `None` when it is not `due`:
    /// the quiet time left, at most `bound` after it was first held back
    /// (`since`).
    fn held_wait(
        since: &Mutex<Option<Instant>>,
        quiet_left: Duration,
        due: bool,
        bound: Duration,
    ) -> Option<Duration> {
        let mut since = since.lock();
        if !due {
            *since = None;
            return None;
        }
        if quiet_left.is_zero() {
            *since = None;
            return Some(Duration::ZERO);
        }
        let held = since.get_or_insert_with(Instant::now).elapsed();
        Some(quiet_left.min(bound.saturating_sub(held)))
    }

    /// Whether a due compaction may run now (loading quiet, or held back
    /// for `bulk_compaction_quiet_max`).
    fn compaction_may_run(&self) -> bool {
        Self::held_wait(
            &self.compaction_since,
            self.bulk_quiet_left(),
            self.compaction_pick(false).is_some(),
            self.opts.bulk_compaction_quiet_max,
        )
        .is_some_and(|w| w.is_zero())
    }

    pub(crate) fn wake_background(&self) {
        let mut s = self.signal.lock();
        s.work = true;
        drop(s);
        self.signal_cv.notify_all();
    }

    /// The leader's work for one group: log, sync, apply.
    fn commit_group(&self, ops: Vec<WalOp>) -> Vec<Result<WriteStats>> {
        let fail_all = |e: StorageError, n: usize| {
            let mut out = Vec::with_capacity(n);
            for _ in 1..n {
                out.push(Err(replicate(&e)));
            }
            out.push(Err(e));
            self.counters
                .write_errors
                .fetch_add(n as u64, Ordering::Relaxed);
            out
        };
        let n = ops.len();
        if let Err(e) = self.check_open() {
            return fail_all(e, n);
        }
        if let Some(reason) = self.poisoned.lock().clone() {
            return fail_all(
                StorageError::Poisoned {
                    name: self.name.clone(),
                    reason,
                },
                n,
            );
        }
        let bodies: Vec<Vec<u8>> = ops.iter().map(WalOp::encode).collect();
        let first_seq = {
            let mut wal = self.wal.lock();
            let first = match wal.append(&bodies) {
                Ok((first, bytes)) => {
                    self.counters
                        .wal_bytes_written
                        .fetch_add(bytes, Ordering::Relaxed);
                    self.counters
                        .wal_records_written
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.counters.wal_groups.fetch_add(1, Ordering::Relaxed);
                    first
                }
                Err((e, fatal)) => {
                    if fatal {
                        self.poison(format!("could not roll back a failed WAL append: {e}"));
                    }
                    return fail_all(e, n);
                }
            };
            let must_sync = match self.opts.durability {
                Durability::EveryCommit => true,
                Durability::Periodic(every) => self.last_sync.lock().elapsed() >= every,
            };
            if must_sync {
                match wal.sync() {
                    Ok(Some(d)) => {
                        self.counters.record_fsync(d);
                        *self.last_sync.lock() = Instant::now();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // After a failed fsync the page cache state is unknown:
                        // stop accepting writes rather than acknowledge on top of it.
                        self.poison(format!("WAL fsync failed: {e}"));
                        return fail_all(e, n);
                    }
                }
            }
            first
        };
        let mut out = Vec::with_capacity(n);
        let rotate = {
            let mut active = self.active.write();
            let v = self.version.load();
            for (i, op) in ops.into_iter().enumerate() {
                out.push(Ok(apply_op(
                    &mut active,
                    &v,
                    first_seq + i as u64,
                    op,
                    &self.points,
                )));
            }
            active.rows() >= self.opts.memtable_flush_rows
                || active.bytes() >= self.opts.memtable_flush_bytes
        };
        if rotate {
            self.rotate(false);
        }
        out
    }

    /// Freezes the active memtable (if non-empty, or over the thresholds
    /// unless `force`) and asks the background thread to flush it.
    pub(crate) fn rotate(&self, force: bool) -> bool {
        let mut active = self.active.write();
        if active.is_empty() {
            return false;
        }
        if !force
            && active.rows() < self.opts.memtable_flush_rows
            && active.bytes() < self.opts.memtable_flush_bytes
        {
            return false;
        }
        let _vl = self.version_lock.lock();
        let frozen = Arc::new(std::mem::replace(&mut *active, Memtable::new(self.dim)));
        let cur = self.version.load();
        let mut list = Vec::with_capacity(cur.frozen.len() + 1);
        list.push(frozen);
        list.extend(cur.frozen.iter().cloned());
        self.version.store(Arc::new(Version {
            frozen: list,
            segments: cur.segments.clone(),
        }));
        drop(active);
        self.wake_background();
        true
    }

    fn write(&self, op: WalOp) -> Result<WriteStats> {
        self.check_open()?;
        self.queue.submit(op, |ops| self.commit_group(ops))
    }

    /// Writes new tombstone generations for rows of `segments` returned by
    /// `rows_to_hide`; returns the updated list and files to delete later.
    fn hide_rows(
        &self,
        segments: &[Arc<LiveSegment>],
        mut rows_to_hide: impl FnMut(&LiveSegment) -> Vec<u32>,
    ) -> Result<(Vec<Arc<LiveSegment>>, Vec<PathBuf>, u64)> {
        let mut out = Vec::with_capacity(segments.len());
        let mut obsolete = Vec::new();
        let mut hidden = 0u64;
        for seg in segments {
            let rows = rows_to_hide(seg);
            let mut t: Option<Tombstones> = None;
            for r in rows {
                if !seg.tombstones.contains(r) {
                    let tt = t.get_or_insert_with(|| (*seg.tombstones).clone());
                    if tt.insert(r) {
                        hidden += 1;
                    }
                }
            }
            match t {
                Some(t) => {
                    let generation = seg.generation + 1;
                    t.write(&Tombstones::path(&seg.reader.dir, generation))?;
                    fsync_dir(&seg.reader.dir)?;
                    if seg.generation > 0 {
                        obsolete.push(Tombstones::path(&seg.reader.dir, seg.generation));
                    }
                    out.push(Arc::new(LiveSegment {
                        reader: seg.reader.clone(),
                        tombstones: Arc::new(t),
                        generation,
                    }));
                }
                None => out.push(seg.clone()),
            }
        }
        Ok((out, obsolete, hidden))
    }

    fn manifest_segments(segments: &[Arc<LiveSegment>]) -> Vec<ManifestSegment> {
        segments
            .iter()
            .map(|s| ManifestSegment {
                id: s.reader.id,
                rows: s.reader.rows,
                tombstone_gen: s.generation,
                index: s.reader.deferred_index(),
            })
            .collect()
    }

    /// Makes `segments` (and `checkpoint`) durable in a new manifest, then
    /// publishes them, dropping `flushed` from the frozen list.
    fn publish(
        &self,
        man: &mut Manifest,
        segments: Vec<Arc<LiveSegment>>,
        checkpoint: u64,
        flushed: Option<&Arc<Memtable>>,
    ) -> Result<()> {
        let mut next = man.clone();
        next.segments = Self::manifest_segments(&segments);
        next.checkpoint_seq = next.checkpoint_seq.max(checkpoint);
        next.next_segment_id = self.next_segment_id.load(Ordering::Acquire);
        next.store(&self.dir)?;
        self.checkpoint
            .store(next.checkpoint_seq, Ordering::Release);
        *man = next;
        let _vl = self.version_lock.lock();
        let cur = self.version.load();
        let frozen = cur
            .frozen
            .iter()
            .filter(|m| flushed.is_none_or(|f| !Arc::ptr_eq(m, f)))
            .cloned()
            .collect();
        self.version.store(Arc::new(Version { frozen, segments }));
        Ok(())
    }

    fn open_new_segment(&self, dir: &Path, id: u64, dead_rows: &[u32]) -> Result<Arc<LiveSegment>> {
        let reader = SegmentReader::open(
            dir,
            id,
            self.dim,
            self.metric,
            VerifyPolicy {
                max_bytes_at_open: 0,
                background: false,
            },
            None,
        )?;
        let mut t = Tombstones::empty(reader.rows);
        for &r in dead_rows {
            t.insert(r);
        }
        let generation = if t.count() > 0 {
            t.write(&Tombstones::path(dir, 1))?;
            fsync_dir(dir)?;
            1
        } else {
            0
        };
        Ok(Arc::new(LiveSegment {
            reader: Arc::new(reader),
            tombstones: Arc::new(t),
            generation,
        }))
    }

    fn remove_files(&self, files: &[PathBuf]) {
        for f in files {
            if let Err(e) = fs::remove_file(f) {
                tracing::warn!(path = %f.display(), error = %e, "could not remove obsolete file");
            }
        }
    }

    /// Flushes the oldest frozen memtable into a segment. Maintenance lock held.
    fn flush_one(&self, man: &mut Manifest, mem: &Arc<Memtable>) -> Result<()> {
        let start = Instant::now();
        let v = self.version.load_full();
        let new_seg = if mem.live_count() > 0 {
            let id = self.alloc_segment_id();
            let mut w = SegmentWriter::create(&self.dir, id, self.dim, self.metric)?;
            for row in mem.live_rows() {
                let r = mem.row(row);
                w.push(
                    &r.id,
                    mem.vector(row),
                    r.image_path.clone(),
                    r.image_bytes.as_deref(),
                    meta_entries(&r.metadata),
                )?;
            }
            let fin = w.finish(self.opts.index_min_rows, None, Cancel::NEVER)?;
            match self.open_new_segment(&fin.dir, id, &fin.dead_rows) {
                Ok(s) => Some(s),
                Err(e) => {
                    let _ = fs::remove_dir_all(&fin.dir);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let hid = self.hide_rows(&v.segments, |seg| {
            mem.touched_ids()
                .filter_map(|id| seg.reader.find_row(id))
                .collect()
        });
        let (mut segments, obsolete, _) = match hid {
            Ok(x) => x,
            Err(e) => {
                if let Some(s) = &new_seg {
                    let _ = fs::remove_dir_all(&s.reader.dir);
                }
                return Err(e);
            }
        };
        if let Some(s) = new_seg.clone() {
            segments.push(s);
        }
        if let Err(e) = self.publish(man, segments, mem.max_seq, Some(mem)) {
            if let Some(s) = &new_seg {
                let _ = fs::remove_dir_all(&s.reader.dir);
            }
            return Err(e);
        }
        self.remove_files(&obsolete);
        let cp = man.checkpoint_seq;
        self.wal.lock().remove_obsolete(cp)?;
        self.counters.record_flush(start.elapsed());
        // The memtable's rows and the segment's index build were just freed.
        crate::heap::release_free_heap();
        Ok(())
    }

    /// Flushes every frozen memtable, oldest first. Maintenance lock held.
    pub(crate) fn flush_frozen(&self, man: &mut Manifest) -> Result<()> {
        loop {
            let v = self.version.load_full();
            let Some(oldest) = v.frozen.last().cloned() else {
                return Ok(());
            };
            self.flush_one(man, &oldest)?;
        }
    }

    /// Merges the segments with ids in `pick` into one. Maintenance lock held.
    fn compact_segments(&self, man: &mut Manifest, pick: &[u64]) -> Result<()> {
        let start = Instant::now();
        let v = self.version.load_full();
        let sources: Vec<&Arc<LiveSegment>> = v
            .segments
            .iter()
            .filter(|s| pick.contains(&s.reader.id))
            .collect();
        if sources.is_empty() {
            return Ok(());
        }
        let live: u64 = sources.iter().map(|s| s.live_rows()).sum();
        let new_seg = if live > 0 {
            let id = self.alloc_segment_id();
            let mut w = SegmentWriter::create(&self.dir, id, self.dim, self.metric)?;
            for s in &sources {
                let r = &s.reader;
                for row in 0..r.rows {
                    if row % 65_536 == 0 && self.closing.load(Ordering::Relaxed) {
                        // The writer's temp directory goes with it; the sources stay.
                        return Err(StorageError::Interrupted("compaction".into()));
                    }
                    if s.tombstones.contains(row) {
                        continue;
                    }
                    w.push(
                        r.id_at(row),
                        r.vector(row),
                        r.image_path(row),
                        r.image_bytes(row),
                        r.metadata_entries(row),
                    )?;
                }
            }
            let fin = w.finish(self.opts.index_min_rows, None, Cancel::on(&self.closing))?;
            Some(self.open_new_segment(&fin.dir, id, &fin.dead_rows)?)
        } else {
            None
        };
        let mut segments: Vec<Arc<LiveSegment>> = v
            .segments
            .iter()
            .filter(|s| !pick.contains(&s.reader.id))
            .cloned()
            .collect();
        if let Some(s) = new_seg.clone() {
            segments.push(s);
        }
        if let Err(e) = self.publish(man, segments, 0, None) {
            if let Some(s) = &new_seg {
                let _ = fs::remove_dir_all(&s.reader.dir);
            }
            return Err(e);
        }
        for s in sources {
            if let Err(e) = fs::remove_dir_all(&s.reader.dir) {
                tracing::warn!(path = %s.reader.dir.display(), error = %e, "could not remove compacted segment");
            }
        }
        let _ = fsync_dir(&self.dir);
        self.counters.record_compaction(start.elapsed());
        // The merge and the new segment's index build freed hundreds of MiB.
        crate::heap::release_free_heap();
        Ok(())
    }

    /// What the compaction policy would merge now (`force`: everything).
    fn compaction_pick(&self, force: bool) -> Option<Vec<u64>> {
        if !force && !self.opts.compaction.enabled {
            return None;
        }
        let v = self.version.load_full();
        let shapes: Vec<compaction::SegmentShape> = v
            .segments
            .iter()
            .filter(|s| !s.reader.is_quarantined())
            .map(|s| compaction::SegmentShape {
                id: s.reader.id,
                rows: s.reader.rows as u64,
                live: s.live_rows(),
            })
            .collect();
        if force {
            compaction::pick_all(&shapes)
        } else {
            compaction::pick(&shapes, &self.opts.compaction)
        }
    }

    /// Runs the compaction policy once; returns whether it merged anything.
    fn maybe_compact(&self, man: &mut Manifest, force: bool) -> Result<bool> {
        match self.compaction_pick(force) {
            Some(ids) => {
                self.compact_segments(man, &ids)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Commits a finished bulk segment. Called with the maintenance lock
    /// and write exclusivity held, after the memtables were flushed.
    pub(crate) fn commit_bulk(
        &self,
        man: &mut Manifest,
        dir: &Path,
        id: u64,
        dead_rows: &[u32],
    ) -> Result<WriteStats> {
        let v = self.version.load_full();
        let seg = self.open_new_segment(dir, id, dead_rows)?;
        let (mut segments, obsolete, hidden) = self.hide_rows(&v.segments, |old| {
            // Merge-join of the two sorted id tables.
            let mut rows = Vec::new();
            let mut a = seg.reader.sorted_ids().peekable();
            let mut b = old.reader.sorted_ids().peekable();
            while let (Some(&(x, _)), Some(&(y, ry))) = (a.peek(), b.peek()) {
                match x.cmp(y) {
                    std::cmp::Ordering::Less => {
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        rows.push(ry);
                        a.next();
                        b.next();
                    }
                }
            }
            rows
        })?;
        let distinct = seg.reader.meta.distinct_ids;
        segments.push(seg);
        self.publish(man, segments, 0, None)?;
        self.remove_files(&obsolete);
        self.points
            .fetch_add(distinct as i64 - hidden as i64, Ordering::Relaxed);
        self.counters.bulk_commits.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bulk_rows
            .fetch_add(distinct, Ordering::Relaxed);
        Ok(WriteStats {
            inserted: (distinct - hidden) as usize,
            replaced: hidden as usize,
        })
    }

    pub(crate) fn lock_maintenance(&self) -> parking_lot::MutexGuard<'_, Manifest> {
        self.maint.lock()
    }

    pub(crate) fn exclusive_writes(
        &self,
    ) -> crate::group_commit::Exclusive<'_, WalOp, Result<WriteStats>> {
        self.queue.exclusive()
    }

    pub(crate) fn new_segment_writer(&self) -> Result<(u64, SegmentWriter)> {
        let id = self.alloc_segment_id();
        Ok((
            id,
            SegmentWriter::create(&self.dir, id, self.dim, self.metric)?,
        ))
    }

    fn sync_wal(&self) -> Result<()> {
        let mut wal = self.wal.lock();
        match wal.sync() {
            Ok(Some(d)) => {
                self.counters.record_fsync(d);
                *self.last_sync.lock() = Instant::now();
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                self.poison(format!("WAL fsync failed: {e}"));
                Err(e)
            }
        }
    }

    /// One round of background work.
    fn background_round(&self) {
        if let Durability::Periodic(every) = self.opts.durability
            && self.last_sync.lock().elapsed() >= every
            && let Err(e) = self.sync_wal()
        {
            tracing::error!(collection = %self.name, error = %e, "periodic WAL sync failed");
        }
        let has_frozen = !self.version.load().frozen.is_empty();
        if has_frozen {
            let mut man = self.maint.lock();
            if let Err(e) = self.flush_frozen(&mut man) {
                tracing::error!(collection = %self.name, error = %e, "flush failed; will retry");
                return;
            }
        }
        // Merging and indexing wait until bulk loading is quiet (within a
        // bound): they would compete with it for the cores, and merging first
        // indexes the shards of a load once. A segment that can borrow trained
        // quantizers is indexed at once: one assignment pass, no k-means.
        if !self.deferred_wait().is_zero() {
            if let Some(seg) = self.borrowable_pending() {
                self.report_build(self.build_index_of(&seg).map_err(|e| (seg, e)));
            }
            return;
        }
        // Index builds run at the shorter bound, outside the maintenance lock; a compaction
        // would stall every bulk commit while it merges and trains, so it waits longer.
        if self.opts.compaction.enabled && self.compaction_may_run() {
            *self.compaction_since.lock() = None;
            let mut man = self.maint.lock();
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            match self.maybe_compact(&mut man, false) {
                Err(StorageError::Interrupted(_)) => {
                    tracing::info!(collection = %self.name, "compaction interrupted by shutdown; it runs again after the next open");
                    return;
                }
                Err(e) => tracing::error!(collection = %self.name, error = %e, "compaction failed"),
                Ok(_) => {}
            }
        }
        *self.deferred_since.lock() = None;
        self.report_build(self.build_deferred_index());
    }

    /// Logs the outcome of a deferred build; after a build, asks for
    /// another round.
    fn report_build(&self, r: std::result::Result<bool, (Arc<LiveSegment>, StorageError)>) {
        match r {
            // One build per round, so flushes and WAL syncs are not held up by a queue of them.
            Ok(true) => self.wake_background(),
            Ok(false) => {}
            Err((segment, e)) => {
                // Not retried in a loop (each try costs seconds of CPU on every core): the
                // segment stays searchable exactly, and the build runs again after a restart.
                segment.reader.refuse_index();
                tracing::error!(collection = %self.name, segment = segment.reader.id, error = %e,
                    "deferred index build failed; the segment is searched exactly until the next restart");
            }
        }
    }

    /// An index whose trained quantizers can index a new bulk segment of
    /// `rows` rows without training: the largest live index, if it covers
    /// at least half as many rows (a much larger load deserves its own
    /// training, with more lists).
    pub(crate) fn index_template(&self, rows: usize) -> Option<Arc<crate::segment::IndexSlot>> {
        let v = self.version.load();
        v.segments
            .iter()
            .filter(|s| !s.reader.is_quarantined() && s.live_rows() > 0)
            .filter_map(|s| Some((s.reader.rows, s.reader.index_slot()?)))
            .filter(|(r, _)| *r as usize * 2 >= rows)
            .max_by_key(|(r, _)| *r)
            .map(|(_, slot)| slot)
    }

    /// A segment waiting for a deferred index build that a trained index
    /// can take without training (see [`Inner::index_template`]).
    fn borrowable_pending(&self) -> Option<Arc<LiveSegment>> {
        let min = self.opts.index_min_rows;
        let v = self.version.load();
        v.segments
            .iter()
            .filter(|s| s.awaits_index(min))
            .find(|s| self.index_template(s.reader.rows as usize).is_some())
            .cloned()
    }

    /// Whether a segment waits for a deferred index build.
    fn index_pending(&self) -> bool {
        let min = self.opts.index_min_rows;
        self.version
            .load()
            .segments
            .iter()
            .any(|s| s.awaits_index(min))
    }

    /// Builds the index of one segment committed without it, outside the
    /// maintenance lock (seconds of CPU), then, under the lock and only if
    /// the segment is still live: writes the file (temp, fsync, rename),
    /// attaches it for searches and records it in a new manifest. A crash
    /// before that manifest leaves the segment unindexed, and it is built
    /// again after the restart. Returns whether it built one.
    fn build_deferred_index(&self) -> std::result::Result<bool, (Arc<LiveSegment>, StorageError)> {
        let min = self.opts.index_min_rows;
        let Some(seg) = self
            .version
            .load()
            .segments
            .iter()
            .find(|s| s.awaits_index(min))
            .cloned()
        else {
            return Ok(false);
        };
        self.build_index_of(&seg).map_err(|e| (seg, e))
    }

    /// [`build_deferred_index`](Self::build_deferred_index) for `seg`.
    fn build_index_of(&self, seg: &Arc<LiveSegment>) -> Result<bool> {
        let start = Instant::now();
        let reader = &seg.reader;
        let path = reader.dir.join(crate::ann::INDEX_FILE);
        let cancel = Cancel::on(&self.closing);
        // Quantizers trained for a segment of comparable size (an earlier shard of the same
        // load, typically) index this one in one assignment pass instead of seconds of k-means.
        let built = match self.index_template(reader.rows as usize) {
            Some(t) => crate::ann::build_like(&path, &t.index, reader.vectors(), cancel).map(Some),
            None => crate::ann::build(&path, reader.vectors(), self.dim, self.metric, cancel),
        };
        let Some((kind, bytes)) = (match built {
            Err(StorageError::Interrupted(_)) => {
                // Not refused: the segment stays pending and is built after the next open.
                tracing::info!(collection = %self.name, segment = reader.id, "deferred index build interrupted by shutdown");
                return Ok(false);
            }
            other => other?,
        }) else {
            reader.refuse_index();
            return Ok(false);
        };
        // Saved even when the collection is closing: `shutdown` joins this
        // thread before anything else happens, and the work is done.
        let mut man = self.maint.lock();
        let v = self.version.load_full();
        if !v.segments.iter().any(|s| Arc::ptr_eq(&s.reader, reader)) {
            // Merged away while the index was being built.
            return Ok(false);
        }
        let tmp = reader.dir.join(DEFERRED_INDEX_TMP);
        crate::fsutil::write_file_synced(&tmp, &bytes)?;
        fs::rename(&tmp, &path).at(&path)?;
        fsync_dir(&reader.dir)?;
        let file = crate::manifest::IndexFileRef {
            kind: kind.clone(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        };
        drop(bytes);
        let index =
            crate::ann::SegmentIndex::open(&path, &kind, self.dim, self.metric, reader.rows)?;
        // Counted before it becomes visible, so a caller that sees it served sees it counted.
        self.counters.record_index_build(start.elapsed());
        reader.attach_index(index, file);
        self.publish(&mut man, v.segments.clone(), 0, None)?;
        drop(man);
        tracing::info!(collection = %self.name, segment = reader.id, rows = reader.rows, seconds = start.elapsed().as_secs_f64(), "deferred index built");
        crate::heap::release_free_heap();
        Ok(true)
    }

    fn background_verify(&self) {
        if !self.opts.verify.background {
            return;
        }
        let v = self.version.load_full();
        for s in &v.segments {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            if s.reader.needs_verification()
                && let Err(e) = s.reader.verify(false)
            {
                tracing::error!(collection = %self.name, error = %e, "segment failed verification; it is no longer served");
            }
        }
    }
}

fn background_loop(inner: Arc<Inner>) {
    inner.background_verify();
    let tick = match inner.opts.durability {
        Durability::Periodic(d) => d.clamp(Duration::from_millis(1), Duration::from_secs(1)),
        Durability::EveryCommit => Duration::from_secs(1),
    };
    loop {
        // Deferred work waiting for bulk loads to calm down wakes up as soon as they have.
        let deferred = inner.deferred_wait();
        let wait = if deferred.is_zero() {
            tick
        } else {
            tick.min(deferred + Duration::from_millis(1))
        };
        {
            let mut s = inner.signal.lock();
            if !s.work && !s.shutdown {
                inner.signal_cv.wait_for(&mut s, wait);
            }
            if s.shutdown {
                return;
            }
            s.work = false;
        }
        inner.background_round();
    }
}

/// Removes leftovers of interrupted work: temp segments, segment
/// directories not in the manifest, unreferenced tombstone generations.
fn clean_directory(dir: &Path, man: &Manifest) -> Result<()> {
    let mut changed = false;
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let live =
            segment::parse_dir_name(&name).and_then(|id| man.segments.iter().find(|s| s.id == id));
        if name.starts_with("tmp-seg-") || (name.starts_with("seg-") && live.is_none()) {
            tracing::info!(path = %path.display(), "removing unfinished or obsolete segment");
            fs::remove_dir_all(&path).at(&path)?;
            changed = true;
        } else if name == format!("{MANIFEST_FILE}.tmp") {
            fs::remove_file(&path).at(&path)?;
            changed = true;
        } else if let Some(s) = live {
            for f in fs::read_dir(&path).at(&path)? {
                let f = f.at(&path)?;
                let fname = f.file_name().to_string_lossy().into_owned();
                let stale_tombstones =
                    fname.starts_with("del-") && fname != Tombstones::file_name(s.tombstone_gen);
                if stale_tombstones || fname == DEFERRED_INDEX_TMP {
                    fs::remove_file(f.path()).at(f.path())?;
                }
            }
        }
    }
    if changed {
        fsync_dir(dir)?;
    }
    Ok(())
}

impl Collection {
    /// Creates the on-disk skeleton of a new collection at `dir` (which must
    /// not exist): built in a temp directory and renamed into place.
    pub(crate) fn create_on_disk(dir: &Path, name: &str, dim: usize, metric: Metric) -> Result<()> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        let tmp = parent.join(format!(".tmp-{name}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        fs::create_dir_all(tmp.join(WAL_DIR)).at(&tmp)?;
        Manifest {
            name: name.to_string(),
            dim,
            metric: metric.as_str().to_string(),
            checkpoint_seq: 0,
            next_segment_id: 1,
            segments: Vec::new(),
        }
        .store(&tmp)?;
        fsync_dir(&tmp.join(WAL_DIR))?;
        fsync_dir(&tmp)?;
        fs::rename(&tmp, dir).at(dir)?;
        fsync_dir(parent)
    }

    /// Opens the collection at `dir`: manifest, segments, WAL replay.
    pub(crate) fn open(dir: &Path, opts: &StoreOptions) -> Result<Arc<Collection>> {
        let mut man = Manifest::load(dir)?;
        let mpath = dir.join(MANIFEST_FILE);
        let metric = Metric::parse(&man.metric).ok_or_else(|| {
            StorageError::corrupt(&mpath, 16, format!("unknown metric {:?}", man.metric))
        })?;
        let dim = man.dim;
        clean_directory(dir, &man)?;
        let mut segments = Vec::with_capacity(man.segments.len());
        let mut dropped = false;
        for ms in &man.segments {
            let sdir = dir.join(segment::dir_name(ms.id));
            let opened =
                SegmentReader::open(&sdir, ms.id, dim, metric, opts.verify, ms.index.as_ref())
                    .and_then(|r| {
                        let t = if ms.tombstone_gen == 0 {
                            Tombstones::empty(r.rows)
                        } else {
                            Tombstones::read(&Tombstones::path(&sdir, ms.tombstone_gen), r.rows)?
                        };
                        Ok(LiveSegment {
                            reader: Arc::new(r),
                            tombstones: Arc::new(t),
                            generation: ms.tombstone_gen,
                        })
                    });
            match opened {
                Ok(s) => segments.push(Arc::new(s)),
                Err(e) if opts.salvage => {
                    tracing::error!(error = %e, "salvage: dropping corrupt segment {}", ms.id);
                    let q = dir.join(format!("quarantine-{}", segment::dir_name(ms.id)));
                    let _ = fs::rename(&sdir, &q);
                    dropped = true;
                }
                Err(e) => return Err(e),
            }
        }
        if dropped {
            man.segments = Inner::manifest_segments(&segments);
            man.store(dir)?;
        }
        let points = AtomicI64::new(segments.iter().map(|s| s.live_rows() as i64).sum());
        let next_segment_id = man
            .next_segment_id
            .max(man.segments.iter().map(|s| s.id + 1).max().unwrap_or(1));
        let checkpoint = man.checkpoint_seq;
        let version = Version {
            frozen: Vec::new(),
            segments,
        };
        let wal_dir = dir.join(WAL_DIR);
        if !wal_dir.exists() {
            fs::create_dir(&wal_dir).at(&wal_dir)?;
            fsync_dir(dir)?;
        }
        let mut active = Memtable::new(dim);
        let started = Instant::now();
        let outcome = wal::replay(&wal_dir, checkpoint, opts.salvage, |seq, op| {
            apply_op(&mut active, &version, seq, op, &points);
            Ok(())
        })?;
        if !active.is_empty() {
            tracing::info!(
                collection = %man.name, ids = active.ids_touched(), elapsed_ms = started.elapsed().as_millis() as u64,
                "replayed WAL tail"
            );
        }
        let wal = WalWriter::open(&wal_dir, outcome, checkpoint, opts.wal_segment_bytes)?;
        let inner = Arc::new(Inner {
            name: man.name.clone(),
            dim,
            metric,
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            active: RwLock::new(active),
            version: ArcSwap::from_pointee(version),
            version_lock: Mutex::new(()),
            maint: Mutex::new(man),
            queue: GroupCommit::new(),
            wal: Mutex::new(wal),
            last_sync: Mutex::new(Instant::now()),
            poisoned: Mutex::new(None),
            closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            next_segment_id: AtomicU64::new(next_segment_id),
            checkpoint: AtomicU64::new(checkpoint),
            points,
            counters: Counters::default(),
            signal: Mutex::new(Signal::default()),
            signal_cv: Condvar::new(),
            bulk_open: AtomicUsize::new(0),
            bulk_last: Mutex::new(None),
            deferred_since: Mutex::new(None),
            compaction_since: Mutex::new(None),
        });
        inner.rotate(false);
        Collection::start(inner)
    }

    fn start(inner: Arc<Inner>) -> Result<Arc<Collection>> {
        let bg_inner = inner.clone();
        let handle = std::thread::Builder::new()
            .name(format!("glimpse-bg-{}", inner.name))
            .spawn(move || background_loop(bg_inner))
            .at(&inner.dir)?;
        Ok(Arc::new(Collection {
            inner,
            bg: Mutex::new(Some(handle)),
        }))
    }
}

/// Where a search candidate came from.
#[derive(Clone, Copy)]
enum Source {
    Mem(usize),
    Seg(usize),
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

    /// Inserts or replaces `points`. The whole batch is validated first and
    /// rejected on any bad point; when this returns `Ok` the batch is in the
    /// WAL and durable per the store's [`Durability`], and visible to reads.
    /// Duplicate ids in one batch: the last one wins.
    pub fn upsert(&self, points: Vec<Point>) -> Result<WriteStats> {
        let mut bytes = 0usize;
        for (i, p) in points.iter().enumerate() {
            validate_point(self.inner.dim, i, p)?;
            bytes += p.id.len()
                + p.vector.len() * 4
                + p.image_path.as_ref().map_or(0, |s| s.len())
                + p.image_bytes.as_ref().map_or(0, |b| b.len())
                + p.metadata
                    .iter()
                    .map(|(k, v)| {
                        k.len()
                            + 16
                            + if let MetaValue::Str(s) = v {
                                s.len()
                            } else {
                                0
                            }
                    })
                    .sum::<usize>()
                + 32;
        }
        if bytes > MAX_RECORD_BODY {
            return Err(StorageError::InvalidArgument(format!(
                "batch of about {bytes} bytes exceeds the {MAX_RECORD_BODY}-byte WAL record limit; split it or use bulk_writer"
            )));
        }
        if points.is_empty() {
            return Ok(WriteStats::default());
        }
        self.inner.write(WalOp::Upsert(points))
    }

    /// Deletes `ids`; returns how many of them existed.
    pub fn delete(&self, ids: &[String]) -> Result<usize> {
        for (i, id) in ids.iter().enumerate() {
            validate_id(id).map_err(|reason| StorageError::InvalidPoint {
                index: i,
                id: short_id(id),
                reason,
            })?;
        }
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self.inner.write(WalOp::Delete(ids.to_vec()))?.replaced)
    }

    /// The newest version of `id` (exact stored vector, image bytes included).
    pub fn get(&self, id: &str) -> Option<Point> {
        self.inner.check_open().ok()?;
        let active = self.inner.active.read();
        let v = self.inner.version.load();
        for m in std::iter::once(&*active).chain(v.frozen.iter().map(|m| &**m)) {
            match m.entry(id) {
                Some(MemEntry::Put { row }) => return Some(m.point(row)),
                Some(MemEntry::Deleted) => return None,
                None => {}
            }
        }
        drop(active);
        v.segments
            .iter()
            .find_map(|s| s.live_row(id).map(|row| s.reader.point(row)))
    }

    /// Every live id, sorted. Memtables are consulted newest first so that a delete or
    /// re-insert there hides the older state in segments; O(points) time and memory, meant
    /// for reconciliation jobs, not for the query path.
    pub fn ids(&self) -> Vec<String> {
        if self.inner.check_open().is_err() {
            return Vec::new();
        }
        // One consistent view: the active memtable's lock is held while the version is read,
        // as in `get`, so a flush cannot move rows between the two halves of the walk.
        let active = self.inner.active.read();
        let v = self.inner.version.load();
        let mut decided: HashMap<&str, bool> = HashMap::new();
        for m in std::iter::once(&*active).chain(v.frozen.iter().map(|m| &**m)) {
            for (id, live) in m.id_states() {
                decided.entry(id).or_insert(live);
            }
        }
        let mut out: Vec<String> = decided
            .iter()
            .filter(|(_, live)| **live)
            .map(|(id, _)| id.to_string())
            .collect();
        for s in &v.segments {
            if s.reader.is_quarantined() {
                continue;
            }
            for (id, row) in s.reader.sorted_ids() {
                if !s.tombstones.contains(row) && !decided.contains_key(id) {
                    out.push(id.to_string());
                }
            }
        }
        drop(active);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The inline image bytes of `id`, if it exists and has some.
    pub fn image_bytes(&self, id: &str) -> Option<Vec<u8>> {
        self.get(id).and_then(|p| p.image_bytes)
    }

    /// Top-`k` points by the collection metric, best first, across the
    /// memtables and every segment, newest version of each id only.
    pub fn search(&self, query: &[f32], req: &SearchRequest) -> Result<Vec<Hit>> {
        self.search_timed(query, req).map(|(hits, _)| hits)
    }

    /// [`search`](Self::search), also saying where the time went.
    pub fn search_timed(
        &self,
        query: &[f32],
        req: &SearchRequest,
    ) -> Result<(Vec<Hit>, SearchTimings)> {
        let mut timings = SearchTimings::default();
        let inner = &*self.inner;
        inner.check_open()?;
        if query.len() != inner.dim {
            return Err(StorageError::InvalidArgument(format!(
                "query has {} values, the collection has dimension {}",
                query.len(),
                inner.dim
            )));
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(StorageError::InvalidArgument(
                "query contains a non-finite value".into(),
            ));
        }
        if req.k == 0 || req.k > MAX_K {
            return Err(StorageError::InvalidArgument(format!(
                "k must be 1..={MAX_K}, got {}",
                req.k
            )));
        }
        let k = req.k;
        let filter = req.filter.as_ref();
        let active = inner.active.read();
        let v = inner.version.load_full();
        let mems: Vec<&Memtable> = std::iter::once(&*active)
            .chain(v.frozen.iter().map(|m| &**m))
            .collect();
        let mut cands: Vec<(f32, Source, u32)> = Vec::new();
        for (i, m) in mems.iter().enumerate() {
            if m.is_empty() {
                continue;
            }
            let newer = &mems[..i];
            let shadowed = |id: &str| newer.iter().any(|n| n.contains(id));
            let started = Instant::now();
            for n in m.search(inner.metric, query, k, filter, &shadowed) {
                cands.push((n.score, Source::Mem(i), n.row));
            }
            timings.exact_scan += started.elapsed();
            timings.exact_rows += m.rows() as u64;
        }
        let any_mem = mems.iter().any(|m| !m.is_empty());
        for (si, seg) in v.segments.iter().enumerate() {
            // A segment whose rows were all replaced (say by re-loading the same shard) waits
            // for compaction to drop it; there is nothing to find in it meanwhile.
            if seg.reader.is_quarantined() || seg.live_rows() == 0 {
                continue;
            }
            let reader = &*seg.reader;
            let tomb = &*seg.tombstones;
            let pred = |row: u32| {
                !tomb.contains(row)
                    && (!any_mem || {
                        let id = reader.id_at(row);
                        !mems.iter().any(|m| m.contains(id))
                    })
                    && filter.is_none_or(|f| f.eval(reader.record(row)))
            };
            for n in reader.search(
                inner.metric,
                query,
                k,
                req.nprobe,
                req.refine,
                &pred,
                &mut timings,
            ) {
                cands.push((n.score, Source::Seg(si), n.row));
            }
        }
        let metric = inner.metric;
        cands.sort_by(|a, b| metric.cmp_best_first(a.0, b.0));
        cands.truncate(k);
        let hits = cands
            .into_iter()
            .map(|(score, src, row)| match src {
                Source::Mem(i) => {
                    let r = mems[i].row(row);
                    Hit {
                        id: r.id.clone(),
                        score,
                        image_path: r.image_path.clone(),
                        metadata: r.metadata.clone(),
                    }
                }
                Source::Seg(si) => {
                    let r = &v.segments[si].reader;
                    Hit {
                        id: r.id_at(row).to_string(),
                        score,
                        image_path: r.image_path(row),
                        metadata: r.metadata(row),
                    }
                }
            })
            .collect();
        Ok((hits, timings))
    }

    /// Starts a bulk load into a new segment (see [`BulkWriter`]).
    pub fn bulk_writer(&self) -> Result<BulkWriter> {
        self.inner.check_open()?;
        BulkWriter::new(self.inner.clone())
    }

    /// Freezes the memtable and writes every frozen memtable to segments;
    /// returns when they are durable in the manifest.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.rotate(true);
        let mut man = self.inner.maint.lock();
        self.inner.flush_frozen(&mut man)
    }

    /// Flushes, then merges all segments into one, dropping deleted and
    /// shadowed rows.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let mut man = self.inner.maint.lock();
        self.inner.maybe_compact(&mut man, true).map(|_| ())
    }

    /// Makes every acknowledged write durable (fsyncs the WAL).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.sync_wal()
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

    /// Detailed statistics (walks segment directories for byte counts).
    pub fn stats(&self) -> CollectionStats {
        let inner = &*self.inner;
        let memtable_rows = inner.active.read().rows();
        let v = inner.version.load_full();
        let (wal_bytes, last_seq) = {
            let w = inner.wal.lock();
            (w.total_bytes(), w.next_seq().saturating_sub(1))
        };
        CollectionStats {
            points: self.len(),
            segments: v.segments.len(),
            indexed_segments: v.segments.iter().filter(|s| s.reader.has_index()).count(),
            unindexed_rows: self.unindexed_rows(),
            segment_bytes: v.segments.iter().map(|s| s.reader.disk_bytes()).sum(),
            segment_rows: v.segments.iter().map(|s| s.reader.rows as u64).sum(),
            deleted_rows: v.segments.iter().map(|s| s.tombstones.count() as u64).sum(),
            wal_bytes,
            memtable_rows,
            frozen_memtables: v.frozen.len(),
            checkpoint_seq: inner.checkpoint.load(Ordering::Acquire),
            last_seq,
            quarantined_segments: v
                .segments
                .iter()
                .filter(|s| s.reader.is_quarantined())
                .count(),
        }
    }

    /// Rows of segments waiting for a deferred index build (searched exactly
    /// meanwhile); cheap, unlike [`stats`](Self::stats), which walks the
    /// segment directories.
    pub fn unindexed_rows(&self) -> u64 {
        let min = self.inner.opts.index_min_rows;
        self.inner
            .version
            .load()
            .segments
            .iter()
            .filter(|s| s.awaits_index(min))
            .map(|s| s.reader.rows as u64)
            .sum()
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
