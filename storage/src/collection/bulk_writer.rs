//! Bulk ingest: stream rows straight into a new segment, then commit it
//! atomically through the manifest (like RocksDB external-file ingestion).
//!
//! Rows bypass the WAL: vectors (and inline images) go to the segment's
//! files as they are pushed; ids and metadata stay in memory until commit
//! (about 100 bytes a row plus metadata). `commit` finishes the segment
//! (fsync, rename), flushes the memtables so that the bulk is newer than
//! every earlier write, hides older versions of its ids, and publishes it
//! in one manifest replace: after a crash either the whole bulk is visible
//! or none of it. The segment's ANN index is built with the trained
//! quantizers of an existing index when the collection has one big enough,
//! else afterwards by the background thread (`StoreOptions::defer_bulk_index`);
//! until then the segment is searched exactly.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::write::validate_point;
use super::{Collection, Inner};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::segment::{MetaEntry, SegmentWriter};
use crate::types::{Point, WriteStats};
use crate::wal::WalOp;

/// Streams points into a new segment; see the module docs.
pub struct BulkWriter {
    inner: Arc<Inner>,
    id: u64,
    writer: Option<SegmentWriter>,
    pushed: usize,
}

impl BulkWriter {
    pub(crate) fn new(inner: Arc<Inner>) -> Result<Self> {
        let (id, writer) = inner.new_segment_writer()?;
        inner.bulk_started();
        Ok(Self {
            inner,
            id,
            writer: Some(writer),
            pushed: 0,
        })
    }

    /// Appends one point (validated like an upsert). Later pushes of the
    /// same id replace earlier ones.
    pub fn push(&mut self, p: Point) -> Result<()> {
        validate_point(self.inner.dim, self.pushed, &p)?;
        let Some(w) = self.writer.as_mut() else {
            return Err(crate::StorageError::InvalidArgument(
                "bulk writer already committed".into(),
            ));
        };
        let metadata = p
            .metadata
            .into_iter()
            .map(|(key, value)| MetaEntry { key, value })
            .collect();
        w.push(
            &p.id,
            &p.vector,
            p.image_path,
            p.image_bytes.as_deref(),
            metadata,
        )?;
        self.pushed += 1;
        Ok(())
    }

    /// Points pushed so far.
    pub fn len(&self) -> usize {
        self.pushed
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// Finishes and atomically publishes the segment. `inserted` counts ids
    /// new to the collection, `replaced` ids whose older version it hides.
    pub fn commit(mut self) -> Result<WriteStats> {
        let Some(w) = self.writer.take() else {
            return Ok(WriteStats::default());
        };
        if w.rows() == 0 {
            return Ok(WriteStats::default());
        }
        let inner = &*self.inner;
        // With deferral: a collection that already has a trained index lends
        // its quantizers, and the segment is indexed here in a fraction of a
        // training's time, so searches never scan it exactly; otherwise the
        // background thread trains its index once loading is quiet.
        let template = if inner.opts.defer_bulk_index {
            inner.index_template(w.rows())
        } else {
            None
        };
        let index_min_rows = if template.is_some() {
            inner.opts.borrowed_index_min_rows
        } else if inner.opts.defer_bulk_index {
            usize::MAX
        } else {
            inner.opts.index_min_rows
        };
        let mut fin = w.finish(
            index_min_rows,
            template.as_ref().map(|t| &t.index),
            inner.opts.compact_rerank,
            // A bulk load runs to its commit: its client waits for the answer.
            glimpse_index::Cancel::NEVER,
        )?;
        let result = {
            let mut man = inner.lock_maintenance();
            (|| {
                // Checked under the lock that `drop_collection`'s shutdown takes: a dropped
                // collection's writer never renames into a directory that a new collection of
                // the same name may own now.
                inner.check_open()?;
                fin.publish()?;
                let _exclusive = inner.exclusive_writes();
                inner.rotate(true);
                inner.flush_frozen(&mut man)?;
                inner.commit_bulk(&mut man, &fin.dir, self.id, &fin.dead_rows)
            })()
        };
        if result.is_err() {
            // Remove the segment unless a manifest naming it reached the disk.
            let listed = Manifest::load(&inner.dir)
                .is_ok_and(|m| m.segments.iter().any(|s| s.id == self.id));
            if !listed {
                let _ = std::fs::remove_dir_all(&fin.dir);
            }
        }
        result
    }
}

impl Drop for BulkWriter {
    fn drop(&mut self) {
        self.inner.bulk_ended();
    }
}

impl Inner {
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
}

impl Collection {
    /// Starts a bulk load into a new segment (see [`BulkWriter`]).
    pub fn bulk_writer(&self) -> Result<BulkWriter> {
        self.inner.check_writable()?;
        BulkWriter::new(self.inner.clone())
    }
}
