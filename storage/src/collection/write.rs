//! The write path: validation, the group-commit leader's log-sync-apply,
//! memtable rotation and WAL syncs; `upsert`, `delete`, `sync`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use super::{Collection, Inner, Version};
use crate::error::{Result, StorageError};
use crate::memtable::{MemEntry, Memtable};
use crate::types::{
    Durability, MAX_ID_BYTES, MAX_META_BYTES_PER_POINT, MAX_META_KEY_BYTES, MetaValue, Point,
    WriteStats,
};
use crate::wal::{MAX_RECORD_BODY, WalOp};

/// Refuses a vector whose squared norm overflows `f32` (see [`MAX_SQUARED_NORM`]).
pub(crate) fn check_norm(v: &[f32]) -> std::result::Result<(), String> {
    let sq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if sq > crate::types::MAX_SQUARED_NORM {
        return Err(format!(
            "vector norm {:.3e} is too large: scores would overflow f32 (squared norm at most {:.3e})",
            sq.sqrt(),
            crate::types::MAX_SQUARED_NORM
        ));
    }
    Ok(())
}

pub(super) fn short_id(id: &str) -> String {
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
    check_norm(&p.vector).map_err(bad)?;
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
    let mut meta_bytes = 0usize;
    let mut largest: Option<(&str, usize)> = None;
    for (k, v) in &p.metadata {
        let size = k.len()
            + match v {
                MetaValue::Str(s) => s.len(),
                _ => 8,
            };
        meta_bytes += size;
        if largest.is_none_or(|(_, l)| size > l) {
            largest = Some((k, size));
        }
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
    }
    if meta_bytes > MAX_META_BYTES_PER_POINT {
        let (key, size) = largest.unwrap_or(("", 0));
        return Err(bad(format!(
            "metadata of {meta_bytes} bytes is over the limit of {MAX_META_BYTES_PER_POINT} per point \
             (largest: {:?}, {size} bytes)",
            short_id(key)
        )));
    }
    Ok(())
}

pub(super) fn validate_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!(
            "id must be 1..={MAX_ID_BYTES} bytes, got {}",
            id.len()
        ));
    }
    Ok(())
}

/// Copies an error for the other writers of a failed group.
pub(super) fn replicate(e: &StorageError) -> StorageError {
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
pub(super) fn exists(active: &Memtable, v: &Version, id: &str) -> bool {
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
pub(super) fn apply_op(
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
    /// The leader's work for one group: log, sync, apply.
    pub(super) fn commit_group(&self, ops: Vec<WalOp>) -> Vec<Result<WriteStats>> {
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

    pub(super) fn write(&self, op: WalOp) -> Result<WriteStats> {
        self.check_writable()?;
        self.queue.submit(op, |ops| self.commit_group(ops))
    }

    pub(super) fn sync_wal(&self) -> Result<()> {
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
}

impl Collection {
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

    /// Makes every acknowledged write durable (fsyncs the WAL).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.sync_wal()
    }
}
