//! The writer's side: publishes the store's committed state to the bucket.
//!
//! One round: take every collection's committed state (its manifest and the
//! files of its segments), upload the files the bucket lacks under keys of
//! this session, then create `manifests/<v+1>.json` with a conditional
//! create. The manifest goes last, so a writer killed at any point leaves no
//! manifest naming a missing object; a create that finds the version taken
//! means another writer published on this prefix, and this one is fenced.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt};
use glimpse_storage::Store;

use crate::bucket::Bucket;
use crate::catalog::read_manifest;
use crate::error::{RemoteError, Result};
use crate::gc;
use crate::layout::{
    FORMAT, RemoteCollection, RemoteFile, RemoteManifest, extra_key, manifest_key, segment_file_key,
};
use crate::record::{self, WRITER_RECORD, WriterRecord};
use crate::status::RemoteStatus;

/// The segment footer's file name.
const FOOTER: &str = "SEGMENT";
/// Uploads in flight at once.
const UPLOADS_IN_FLIGHT: usize = 8;
/// Garbage collection runs at most this often.
const GC_EVERY: Duration = Duration::from_secs(30);

/// Settings of a writer.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Objects referenced by any of the newest this-many manifests are kept.
    pub retain_versions: usize,
    /// Nothing younger than this is deleted, and a manifest is kept this
    /// long after its successor appeared (a replica reading it then has this
    /// long to fetch its files).
    pub gc_grace: Duration,
    /// Server files mirrored beside the store: (name in the bucket, local path).
    pub extras: Vec<(String, PathBuf)>,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        PublisherOptions {
            retain_versions: 10,
            gc_grace: Duration::from_secs(600),
            extras: Vec::new(),
        }
    }
}

/// Identity of a local immutable file: the same identity means the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    })
}

/// (collection, segment id or `u64::MAX` for extras, file name).
type FileSlot = (String, u64, String);

struct RoundState {
    last: Option<RemoteManifest>,
    /// Local file identity → the object holding its bytes.
    known: HashMap<FileSlot, (FileId, RemoteFile)>,
    uploads: u64,
    last_gc: Option<Instant>,
}

