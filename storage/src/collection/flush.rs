//! Flush: frozen memtables, oldest first, become segments.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::Instant;

use glimpse_index::Cancel;

use super::{Collection, Inner};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::segment::{MetaEntry, SegmentWriter};
use crate::types::MetaValue;

pub(super) fn meta_entries(m: &BTreeMap<String, MetaValue>) -> Vec<MetaEntry> {
    m.iter()
        .map(|(k, v)| MetaEntry {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

impl Inner {
    /// Flushes the oldest frozen memtable into a segment. Maintenance lock held.
    pub(super) fn flush_one(&self, man: &mut Manifest, mem: &Arc<Memtable>) -> Result<()> {
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
            // A trained index lends its quantizers to a flush big enough to gain from one, so
            // writes under steady load do not pile up as exactly scanned segments.
            let (min_rows, template) = self.index_plan(w.rows());
            let mut fin = w.finish(
                min_rows,
                template.as_ref().map(|t| &t.index),
                self.opts.compact_rerank,
                Cancel::NEVER,
            )?;
            fin.publish()?;
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
}

impl Collection {
    /// Freezes the memtable and writes every frozen memtable to segments;
    /// returns when they are durable in the manifest.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.rotate(true);
        let mut man = self.inner.maint.lock();
        self.inner.flush_frozen(&mut man)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::collection::test_support::{open, point};
    use crate::manifest::Manifest;
    use crate::types::StoreOptions;

    const DIM: usize = 8;

    fn opts() -> StoreOptions {
        StoreOptions {
            // Rotation only when the test asks for it.
            memtable_flush_rows: usize::MAX,
            wal_segment_bytes: 4 << 10,
            ..StoreOptions::default()
        }
    }

    fn wal_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("t").join(super::super::WAL_DIR))
            .unwrap()
            .count()
    }

    #[test]
    fn flush_publishes_the_segment_and_checkpoint_before_dropping_the_wal() {
        let tmp = tempfile::tempdir().unwrap();
        let c = open(tmp.path(), DIM, &opts());
        for i in 0..200 {
            c.upsert(vec![point(i, 1, DIM)]).unwrap();
        }
        let last_seq = c.stats().last_seq;
        let wal_before = wal_files(tmp.path());
        assert!(wal_before > 1, "small WAL files: several of them");
        c.flush().unwrap();

        // The manifest on disk names the new segment and covers every logged write...
        let man = Manifest::load(&tmp.path().join("t")).unwrap();
        assert_eq!(man.segments.len(), 1);
        assert_eq!(man.segments[0].rows, 200);
        assert_eq!(man.checkpoint_seq, last_seq);
        // ...the published version holds it and no frozen memtable...
        let v = c.inner.version.load();
        assert!(v.frozen.is_empty());
        assert_eq!(v.segments.len(), 1);
        // ...and only then were the WAL files behind the checkpoint removed.
        assert!(wal_files(tmp.path()) < wal_before);
        assert_eq!(c.len(), 200);
        assert_eq!(c.get("p7").unwrap().vector, point(7, 1, DIM).vector);
    }

    #[test]
    fn flushing_a_replacement_tombstones_the_older_row_in_a_new_generation() {
        let tmp = tempfile::tempdir().unwrap();
        let c = open(tmp.path(), DIM, &opts());
        c.upsert((0..10).map(|i| point(i, 1, DIM)).collect())
            .unwrap();
        c.flush().unwrap();
        c.upsert(vec![point(3, 2, DIM)]).unwrap();
        c.flush().unwrap();
        let man = Manifest::load(&tmp.path().join("t")).unwrap();
        assert_eq!(man.segments.len(), 2);
        assert_eq!(man.segments[0].tombstone_gen, 1, "the old p3 is hidden");
        assert_eq!(man.segments[1].tombstone_gen, 0);
        assert_eq!(c.len(), 10);
        assert_eq!(c.get("p3").unwrap().vector, point(3, 2, DIM).vector);
        // The reopened collection agrees.
        drop(c);
        let c = open(tmp.path(), DIM, &opts());
        assert_eq!(c.len(), 10);
        assert_eq!(c.get("p3").unwrap().vector, point(3, 2, DIM).vector);
    }

    #[test]
    fn a_small_flush_borrows_a_trained_index_instead_of_being_scanned_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            memtable_flush_rows: usize::MAX,
            defer_bulk_index: false,
            index_min_rows: 2_000,
            borrowed_index_min_rows: 300,
            ..StoreOptions::default()
        };
        let dim = 16;
        let c = open(tmp.path(), dim, &opts);
        let mut w = c.bulk_writer().unwrap();
        for i in 0..3_000 {
            w.push(point(i, 1, dim)).unwrap();
        }
        w.commit().unwrap();
        c.upsert((10_000..10_500).map(|i| point(i, 1, dim)).collect())
            .unwrap();
        c.flush().unwrap();
        let v = c.inner.version.load();
        assert_eq!(v.segments.len(), 2);
        let small = &v.segments[1].reader;
        assert_eq!(small.rows, 500);
        assert!(
            small.has_index(),
            "500 rows, below index_min_rows, borrowed the trained index"
        );
        // Found through its index.
        let q = point(10_123, 1, dim).vector;
        let hits = c
            .search(
                &q,
                &crate::types::SearchRequest {
                    k: 1,
                    nprobe: None,
                    refine: None,
                    recall_target: None,
                    filter: None,
                    rescore: Default::default(),
                },
            )
            .unwrap();
        assert_eq!(hits[0].id, "p10123");
    }
}
