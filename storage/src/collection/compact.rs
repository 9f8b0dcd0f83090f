//! Compaction: what the policy picks, and merging it into one segment.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use glimpse_index::Cancel;

use super::{Collection, Inner, LiveSegment};
use crate::compaction;
use crate::error::{Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::manifest::Manifest;
use crate::segment::SegmentWriter;

impl Inner {
    /// Merges the segments with ids in `pick` into one. Maintenance lock held.
    pub(super) fn compact_segments(&self, man: &mut Manifest, pick: &[u64]) -> Result<()> {
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
            // A merge of small segments that is still below `index_min_rows` borrows a trained
            // index rather than being scanned exactly; a big one trains its own.
            let (min_rows, template) = self.index_plan(w.rows());
            let mut fin = w.finish(
                min_rows,
                template.as_ref().map(|t| &t.index),
                self.opts.compact_rerank,
                Cancel::on(&self.closing),
            )?;
            fin.publish()?;
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
        // Counted before it becomes visible, so a caller that sees the merged segment sees the
        // compaction counted (as index builds are).
        self.counters.record_compaction(start.elapsed());
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
        // The merge and the new segment's index build freed hundreds of MiB.
        crate::heap::release_free_heap();
        Ok(())
    }

    /// What the compaction policy would merge now (`force`: everything).
    pub(super) fn compaction_pick(&self, force: bool) -> Option<Vec<u64>> {
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
    pub(super) fn maybe_compact(&self, man: &mut Manifest, force: bool) -> Result<bool> {
        match self.compaction_pick(force) {
            Some(ids) => {
                self.compact_segments(man, &ids)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl Collection {
    /// Flushes, then merges all segments into one, dropping deleted and
    /// shadowed rows.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let mut man = self.inner.maint.lock();
        self.inner.maybe_compact(&mut man, true).map(|_| ())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::collection::test_support::{open, point};
    use crate::types::{CompactionOptions, StoreOptions};

    const DIM: usize = 8;

    fn opts(enabled: bool) -> StoreOptions {
        StoreOptions {
            memtable_flush_rows: usize::MAX,
            // An open bulk writer holds the background merge back this long.
            bulk_compaction_quiet_max: std::time::Duration::from_secs(3600),
            compaction: CompactionOptions {
                enabled,
                min_merge: 3,
                ..CompactionOptions::default()
            },
            ..StoreOptions::default()
        }
    }

    /// Flushes segments `from..from + n` of 20 rows each (distinct ids).
    fn segments(c: &crate::Collection, from: usize, n: usize) {
        for s in from..from + n {
            c.upsert((s * 20..(s + 1) * 20).map(|i| point(i, 1, DIM)).collect())
                .unwrap();
            c.flush().unwrap();
        }
    }

    #[test]
    fn the_policy_picks_a_full_tier_and_nothing_below_it() {
        let tmp = tempfile::tempdir().unwrap();
        let c = open(tmp.path(), DIM, &opts(true));
        // Keeps the background thread from merging what the policy picks.
        let _loading = c.bulk_writer().unwrap();
        segments(&c, 0, 2);
        assert_eq!(c.inner.compaction_pick(false), None, "two of three");
        segments(&c, 2, 1);
        let mut pick = c.inner.compaction_pick(false).unwrap();
        pick.sort_unstable();
        let mut ids: Vec<u64> = c
            .inner
            .version
            .load()
            .segments
            .iter()
            .map(|s| s.reader.id)
            .collect();
        ids.sort_unstable();
        assert_eq!(pick, ids);
    }

    #[test]
    fn disabled_compaction_picks_nothing_unless_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let c = open(tmp.path(), DIM, &opts(false));
        segments(&c, 0, 4);
        assert_eq!(c.inner.compaction_pick(false), None);
        assert_eq!(c.inner.compaction_pick(true).map(|p| p.len()), Some(4));
    }

    #[test]
    fn merging_drops_deleted_rows_and_keeps_the_live_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let c = open(tmp.path(), DIM, &opts(false));
        segments(&c, 0, 3);
        c.delete(&["p0".to_string(), "p21".to_string()]).unwrap();
        c.compact().unwrap();
        let v = c.inner.version.load();
        assert_eq!(v.segments.len(), 1);
        assert_eq!(v.segments[0].reader.rows, 58);
        assert_eq!(v.segments[0].tombstones.count(), 0);
        assert_eq!(c.len(), 58);
        assert!(c.get("p21").is_none());
        assert_eq!(c.get("p59").unwrap().vector, point(59, 1, DIM).vector);
    }

    #[test]
    fn a_merge_below_the_training_threshold_borrows_a_trained_index() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            memtable_flush_rows: usize::MAX,
            defer_bulk_index: false,
            index_min_rows: 2_000,
            borrowed_index_min_rows: 100,
            compaction: CompactionOptions {
                enabled: false,
                ..CompactionOptions::default()
            },
            ..StoreOptions::default()
        };
        let dim = 16;
        let c = open(tmp.path(), dim, &opts);
        let mut w = c.bulk_writer().unwrap();
        for i in 0..3_000 {
            w.push(point(i, 1, dim)).unwrap();
        }
        w.commit().unwrap();
        // Three flushes of 60 rows: each below the borrowing threshold, so scanned exactly.
        for s in 0..3 {
            c.upsert(
                (10_000 + s * 60..10_000 + (s + 1) * 60)
                    .map(|i| point(i, 1, dim))
                    .collect(),
            )
            .unwrap();
            c.flush().unwrap();
        }
        let small: Vec<u64> = {
            let v = c.inner.version.load();
            assert!(v.segments[1..].iter().all(|s| !s.reader.has_index()));
            v.segments[1..].iter().map(|s| s.reader.id).collect()
        };
        {
            let mut man = c.inner.lock_maintenance();
            c.inner.compact_segments(&mut man, &small).unwrap();
        }
        let v = c.inner.version.load();
        assert_eq!(v.segments.len(), 2);
        let merged = &v.segments[1].reader;
        assert_eq!(merged.rows, 180);
        assert!(
            merged.has_index(),
            "180 rows merged, below index_min_rows: borrowed"
        );
        assert_eq!(
            c.get("p10100").unwrap().vector,
            point(10_100, 1, dim).vector
        );
    }
}