/// Publishes a store's committed state; see the module documentation.
pub struct Publisher {
    bucket: Bucket,
    session: String,
    record_path: PathBuf,
    opts: PublisherOptions,
    status: Arc<RemoteStatus>,
    round: tokio::sync::Mutex<RoundState>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Publisher {
    /// A publisher continuing from `seed` (the version the data directory
    /// holds, restored or published before). A local file counts as already
    /// in the bucket only where its segment's footer is byte for byte the
    /// footer object (the footer holds every data file's crc32, so equal
    /// footers mean equal segments) and its length matches; an extra file
    /// only where its bytes are the object's. Anything else is uploaded again
    /// under a new key.
    pub(crate) async fn new(
        bucket: Bucket,
        store: &Store,
        data_dir: &Path,
        seed: Option<RemoteManifest>,
        opts: PublisherOptions,
        status: Arc<RemoteStatus>,
    ) -> Result<Publisher> {
        let mut known = HashMap::new();
        if let Some(m) = &seed {
            for (cname, c) in &m.collections {
                for (&seg, files) in &c.files {
                    let dir = store.segment_dir(cname, seg);
                    let Some(footer) = files.get(FOOTER) else {
                        continue;
                    };
                    let local = std::fs::read(dir.join(FOOTER)).unwrap_or_default();
                    if bucket.get_small(&footer.key, 1 << 20).await?.as_ref() != local.as_slice() {
                        continue;
                    }
                    for (fname, f) in files {
                        if let Ok(id) = file_id(&dir.join(fname))
                            && id.len == f.len
                        {
                            known.insert((cname.clone(), seg, fname.clone()), (id, f.clone()));
                        }
                    }
                }
            }
            for (name, f) in &m.extras {
                if let Some((_, path)) = opts.extras.iter().find(|(n, _)| n == name)
                    && let Ok(id) = file_id(path)
                    && id.len == f.len
                    && bucket.get_small(&f.key, f.len).await?.as_ref()
                        == std::fs::read(path).unwrap_or_default().as_slice()
                {
                    known.insert((String::new(), u64::MAX, name.clone()), (id, f.clone()));
                }
            }
            status.succeeded(m.version);
        }
        Ok(Publisher {
            bucket,
            session: uuid::Uuid::new_v4().simple().to_string(),
            record_path: data_dir.join(WRITER_RECORD),
            opts,
            status,
            round: tokio::sync::Mutex::new(RoundState {
                last: seed,
                known,
                uploads: 0,
                last_gc: None,
            }),
        })
    }

    /// The status shared with the HTTP handlers.
    pub fn status(&self) -> &Arc<RemoteStatus> {
        &self.status
    }

    /// Publishes the committed state of `store` if it differs from the last
    /// published version (or always, with `force`: the claim a writer makes
    /// at start); returns the version that holds it. Rounds run one at a
    /// time, so a caller whose data was committed before the call returns
    /// only once a version holding it is in the bucket.
    pub async fn publish(self: &Arc<Self>, store: &Arc<Store>, force: bool) -> Result<u64> {
        // In a task of its own: a caller that goes away (a client that hangs up on a bulk
        // load) must not cut a round short between its uploads and its manifest.
        let (me, store) = (self.clone(), store.clone());
        tokio::spawn(async move { me.publish_now(&store, force).await })
            .await
            .map_err(|e| RemoteError::Unavailable(format!("publish task failed: {e}")))?
    }

    async fn publish_now(&self, store: &Store, force: bool) -> Result<u64> {
        if self.status.is_fenced() {
            return Err(self.fenced_error(None));
        }
        let mut st = self.round.lock().await;
        let r = self.round(&mut st, store, force).await;
        match &r {
            Err(RemoteError::Fenced { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "publishing to object storage failed; retrying");
                self.status.failed(e.to_string());
            }
            Ok(_) => {}
        }
        let gc_due = st.last_gc.is_none_or(|t| t.elapsed() >= GC_EVERY);
        if r.is_ok() && gc_due {
            st.last_gc = Some(Instant::now());
            match gc::collect(&self.bucket, self.opts.retain_versions, self.opts.gc_grace).await {
                Ok(n) => {
                    self.status.gc_deleted.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "object storage garbage collection failed"),
            }
        }
        r
    }

    /// Looks for a newer manifest than this writer's own (another writer took over) and
    /// fences this one if there is: cheaper than learning it at the next publication, after
    /// more writes were acknowledged here. One listing of the manifests.
    pub async fn check_fenced(&self) -> Result<()> {
        if self.status.is_fenced() {
            return Err(self.fenced_error(None));
        }
        // Not while a round runs: its own new version is not a rival.
        let st = self.round.lock().await;
        let ours = st.last.as_ref().map_or(0, |m| m.version);
        let latest = match crate::catalog::latest_version(&self.bucket).await {
            Ok(v) => v,
            Err(e) => {
                // Writes are refused until the bucket answers again.
                self.status.failed(e.to_string());
                return Err(e);
            }
        };
        if let Some(theirs) = latest
            && theirs > ours
        {
            let e = self.fenced_error(Some(theirs));
            tracing::error!(error = %e, url = self.bucket.url(), "fenced: another writer owns this prefix now");
            self.status.fence(e.to_string());
            return Err(e);
        }
        self.status.succeeded(ours);
        Ok(())
    }

    fn write_record(&self, version: u64, pending: Option<u64>) -> Result<()> {
        record::write(
            &self.record_path,
            &WriterRecord {
                url: self.bucket.url().to_string(),
                version,
                session: self.session.clone(),
                pending,
            },
        )
    }

    fn fenced_error(&self, theirs: Option<u64>) -> RemoteError {
        let ours = self.status.version();
        RemoteError::Fenced {
            ours,
            theirs: theirs.unwrap_or(ours + 1),
        }
    }

    async fn round(&self, st: &mut RoundState, store: &Store, force: bool) -> Result<u64> {
        // A compaction may delete files of the state taken: take a newer one and go again.
        let mut tries = 0;
        let candidate = loop {
            tries += 1;
            match self.candidate(st, store).await {
                Err(RemoteError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && tries < 5 =>
                {
                    continue;
                }
                other => break other?,
            }
        };
        // Nothing new: no request to the bucket, and nothing to report about it (the fence
        // check, which does ask the bucket, keeps the status honest meanwhile).
        if !force
            && let Some(last) = &st.last
            && last.same_content(&candidate)
        {
            return Ok(last.version);
        }
        let mut version = st.last.as_ref().map_or(0, |m| m.version) + 1;
        let manifest = loop {
            let manifest = RemoteManifest {
                version,
                ..candidate.clone()
            };
            let bytes = serde_json::to_vec(&manifest)
                .map_err(|e| RemoteError::Unavailable(format!("manifest encoding: {e}")))?;
            let len = bytes.len() as u64;
            // Written first, so that a create whose answer was lost (a timeout, a kill) is
            // recognised as ours after a restart instead of as another writer's.
            self.write_record(version - 1, Some(version))?;
            if self.bucket.create(&manifest_key(version), bytes).await? {
                self.status.bytes_up.fetch_add(len, Ordering::Relaxed);
                break manifest;
            }
            // Taken: by an earlier try of ours whose answer was lost, or by another writer.
            let theirs = read_manifest(&self.bucket, version).await?;
            if theirs.writer == self.session {
                tracing::info!(
                    version,
                    "a version this writer created before was confirmed"
                );
                st.last = Some(theirs);
                version += 1;
                continue;
            }
            let e = self.fenced_error(Some(version));
            tracing::error!(error = %e, url = self.bucket.url(), "fenced: another writer owns this prefix now");
            self.status.fence(e.to_string());
            return Err(e);
        };
        st.last = Some(manifest);
        self.write_record(version, None)?;
        self.status.syncs.fetch_add(1, Ordering::Relaxed);
        self.status.succeeded(version);
        tracing::info!(
            version,
            url = self.bucket.url(),
            "published to object storage"
        );
        Ok(version)
    }

    /// The manifest of the store's committed state (version 0), with every
    /// file it names uploaded.
    async fn candidate(&self, st: &mut RoundState, store: &Store) -> Result<RemoteManifest> {
        // Which files each slot needs: (slot, local path, identity).
        let mut wanted: Vec<(FileSlot, PathBuf, FileId)> = Vec::new();
        let mut collections = BTreeMap::new();
        for info in store.list() {
            let Some(c) = store.collection(&info.name) else {
                continue;
            };
            let state = match c.committed_state() {
                Ok(s) => s,
                // Dropped while we looked.
                Err(glimpse_storage::StorageError::Closed(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for seg in &state.segments {
                for f in &seg.files {
                    let path = seg.dir.join(&f.name);
                    let id = file_id(&path).map_err(|e| RemoteError::io(&path, e))?;
                    wanted.push(((info.name.clone(), seg.id, f.name.clone()), path, id));
                }
            }
            collections.insert(
                info.name.clone(),
                RemoteCollection {
                    manifest: state.manifest,
                    files: BTreeMap::new(),
                },
            );
        }
        for (name, path) in &self.opts.extras {
            match file_id(path) {
                Ok(id) => wanted.push(((String::new(), u64::MAX, name.clone()), path.clone(), id)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RemoteError::io(path, e)),
            }
        }
        let mut to_upload = Vec::new();
        for (slot, path, id) in &wanted {
            let fresh = st.known.get(slot).is_none_or(|(kid, _)| kid != id);
            if fresh {
                st.uploads += 1;
                let (c, seg, name) = slot;
                let key = if *seg == u64::MAX {
                    extra_key(&self.session, st.uploads, name)
                } else {
                    segment_file_key(c, *seg, &self.session, st.uploads, name)
                };
                to_upload.push((slot.clone(), path.clone(), *id, key));
            }
        }
        let bucket = &self.bucket;
        let done: Vec<(FileSlot, FileId, RemoteFile)> =
            futures_util::stream::iter(to_upload.into_iter().map(
                |(slot, path, id, key)| async move {
                    let len = bucket.put_file(&path, &key).await?;
                    // The file changed under us (it never should: segment files are immutable).
                    let after = file_id(&path).map_err(|e| RemoteError::io(&path, e))?;
                    if after != id || len != id.len {
                        return Err(RemoteError::io(
                            &path,
                            std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                "file replaced during upload",
                            ),
                        ));
                    }
                    Ok((slot, id, RemoteFile { key, len }))
                },
            ))
            .buffer_unordered(UPLOADS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (slot, id, f) in done {
            self.status.bytes_up.fetch_add(f.len, Ordering::Relaxed);
            st.known.insert(slot, (id, f));
        }
        let mut extras = BTreeMap::new();
        for ((c, seg, name), _, _) in wanted {
            let Some((_, f)) = st.known.get(&(c.clone(), seg, name.clone())) else {
                continue;
            };
            if seg == u64::MAX {
                extras.insert(name, f.clone());
            } else if let Some(rc) = collections.get_mut(&c) {
                rc.files.entry(seg).or_default().insert(name, f.clone());
            }
        }
        Ok(RemoteManifest {
            format: FORMAT,
            version: 0,
            writer: self.session.clone(),
            published_at_ms: now_ms(),
            collections,
            extras,
        })
    }
}
