//! Creating a collection on disk, and opening one: clean-up of
//! interrupted work, segment opening, WAL replay, the background thread.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::time::Instant;

use arc_swap::ArcSwap;
use glimpse_index::Metric;
use parking_lot::{Condvar, Mutex, RwLock};

use super::background::background_loop;
use super::index_build::DEFERRED_INDEX_TMP;
use super::write::apply_op;
use super::{Collection, Inner, LiveSegment, Signal, Version, WAL_DIR};
use crate::counters::Counters;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::group_commit::GroupCommit;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::memtable::Memtable;
use crate::segment::{self, SegmentReader, Tombstones};
use crate::store::MAX_DIM;
use crate::types::StoreOptions;
use crate::wal::{self, WalWriter};

/// Removes leftovers of interrupted work: temp segments, segment
/// directories not in the manifest, unreferenced tombstone generations.
pub(super) fn clean_directory(dir: &Path, man: &Manifest) -> Result<()> {
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
        // Collections are created with a dimension in 1..=MAX_DIM: anything else is damage,
        // refused here rather than met later as empty or unallocatable vectors.
        if dim == 0 || dim > MAX_DIM {
            return Err(StorageError::corrupt(
                &mpath,
                16,
                format!("dimension {dim} outside 1..={MAX_DIM}"),
            ));
        }
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
        let outcome = wal::replay(&wal_dir, checkpoint, dim, opts.salvage, |seq, op| {
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

    pub(super) fn start(inner: Arc<Inner>) -> Result<Arc<Collection>> {
        if inner.opts.read_only {
            // Nothing to flush, merge or index: the writer does that, and `follow` swaps in
            // its results.
            return Ok(Arc::new(Collection {
                inner,
                bg: Mutex::new(None),
            }));
        }
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
