//! `--remote`: the server's link to object storage (the work itself is the
//! `glimpse-remote` crate's). A writer publishes after every bulk load (the
//! load answers once its segment and manifest are in the bucket), and
//! flushes point writes into segments within `--remote-flush-secs` so they
//! follow; a replica (`--replica`) applies the newest version every
//! `--sync-secs` and refuses writes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::http::StatusCode;
use glimpse_remote::{Bucket, Follower, Publisher, PublisherOptions, RemoteStatus};
use glimpse_storage::{Store, StoreOptions};

use crate::error::ApiError;
use crate::state::AppState;

/// How often a writer lists the manifests to notice that another writer took over.
const FENCE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The `chroma.json` namespace travels with the collections.
fn extras(data_dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let name = crate::chroma::registry::FILE_NAME;
    vec![(name.to_string(), data_dir.join(name))]
}

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// `--remote`.
    pub url: String,
    /// `--replica`.
    pub replica: bool,
    /// `--sync-secs`: how often a replica looks for a new version.
    pub sync_every: Duration,
    /// `--remote-flush-secs`: the longest a point write waits before its memtable is flushed
    /// and published.
    pub flush_every: Duration,
    /// `--remote-retain-versions`.
    pub retain_versions: usize,
    /// `--remote-gc-grace-secs`.
    pub gc_grace: Duration,
}

/// A running server's link to its bucket.
pub enum RemoteLink {
    /// This server publishes.
    Writer(Arc<Publisher>),
    /// This server follows; its status is shared with the sync task.
    Replica(Arc<RemoteStatus>),
}

impl RemoteLink {
    /// The status `/readyz` and `/metrics` report.
    pub fn status(&self) -> Arc<RemoteStatus> {
        match self {
            RemoteLink::Writer(p) => p.status().clone(),
            RemoteLink::Replica(s) => s.clone(),
        }
    }

    /// Why a write request is refused, if it is: every write on a replica (405), and on a
    /// writer that is fenced or whose bucket is failing (503: acknowledged writes would not
    /// reach the bucket, so no replica or restore would see them).
    pub fn refuse_write(&self) -> Option<ApiError> {
        match self {
            RemoteLink::Replica(s) => Some(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "read_only_replica",
                format!(
                    "this server is a read-only replica of {}; send writes to the writer",
                    s.url
                ),
            )),
            RemoteLink::Writer(p) => {
                let s = p.status();
                s.write_refusal().map(|why| {
                    let code = if s.is_fenced() {
                        "fenced"
                    } else {
                        "remote_unavailable"
                    };
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, why)
                })
            }
        }
    }

    /// On a writer, publishes what the store has committed and waits until it is in the
    /// bucket; returns the version holding it. `None` on a replica.
    pub async fn publish(&self, store: &Arc<Store>) -> Result<Option<u64>, ApiError> {
        let RemoteLink::Writer(p) = self else {
            return Ok(None);
        };
        p.publish(store, false).await.map(Some).map_err(|e| {
            let code = if p.status().is_fenced() {
                "fenced"
            } else {
                "remote_unavailable"
            };
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                format!(
                    "the data is durable on this server's disk, but not in object storage yet: {e}"
                ),
            )
        })
    }
}

/// Opens the store through the bucket: a writer restores or goes on and claims the prefix; a
/// replica opens its cache read-only (its follower brings it up to date once spawned).
pub async fn open(
    data_dir: &Path,
    opts: StoreOptions,
    s: &RemoteSettings,
) -> Result<(Arc<Store>, RemoteLink, Option<Follower>)> {
    let bucket = Bucket::open(&s.url)?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    if s.replica {
        let (store, follower) = glimpse_remote::open_replica(
            bucket,
            data_dir,
            opts,
            extras(data_dir),
            s.gc_grace.min(Duration::from_secs(60)),
        )
        .with_context(|| format!("opening a replica of {} in {}", s.url, data_dir.display()))?;
        let status = follower.status();
        return Ok((store, RemoteLink::Replica(status), Some(follower)));
    }
    let popts = PublisherOptions {
        retain_versions: s.retain_versions.max(1),
        gc_grace: s.gc_grace,
        extras: extras(data_dir),
    };
    let (store, publisher) = glimpse_remote::open_writer(bucket, data_dir, opts, popts)
        .await
        .with_context(|| format!("opening {} as the writer of {}", data_dir.display(), s.url))?;
    Ok((store, RemoteLink::Writer(publisher), None))
}

