//! A collection's committed state as files (what a writer copies to object
//! storage), and following a manifest written elsewhere (what a replica or a
//! restore applies): segment directories fetched into a staging directory
//! are moved into place, the local manifest is replaced, and one `Version`
//! swap publishes them while searches on the old one finish undisturbed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Collection, LiveSegment, Version};
use crate::ann;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::manifest::{Manifest, ManifestSegment};
use crate::segment::{self, SegmentReader, Tombstones};

/// One file of a committed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedFile {
    /// File name inside the segment directory.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
}

/// One live segment of a committed state and the files it is made of.
#[derive(Debug, Clone)]
pub struct CommittedSegment {
    /// Segment id.
    pub id: u64,
    /// The segment directory (read the files from here; they are immutable,
    /// but a later compaction may delete them, so a reader must expect
    /// `NotFound` and take a newer state).
    pub dir: PathBuf,
    /// Every file a reader needs: footer, data files, the index, the
    /// current tombstone generation.
    pub files: Vec<CommittedFile>,
}

/// A collection as its last manifest describes it: what is durable in
/// segments (the WAL tail and the memtables are not part of it).
#[derive(Debug, Clone)]
pub struct CommittedState {
    /// The manifest.
    pub manifest: Manifest,
    /// Its segments, in manifest order.
    pub segments: Vec<CommittedSegment>,
}

/// The files of `seg` that a reader of `ms` needs.
fn segment_files(reader: &SegmentReader, ms: &ManifestSegment) -> Result<Vec<CommittedFile>> {
    let mut names = vec![segment::META_FILE.to_string()];
    names.extend(reader.meta.files.iter().map(|f| f.name.clone()));
    if ms.index.is_some() {
        names.push(ann::INDEX_FILE.to_string());
    }
    if ms.tombstone_gen > 0 {
        names.push(Tombstones::file_name(ms.tombstone_gen));
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let path = reader.dir.join(&name);
            let len = fs::metadata(&path).at(&path)?.len();
            Ok(CommittedFile { name, len })
        })
        .collect()
}

impl Collection {
    /// The state of the last manifest, taken under the maintenance lock so
    /// that it is one consistent version.
    pub fn committed_state(&self) -> Result<CommittedState> {
        let inner = &*self.inner;
        inner.check_open()?;
        let man = inner.maint.lock();
        let v = inner.version.load_full();
        let mut segments = Vec::with_capacity(man.segments.len());
        for ms in &man.segments {
            let live = v
                .segments
                .iter()
                .find(|s| s.reader.id == ms.id)
                .ok_or_else(|| {
                    StorageError::InvalidArgument(format!(
                        "segment {} of the manifest is not open",
                        ms.id
                    ))
                })?;
            segments.push(CommittedSegment {
                id: ms.id,
                dir: live.reader.dir.clone(),
                files: segment_files(&live.reader, ms)?,
            });
        }
        Ok(CommittedState {
            manifest: man.clone(),
            segments,
        })
    }

    /// Rows written but not yet in a segment (active and frozen memtables):
    /// what a flush would make durable in the manifest. Cheap.
    pub fn unflushed_rows(&self) -> u64 {
        let active = self.inner.active.read().rows() as u64;
        let frozen: u64 = self
            .inner
            .version
            .load()
            .frozen
            .iter()
            .map(|m| m.rows() as u64)
            .sum();
        active + frozen
    }

