//! The replica's side (and a writer's restore): brings a read-only store to
//! the newest published version.
//!
//! One round: find the newest manifest; fetch the files this directory
//! lacks into `remote-incoming/`; let each collection follow its new
//! manifest (the storage engine moves the files in and swaps versions, so
//! searches in flight finish on the old one); drop collections the version
//! no longer has; remember the applied manifest. Files no longer served are
//! deleted a grace period later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use glimpse_storage::Store;

use crate::bucket::Bucket;
use crate::catalog::{latest_version, read_manifest};
use crate::error::{RemoteError, Result};
use crate::layout::{RemoteFile, RemoteManifest};
use crate::record::{self, APPLIED_RECORD, AppliedRecord};
use crate::status::RemoteStatus;

/// Downloads in flight at once.
const DOWNLOADS_IN_FLIGHT: usize = 8;
/// Staging folder under the data directory.
const INCOMING: &str = "remote-incoming";

/// What one round changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncOutcome {
    /// The version now served, when the round moved to a new one.
    pub applied: Option<u64>,
    /// Names of extras that were replaced (the server reloads them).
    pub extras_changed: Vec<String>,
    /// Bytes fetched.
    pub bytes: u64,
    /// Seconds spent fetching objects.
    pub fetch_secs: f64,
    /// Seconds spent switching the store to the new version (moving files, opening segments).
    pub apply_secs: f64,
}

/// Keeps a read-only store at the newest version of a prefix.
pub struct Follower {
    bucket: Bucket,
    store: Arc<Store>,
    data_dir: PathBuf,
    applied: Option<RemoteManifest>,
    extras: Vec<(String, PathBuf)>,
    grace: Duration,
    pending_deletes: Vec<(Instant, PathBuf)>,
    status: Arc<RemoteStatus>,
}

impl Follower {
    /// A follower of `bucket` into `store` (opened read-only on
    /// `data_dir`), which remembers what it applied in
    /// `<data_dir>/remote-applied.json`. `extras` are (name, local path) of
    /// server files mirrored beside the store; files no longer served are
    /// deleted `grace` after they stopped being served.
    pub fn new(
        bucket: Bucket,
        store: Arc<Store>,
        data_dir: &Path,
        extras: Vec<(String, PathBuf)>,
        grace: Duration,
        status: Arc<RemoteStatus>,
    ) -> Result<Follower> {
        let path = data_dir.join(APPLIED_RECORD);
        let record: Option<AppliedRecord> = record::read(&path)?;
        let applied = match record {
            // Collections that came from nowhere we know of are not ours to replace.
            None if !store.list().is_empty() => {
                return Err(RemoteError::Diverged(format!(
                    "{} holds collections that did not come from {}; use an empty directory",
                    data_dir.display(),
                    bucket.url()
                )));
            }
            None => None,
            // A cache of another bucket: start over (its collections are replaced).
            Some(r) if r.url != bucket.url() => None,
            Some(r) => r.manifest,
        };
        // What the record says was applied must still be what the store holds; a store
        // emptied by hand starts over.
        let applied = applied.filter(|m| {
            m.collections
                .keys()
                .all(|name| store.collection(name).is_some())
        });
        record::write(
            &path,
            &AppliedRecord {
                url: bucket.url().to_string(),
                manifest: applied.clone(),
            },
        )?;
        Ok(Follower {
            bucket,
            store,
            data_dir: data_dir.to_path_buf(),
            applied,
            extras,
            grace,
            pending_deletes: Vec::new(),
            status,
        })
    }

    /// The status shared with the HTTP handlers.
    pub fn status(&self) -> Arc<RemoteStatus> {
        self.status.clone()
    }

    /// The manifest applied last.
    pub fn applied(&self) -> Option<&RemoteManifest> {
        self.applied.as_ref()
    }

    /// Brings the store to the newest version; see the module documentation.
    pub async fn sync_once(&mut self) -> Result<SyncOutcome> {
        self.sync_to(None).await
    }

