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

use std::sync::Arc;

use crate::collection::{Inner, validate_point};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::segment::{MetaEntry, SegmentWriter};
use crate::types::{Point, WriteStats};

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
        let index_min_rows = if inner.opts.defer_bulk_index && template.is_none() {
            usize::MAX
        } else {
            inner.opts.index_min_rows
        };
        let fin = w.finish(
            index_min_rows,
            template.as_ref().map(|t| &t.index),
            // A bulk load runs to its commit: its client waits for the answer.
            glimpse_index::Cancel::NEVER,
        )?;
        let result = {
            let mut man = inner.lock_maintenance();
            (|| {
                inner.check_open()?;
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