    /// Makes `next` (a manifest written by another process for this
    /// collection) the served version. `incoming/seg-<id>/` holds the files
    /// of its segments that are not here yet (whole new segments, new
    /// tombstone generations, deferred index files); they are moved in.
    /// Returns the paths that no longer serve anything (segment directories
    /// and files of older tombstone generations): the caller deletes them
    /// once searches still running on the old version have had time to end.
    ///
    /// Only on a read-only store (a replica; a restore follows read-only,
    /// then reopens the store for writing, which numbers its WAL on from the
    /// followed checkpoint).
    pub fn follow(&self, next: &Manifest, incoming: &Path) -> Result<Vec<PathBuf>> {
        let inner = &*self.inner;
        inner.check_open()?;
        if next.dim != inner.dim || next.metric != inner.metric.as_str() {
            return Err(StorageError::InvalidArgument(format!(
                "manifest of {:?} has dim {} and metric {}, this collection {} and {}",
                next.name, next.dim, next.metric, inner.dim, inner.metric
            )));
        }
        // A writable collection would go on numbering its WAL from its own checkpoint, and
        // replay after the next open would skip its records as already in segments.
        if !inner.opts.read_only {
            return Err(StorageError::InvalidArgument(format!(
                "collection {:?} takes writes; only a read-only store follows another manifest",
                inner.name
            )));
        }
        let mut man = inner.maint.lock();
        let cur = inner.version.load_full();
        let mut segments = Vec::with_capacity(next.segments.len());
        let mut moved_in = false;
        for ms in &next.segments {
            let name = segment::dir_name(ms.id);
            let sdir = inner.dir.join(&name);
            let src = incoming.join(&name);
            let served = cur.segments.iter().any(|s| s.reader.id == ms.id);
            if src.is_dir() && !served && sdir.exists() {
                // Left by a segment of that id that stopped being served (its deletion was
                // pending): the incoming one replaces it whole.
                fs::remove_dir_all(&sdir).at(&sdir)?;
            }
            if src.is_dir() {
                if sdir.exists() {
                    for f in fs::read_dir(&src).at(&src)? {
                        let f = f.at(&src)?;
                        let to = sdir.join(f.file_name());
                        fs::rename(f.path(), &to).at(&to)?;
                    }
                    fsync_dir(&sdir)?;
                    fs::remove_dir(&src).at(&src)?;
                } else {
                    fs::rename(&src, &sdir).at(&sdir)?;
                    moved_in = true;
                }
            }
            let old = cur.segments.iter().find(|s| s.reader.id == ms.id);
            let reader = match old {
                Some(s) if s.reader.deferred_index() == ms.index => s.reader.clone(),
                _ => Arc::new(SegmentReader::open(
                    &sdir,
                    ms.id,
                    inner.dim,
                    inner.metric,
                    inner.opts.verify,
                    ms.index.as_ref(),
                )?),
            };
            let tombstones = match old {
                Some(s) if s.generation == ms.tombstone_gen => s.tombstones.clone(),
                _ if ms.tombstone_gen == 0 => Arc::new(Tombstones::empty(reader.rows)),
                _ => Arc::new(Tombstones::read(
                    &Tombstones::path(&sdir, ms.tombstone_gen),
                    reader.rows,
                )?),
            };
            segments.push(Arc::new(LiveSegment {
                reader,
                tombstones,
                generation: ms.tombstone_gen,
            }));
        }
        if moved_in {
            fsync_dir(&inner.dir)?;
        }
        let mut local = next.clone();
        local.name = inner.name.clone();
        local.store(&inner.dir)?;
        let mut obsolete = Vec::new();
        for s in &cur.segments {
            match next.segments.iter().find(|m| m.id == s.reader.id) {
                None => obsolete.push(s.reader.dir.clone()),
                Some(m) if s.generation > 0 && m.tombstone_gen != s.generation => {
                    obsolete.push(Tombstones::path(&s.reader.dir, s.generation));
                }
                Some(_) => {}
            }
        }
        inner
            .next_segment_id
            .fetch_max(local.next_segment_id, Ordering::AcqRel);
        inner
            .checkpoint
            .store(local.checkpoint_seq, Ordering::Release);
        let points: u64 = segments.iter().map(|s| s.live_rows()).sum();
        {
            let _vl = inner.version_lock.lock();
            inner.version.store(Arc::new(Version {
                frozen: Vec::new(),
                segments,
            }));
            inner.points.store(points as i64, Ordering::Relaxed);
        }
        *man = local;
        Ok(obsolete)
    }
}
