//! The store: a directory of collections.
//!
//! ```text
//! <root>/LOCK                         flock'ed by the owning process
//! <root>/collections/<name>/MANIFEST
//! <root>/collections/<name>/wal/<first_seq>.wal
//! <root>/collections/<name>/seg-<id>/...
//! ```
//! Creating a collection builds it under `.tmp-<name>` and renames it;
//! dropping renames it to `.drop-<name>-<nanos>` (durable) before deleting.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use glimpse_index::Metric;
use parking_lot::RwLock;

use crate::collection::Collection;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::types::{CollectionInfo, StorageCounters, StoreOptions};

const COLLECTIONS_DIR: &str = "collections";
/// Largest supported vector dimension.
pub const MAX_DIM: usize = 65_536;

/// Whether `name` is a valid collection name: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_collection_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An open store. `Send + Sync`; share it in an `Arc`.
pub struct Store {
    root: PathBuf,
    opts: StoreOptions,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store at `dir`: takes its lock file,
    /// removes leftovers of interrupted creates/drops, opens every
    /// collection (replaying WALs).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store> {
        fs::create_dir_all(dir.join(COLLECTIONS_DIR)).at(dir)?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        // SAFETY: plain flock(2) on a file descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StorageError::Locked(dir.to_path_buf()));
        }
        let cdir = dir.join(COLLECTIONS_DIR);
        let mut map = BTreeMap::new();
        let mut entries: Vec<_> = fs::read_dir(&cdir)
            .at(&cdir)?
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        entries.sort();
        for (name, path) in entries {
            if name.starts_with(".tmp-") || name.starts_with(".drop-") {
                fs::remove_dir_all(&path).at(&path)?;
                continue;
            }
            if !is_valid_collection_name(&name) || !path.is_dir() {
                tracing::warn!(path = %path.display(), "ignoring unexpected entry in collections directory");
                continue;
            }
            let c = Collection::open(&path, &opts)?;
            map.insert(name, c);
        }
        fsync_dir(&cdir)?;
        Ok(Store {
            root: dir.to_path_buf(),
            opts,
            collections: RwLock::new(map),
            _lock: lock,
        })
    }

    /// The store's root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Creates a collection, or returns the existing one if it has the same
    /// dimension and metric.
    pub fn create_collection(
        &self,
        name: &str,
        dim: usize,
        metric: Metric,
    ) -> Result<Arc<Collection>> {
        if !is_valid_collection_name(name) {
            return Err(StorageError::InvalidName(name.to_string()));
        }
        if dim == 0 || dim > MAX_DIM {
            return Err(StorageError::InvalidArgument(format!(
                "dimension must be 1..={MAX_DIM}, got {dim}"
            )));
        }
        let mut map = self.collections.write();
        if let Some(c) = map.get(name) {
            if c.dim() == dim && c.metric() == metric {
                return Ok(c.clone());
            }
            return Err(StorageError::CollectionMismatch {
                name: name.to_string(),
                dim: c.dim(),
                metric: c.metric(),
            });
        }
        let dir = self.root.join(COLLECTIONS_DIR).join(name);
        Collection::create_on_disk(&dir, name, dim, metric)?;
        let c = Collection::open(&dir, &self.opts)?;
        map.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Makes `manifest` (written by another process) the served version of
    /// the collection it names, creating the collection if it is new here;
    /// see [`Collection::follow`] for `incoming` and the returned paths.
    /// Only on a store opened with [`StoreOptions::read_only`].
    pub fn follow_collection(
        &self,
        manifest: &crate::manifest::Manifest,
        incoming: &Path,
    ) -> Result<Vec<PathBuf>> {
        if !self.opts.read_only {
            return Err(StorageError::InvalidArgument(
                "only a read-only store follows another manifest".into(),
            ));
        }
        let name = manifest.name.as_str();
        if !is_valid_collection_name(name) {
            return Err(StorageError::InvalidName(name.to_string()));
        }
        let metric = Metric::parse(&manifest.metric).ok_or_else(|| {
            StorageError::InvalidArgument(format!("unknown metric {:?}", manifest.metric))
        })?;
        let existing = self.collection(name);
        let c = match existing {
            Some(c) if c.dim() == manifest.dim && c.metric() == metric => c,
            other => {
                // New here, or dropped and created again with another shape by the writer.
                if other.is_some() {
                    self.drop_collection(name)?;
                }
                if manifest.dim == 0 || manifest.dim > MAX_DIM {
                    return Err(StorageError::InvalidArgument(format!(
                        "dimension must be 1..={MAX_DIM}, got {}",
                        manifest.dim
                    )));
                }
                let mut map = self.collections.write();
                let dir = self.root.join(COLLECTIONS_DIR).join(name);
                Collection::create_on_disk(&dir, name, manifest.dim, metric)?;
                let c = Collection::open(&dir, &self.opts)?;
                map.insert(name.to_string(), c.clone());
                c
            }
        };
        c.follow(manifest, incoming)
    }

    /// Where segment `id` of collection `name` lives (whether or not it exists).
    pub fn segment_dir(&self, name: &str, id: u64) -> PathBuf {
        self.root
            .join(COLLECTIONS_DIR)
            .join(name)
            .join(crate::segment::dir_name(id))
    }

    /// Whether the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.opts.read_only
    }

    /// The collection called `name`.
    pub fn collection(&self, name: &str) -> Option<Arc<Collection>> {
        self.collections.read().get(name).cloned()
    }

    /// Every collection, sorted by name.
    pub fn list(&self) -> Vec<CollectionInfo> {
        self.collections.read().values().map(|c| c.info()).collect()
    }

    /// Deletes a collection durably; returns whether it existed. Handles
    /// still held elsewhere fail with [`StorageError::Closed`] afterwards.
    pub fn drop_collection(&self, name: &str) -> Result<bool> {
        let mut map = self.collections.write();
        let Some(c) = map.remove(name) else {
            return Ok(false);
        };
        c.shutdown();
        let cdir = self.root.join(COLLECTIONS_DIR);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let grave = cdir.join(format!(".drop-{name}-{nanos}"));
        fs::rename(c.dir(), &grave).at(c.dir())?;
        fsync_dir(&cdir)?;
        fs::remove_dir_all(&grave).at(&grave)?;
        Ok(true)
    }

    /// fsyncs every collection's WAL.
    pub fn sync(&self) -> Result<()> {
        for c in self.collections.read().values() {
            c.sync()?;
        }
        Ok(())
    }

    /// Sum of every collection's counters.
    pub fn counters(&self) -> StorageCounters {
        let mut total = StorageCounters::default();
        for c in self.collections.read().values() {
            total.add(&c.counters());
        }
        total
    }

    /// Syncs and stops every collection; the store is unusable afterwards.
    pub fn close(&self) -> Result<()> {
        let mut first_err = None;
        for c in self.collections.read().values() {
            if let Err(e) = c.close() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}
