//! Changing the published segment set: new tombstone generations, a new
//! manifest, then one `Version` swap. Flush, compaction, bulk commits and
//! index builds all end here.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Inner, LiveSegment, Version};
use crate::error::Result;
use crate::fsutil::fsync_dir;
use crate::manifest::{Manifest, ManifestSegment};
use crate::memtable::Memtable;
use crate::segment::{SegmentReader, Tombstones};
use crate::types::VerifyPolicy;

impl Inner {
    /// Writes new tombstone generations for rows of `segments` returned by
    /// `rows_to_hide`; returns the updated list and files to delete later.
    pub(super) fn hide_rows(
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

    pub(super) fn manifest_segments(segments: &[Arc<LiveSegment>]) -> Vec<ManifestSegment> {
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
    pub(super) fn publish(
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

    pub(super) fn open_new_segment(
        &self,
        dir: &Path,
        id: u64,
        dead_rows: &[u32],
    ) -> Result<Arc<LiveSegment>> {
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

    pub(super) fn remove_files(&self, files: &[PathBuf]) {
        for f in files {
            if let Err(e) = fs::remove_file(f) {
                tracing::warn!(path = %f.display(), error = %e, "could not remove obsolete file");
            }
        }
    }
}