    /// Brings the store to version `target` (the newest with `None`), which must still be in
    /// the bucket; an older version than the one served is refused.
    pub async fn sync_to(&mut self, target: Option<u64>) -> Result<SyncOutcome> {
        let r = self.round(target).await;
        match &r {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, url = self.bucket.url(), "sync from object storage failed; serving the last good version");
                self.status.failed(e.to_string());
            }
        }
        self.delete_expired();
        r
    }

    async fn round(&mut self, target: Option<u64>) -> Result<SyncOutcome> {
        let latest = match target {
            Some(v) => v,
            None => match latest_version(&self.bucket).await? {
                Some(v) => v,
                None => {
                    // Nothing published yet: an empty store is the complete state.
                    self.status.succeeded(0);
                    return Ok(SyncOutcome::default());
                }
            },
        };
        match self.applied.as_ref().map(|m| m.version) {
            Some(v) if v == latest => {
                self.status.succeeded(latest);
                return Ok(SyncOutcome::default());
            }
            Some(v) if v > latest && target.is_none() => {
                // The bucket went back (emptied, restored from a backup): follow it.
                tracing::warn!(
                    served = v,
                    latest,
                    "the bucket's newest version is older than the one served; following it"
                );
            }
            Some(v) if v > latest => {
                return Err(RemoteError::Diverged(format!(
                    "version {latest} is older than the {v} served"
                )));
            }
            _ => {}
        }
        let next = read_manifest(&self.bucket, latest).await?;
        let outcome = self.apply(next).await?;
        self.status.syncs.fetch_add(1, Ordering::Relaxed);
        self.status
            .bytes_down
            .fetch_add(outcome.bytes, Ordering::Relaxed);
        self.status.succeeded(latest);
        tracing::info!(
            version = latest,
            bytes = outcome.bytes,
            url = self.bucket.url(),
            "applied a version from object storage"
        );
        Ok(outcome)
    }

    async fn apply(&mut self, next: RemoteManifest) -> Result<SyncOutcome> {
        let incoming = self.data_dir.join(INCOMING);
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming).map_err(|e| RemoteError::io(&incoming, e))?;
        }
        let empty = BTreeMap::new();
        let mut fetches: Vec<(RemoteFile, PathBuf)> = Vec::new();
        let mut renewed = Vec::new();
        for (name, c) in &next.collections {
            let before = self.applied.as_ref().and_then(|m| m.collections.get(name));
            let before_files = before.map_or(&empty, |b| &b.files);
            // A segment id whose footer is another object than before: the writer dropped
            // the collection and made a new one under the same name; start it afresh.
            let reborn = c.files.iter().any(|(seg, files)| {
                before_files
                    .get(seg)
                    .is_some_and(|old| old.get(FOOTER) != files.get(FOOTER))
            });
            if reborn {
                renewed.push(name.clone());
            }
            for (&seg, files) in &c.files {
                let local_dir = self.store.segment_dir(name, seg);
                for (fname, f) in files {
                    let same_object = !reborn
                        && before_files
                            .get(&seg)
                            .and_then(|old| old.get(fname))
                            .is_some_and(|old| old == f);
                    let present =
                        std::fs::metadata(local_dir.join(fname)).is_ok_and(|m| m.len() == f.len);
                    if !(same_object && present) {
                        let to = incoming
                            .join(name)
                            .join(local_dir.file_name().unwrap_or_default())
                            .join(fname);
                        fetches.push((f.clone(), to));
                    }
                }
            }
        }
        let mut extras_changed = Vec::new();
        for (name, f) in &next.extras {
            let Some((_, path)) = self.extras.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let before = self.applied.as_ref().and_then(|m| m.extras.get(name));
            if before != Some(f) || !path.exists() {
                fetches.push((f.clone(), incoming.join("extras").join(name)));
                extras_changed.push(name.clone());
            }
        }
        let bytes: u64 = fetches.iter().map(|(f, _)| f.len).sum();
        let fetch_started = Instant::now();
        let bucket = &self.bucket;
        futures_util::stream::iter(fetches.into_iter().map(|(f, to)| async move {
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| RemoteError::io(dir, e))?;
            }
            bucket.get_file(&f.key, &to, f.len).await
        }))
        .buffer_unordered(DOWNLOADS_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;

        let fetch_secs = fetch_started.elapsed().as_secs_f64();
        let apply_started = Instant::now();
        // Everything is local now: switch versions (blocking file work).
        let store = self.store.clone();
        let extras = self.extras.clone();
        let manifest = next.clone();
        let changed = extras_changed.clone();
        let obsolete = tokio::task::spawn_blocking(move || -> Result<Vec<PathBuf>> {
            let mut obsolete = Vec::new();
            for name in &renewed {
                store.drop_collection(name)?;
            }
            for (name, c) in &manifest.collections {
                obsolete.extend(store.follow_collection(&c.manifest, &incoming.join(name))?);
            }
            for info in store.list() {
                if !manifest.collections.contains_key(&info.name) {
                    store.drop_collection(&info.name)?;
                }
            }
            for name in &changed {
                if let Some((_, path)) = extras.iter().find(|(n, _)| n == name) {
                    let from = incoming.join("extras").join(name);
                    std::fs::rename(&from, path).map_err(|e| RemoteError::io(path, e))?;
                }
            }
            let _ = std::fs::remove_dir_all(&incoming);
            Ok(obsolete)
        })
        .await
        .map_err(|e| RemoteError::Unavailable(format!("sync task failed: {e}")))??;
        let now = Instant::now();
        self.pending_deletes
            .extend(obsolete.into_iter().map(|p| (now, p)));
        // A path served again (a segment id reused by a collection made anew) is not deleted.
        let served: std::collections::HashSet<PathBuf> = next
            .collections
            .iter()
            .flat_map(|(name, c)| c.files.keys().map(|&id| self.store.segment_dir(name, id)))
            .collect();
        self.pending_deletes.retain(|(_, p)| !served.contains(p));
        record::write(
            &self.data_dir.join(APPLIED_RECORD),
            &AppliedRecord {
                url: self.bucket.url().to_string(),
                manifest: Some(next.clone()),
            },
        )?;
        let version = next.version;
        self.applied = Some(next);
        Ok(SyncOutcome {
            applied: Some(version),
            extras_changed,
            bytes,
            fetch_secs,
            apply_secs: apply_started.elapsed().as_secs_f64(),
        })
    }

    /// Deletes files that stopped being served more than `grace` ago.
    fn delete_expired(&mut self) {
        let grace = self.grace;
        self.pending_deletes.retain(|(since, path)| {
            if since.elapsed() < grace {
                return true;
            }
            let r = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(e) = r
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a file no longer served");
            }
            false
        });
    }
}

/// The segment footer's file name (`SEGMENT`): a new object under the same
/// segment id means a new segment.
const FOOTER: &str = "SEGMENT";
