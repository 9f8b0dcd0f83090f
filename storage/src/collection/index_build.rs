//! Deferred ANN index builds for segments committed without one, with
//! training borrowed from a trained index when one fits.

use std::fs;
use std::sync::Arc;
use std::time::Instant;

use glimpse_index::Cancel;

use super::{Inner, LiveSegment};
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;

/// Where a deferred index build writes before renaming to the index file.
pub(super) const DEFERRED_INDEX_TMP: &str = "index.ivfpq.tmp";

impl Inner {
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

    /// How a segment of `rows` rows written by a flush or a merge gets its index: trained on
    /// its own when it has `index_min_rows`; else with the quantizers of a trained index when
    /// it has `borrowed_index_min_rows` and the collection has one (an assignment pass, no
    /// k-means); else none (searched exactly). Returns the row threshold to pass to
    /// `SegmentWriter::finish` and the template.
    pub(super) fn index_plan(
        &self,
        rows: usize,
    ) -> (usize, Option<Arc<crate::segment::IndexSlot>>) {
        let own = self.opts.index_min_rows;
        let borrowed = self.opts.borrowed_index_min_rows;
        if rows >= own || rows < borrowed {
            return (own, None);
        }
        match self.index_template(rows) {
            Some(t) => (borrowed, Some(t)),
            None => (own, None),
        }
    }

    /// A segment waiting for a deferred index build that a trained index
    /// can take without training (see [`Inner::index_template`]).
    pub(super) fn borrowable_pending(&self) -> Option<Arc<LiveSegment>> {
        let min = self.opts.index_min_rows;
        let v = self.version.load();
        v.segments
            .iter()
            .filter(|s| s.awaits_index(min))
            .find(|s| self.index_template(s.reader.rows as usize).is_some())
            .cloned()
    }

    /// Whether a segment waits for a deferred index build.
    pub(super) fn index_pending(&self) -> bool {
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
    pub(super) fn build_deferred_index(
        &self,
    ) -> std::result::Result<bool, (Arc<LiveSegment>, StorageError)> {
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
    pub(super) fn build_index_of(&self, seg: &Arc<LiveSegment>) -> Result<bool> {
        let start = Instant::now();
        let reader = &seg.reader;
        let path = reader.dir.join(crate::ann::INDEX_FILE);
        let cancel = Cancel::on(&self.closing);
        let compact = self.opts.compact_rerank;
        // Quantizers trained for a segment of comparable size (an earlier shard of the same
        // load, typically) index this one in one assignment pass instead of seconds of k-means.
        let built = match self.index_template(reader.rows as usize) {
            Some(t) => {
                crate::ann::build_like(&path, &t.index, reader.vectors(), compact, cancel).map(Some)
            }
            None => crate::ann::build(
                &path,
                reader.vectors(),
                self.dim,
                self.metric,
                compact,
                cancel,
            ),
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
}