/// Starts the background task of the link: the replica's sync loop, or the writer's loop that
/// flushes point writes after `--remote-flush-secs` and publishes what background work
/// (deferred index builds, compactions, flushes) committed.
pub fn spawn(state: &Arc<AppState>, follower: Option<Follower>, s: &RemoteSettings) {
    let state = state.clone();
    let s = s.clone();
    match follower {
        Some(f) => {
            tokio::spawn(replica_loop(state, f, s.sync_every));
        }
        None => {
            tokio::spawn(writer_loop(state, s.flush_every));
        }
    }
}

async fn replica_loop(state: Arc<AppState>, mut follower: Follower, every: Duration) {
    loop {
        match follower.sync_once().await {
            Ok(out) if !out.extras_changed.is_empty() => {
                if let Err(e) = state.chroma.reload() {
                    tracing::error!(error = %e, "reloading the Chroma namespace after a sync failed");
                }
            }
            Ok(_) | Err(_) => {}
        }
        tokio::time::sleep(every).await;
    }
}

async fn writer_loop(state: Arc<AppState>, flush_every: Duration) {
    let Some(link) = state.remote.as_ref() else {
        return;
    };
    let RemoteLink::Writer(publisher) = link else {
        return;
    };
    let publisher = publisher.clone();
    // Since when each collection has had rows outside segments.
    let mut waiting: HashMap<String, Instant> = HashMap::new();
    let tick = Duration::from_secs(1).min(flush_every.max(Duration::from_millis(100)));
    let mut last_check = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        if publisher.status().is_fenced() {
            return;
        }
        // A writer that took over the prefix is noticed within seconds, not at the next write.
        if last_check.elapsed() >= FENCE_CHECK_EVERY {
            last_check = Instant::now();
            if let Err(glimpse_remote::RemoteError::Fenced { .. }) = publisher.check_fenced().await
            {
                return;
            }
        }
        let mut due = Vec::new();
        for info in state.store.list() {
            let Some(c) = state.store.collection(&info.name) else {
                continue;
            };
            if c.unflushed_rows() == 0 {
                waiting.remove(&info.name);
                continue;
            }
            let since = *waiting
                .entry(info.name.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() >= flush_every {
                due.push(c);
                waiting.remove(&info.name);
            }
        }
        if !due.is_empty() {
            let flushed = tokio::task::spawn_blocking(move || {
                for c in due {
                    if let Err(e) = c.flush() {
                        tracing::error!(collection = c.name(), error = %e, "flush for object storage failed");
                    }
                }
            })
            .await;
            if let Err(e) = flushed {
                tracing::error!(error = %e, "flush task failed");
            }
        }
        // Errors are in the status (and logged); the next tick tries again.
        let _ = publisher.publish(&state.store, false).await;
    }
}

/// At shutdown: every point write into a segment, and the result into the bucket, so a
/// writer stopped with SIGTERM leaves nothing behind on its disk.
pub async fn publish_before_exit(state: &Arc<AppState>) {
    let Some(RemoteLink::Writer(p)) = state.remote.as_ref() else {
        return;
    };
    if p.status().is_fenced() {
        return;
    }
    let store = state.store.clone();
    let flushed = tokio::task::spawn_blocking(move || {
        for info in store.list() {
            if let Some(c) = store.collection(&info.name)
                && c.unflushed_rows() > 0
                && let Err(e) = c.flush()
            {
                tracing::error!(collection = c.name(), error = %e, "flush at shutdown failed");
            }
        }
    })
    .await;
    if flushed.is_ok() {
        match p.publish(&state.store, false).await {
            Ok(v) => tracing::info!(version = v, "published to object storage before exit"),
            Err(e) => {
                tracing::error!(error = %e, "publishing before exit failed; the WAL on this disk still holds the writes")
            }
        }
    }
}
