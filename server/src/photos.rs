//! `glimpse serve --photos DIR`: keeps a collection in step with a folder of photos.
//!
//! Each photo's id is its `/`-joined path relative to the folder, so ids stay the same when
//! photos are added or removed (positions would shift). A pass embeds photos that are new or
//! whose size or modification time changed, and deletes points whose file is gone. Every
//! batch is committed on its own, so an interrupted pass keeps its work and the next one
//! resumes where it stopped.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use glimpse_index::Metric;
use glimpse_storage::{Collection, MAX_ID_BYTES, MetaValue, Point, Store};
use rayon::prelude::*;
use serde::Serialize;

use crate::jobs::{JobProgress, JobState};
use crate::model::Model;
use crate::model_slot::ModelState;
use crate::state::AppState;

/// Images embedded per forward pass and per commit.
const BATCH: usize = 32;
/// Metadata key holding the file size in bytes.
const META_SIZE: &str = "file_size";
/// Metadata key holding the modification time in nanoseconds since the Unix epoch.
const META_MTIME: &str = "file_mtime_ns";

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    /// Image files found in the folder.
    pub scanned: u64,
    /// Photos embedded for the first time.
    pub added: u64,
    /// Photos embedded again because their size or modification time changed.
    pub updated: u64,
    /// Points deleted because their file is gone.
    pub removed: u64,
    /// Photos already up to date.
    pub unchanged: u64,
    /// Photos that could not be read or decoded (logged; retried on the next pass).
    pub failed: u64,
}

/// Errors that end a pass.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The folder could not be listed.
    #[error("listing {dir}: {reason}")]
    List {
        /// The photo folder.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The store refused a write (closed, full disk, mismatched collection).
    #[error("storing photos: {0}")]
    Storage(#[from] glimpse_storage::StorageError),
    /// The model failed on a whole batch.
    #[error("embedding photos: {0}")]
    Model(String),
}

/// One photo file on disk.
struct PhotoFile {
    path: PathBuf,
    id: String,
    size: i64,
    mtime_ns: i64,
}

/// Opens (or creates) the photo collection sized for `model`.
pub fn photo_collection(
    store: &Store,
    name: &str,
    model: &Model,
) -> Result<Arc<Collection>, SyncError> {
    Ok(store.create_collection(name, model.dim(), Metric::Cosine)?)
}

/// Runs one pass over `dir` into `collection`, counting progress into `progress`.
pub fn sync_once(
    dir: &Path,
    collection: &Collection,
    model: &Model,
    progress: &JobProgress,
) -> Result<SyncReport, SyncError> {
    let files = list_photos(dir)?;
    let present: HashSet<String> = files.iter().map(|f| f.id.clone()).collect();
    let mut report = SyncReport {
        scanned: files.len() as u64,
        ..SyncReport::default()
    };
    let mut todo: Vec<(PhotoFile, bool)> = Vec::new();
    for f in files {
        match collection.get(&f.id) {
            Some(p) if is_current(&p, &f) => report.unchanged += 1,
            Some(_) => todo.push((f, true)),
            None => todo.push((f, false)),
        }
    }
    progress
        .rows_total
        .store(todo.len() as u64, Ordering::Relaxed);
    for chunk in todo.chunks(BATCH) {
        let (points, failed) = embed_batch(chunk, model)?;
        report.failed += failed;
        for (f, existed) in chunk {
            if points.iter().any(|p| p.id == f.id) {
                if *existed {
                    report.updated += 1;
                } else {
                    report.added += 1;
                }
            }
        }
        if !points.is_empty() {
            collection.upsert(points)?;
        }
        progress
            .rows_done
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    report.removed = remove_missing(dir, collection, &present)?;
    Ok(report)
}

/// Deletes points whose photo is no longer in the folder: only points the folder sync made
/// (points added through the API share the collection and are never touched), and only when
/// the file is definitely gone (`stat` says "not found"; a file that cannot be read right now,
/// or a folder that cannot be listed, is kept). An empty listing of a non-empty collection is
/// taken as an unmounted or mistyped folder, not as "every photo deleted".
fn remove_missing(
    dir: &Path,
    collection: &Collection,
    present: &HashSet<String>,
) -> Result<u64, SyncError> {
    let gone: Vec<String> = collection
        .ids()
        .into_iter()
        .filter(|id| !present.contains(id))
        .filter(|id| collection.get(id).is_some_and(|p| made_by_sync(&p)))
        .filter(|id| definitely_gone(&dir.join(id)))
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    if present.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            points = gone.len(),
            "the photo folder is empty; keeping the existing points"
        );
        return Ok(0);
    }
    for chunk in gone.chunks(1000) {
        collection.delete(chunk)?;
    }
    Ok(gone.len() as u64)
}

/// Whether the folder sync wrote `p`: its image path is its id and it carries the file's size
/// and modification time.
fn made_by_sync(p: &Point) -> bool {
    p.image_path.as_deref() == Some(p.id.as_str())
        && matches!(p.metadata.get(META_SIZE), Some(MetaValue::Int(_)))
        && matches!(p.metadata.get(META_MTIME), Some(MetaValue::Int(_)))
}

/// Whether `path` does not exist: an error other than "not found" (permissions, I/O) says
/// nothing about the photo, so it is not taken as a deletion.
fn definitely_gone(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

fn is_current(p: &Point, f: &PhotoFile) -> bool {
    p.metadata.get(META_SIZE) == Some(&MetaValue::Int(f.size))
        && p.metadata.get(META_MTIME) == Some(&MetaValue::Int(f.mtime_ns))
}

/// Reads, decodes and embeds one batch; unreadable photos are logged and counted.
fn embed_batch(chunk: &[(PhotoFile, bool)], model: &Model) -> Result<(Vec<Point>, u64), SyncError> {
    let image = model.embedder().image();
    let prepared: Vec<_> = chunk
        .par_iter()
        .map(|(f, _)| {
            let bytes = std::fs::read(&f.path).map_err(|e| e.to_string())?;
            image.preprocess(&bytes).map_err(|e| e.to_string())
        })
        .collect();
    let mut ok = Vec::new();
    let mut files = Vec::new();
    let mut failed = 0;
    for ((f, _), r) in chunk.iter().zip(prepared) {
        match r {
            Ok(p) => {
                ok.push(p);
                files.push(f);
            }
            Err(reason) => {
                failed += 1;
                tracing::warn!(path = %f.path.display(), %reason, "skipping an unreadable photo");
            }
        }
    }
    if ok.is_empty() {
        return Ok((Vec::new(), failed));
    }
    let vectors = image
        .embed(&ok)
        .map_err(|e| SyncError::Model(e.to_string()))?;
    let points = files
        .into_iter()
        .zip(vectors)
        .map(|(f, vector)| Point {
            id: f.id.clone(),
            vector,
            image_path: Some(f.id.clone()),
            image_bytes: None,
            metadata: BTreeMap::from([
                (META_SIZE.to_string(), MetaValue::Int(f.size)),
                (META_MTIME.to_string(), MetaValue::Int(f.mtime_ns)),
            ]),
        })
        .collect();
    Ok((points, failed))
}

/// Image files under `dir` with their ids, size and modification time.
fn list_photos(dir: &Path) -> Result<Vec<PhotoFile>, SyncError> {
    let listed = crate::embed::source::list_folder(dir).map_err(|e| SyncError::List {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(listed.len());
    for (path, _) in listed {
        let Some(id) = relative_id(dir, &path) else {
            tracing::warn!(path = %path.display(), "skipping a photo whose path cannot be an id");
            continue;
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // removed since the listing
        };
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        out.push(PhotoFile {
            path,
            id,
            size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
            mtime_ns,
        });
    }
    Ok(out)
}

/// `a/b.jpg` for `DIR/a/b.jpg`; `None` when it does not fit an id.
fn relative_id(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let id = parts?.join("/");
    (!id.is_empty() && id.len() <= MAX_ID_BYTES).then_some(id)
}

/// Starts the background job that keeps collection `name` in step with `dir`: one pass now
/// and, when `rescan` is set, one every `rescan` after the previous ended. Each pass is a job
/// listed at `GET /v1/jobs` with its report as the result. The thread holds the server state
/// only during a pass, so a server that shuts down is not kept alive by it; it ends then.
pub fn spawn_sync(
    state: &Arc<AppState>,
    dir: PathBuf,
    name: String,
    rescan: Option<Duration>,
) -> std::io::Result<()> {
    let weak = Arc::downgrade(state);
    std::thread::Builder::new()
        .name("glimpse-photos".into())
        .spawn(move || {
            // The model loads in the background: wait for it holding only the slot, so a
            // server shutting down meanwhile is not kept alive.
            loop {
                let Some(state) = weak.upgrade() else {
                    return;
                };
                let slot = state.model.clone();
                drop(state);
                if !matches!(slot.state(), ModelState::Loading(_)) {
                    break;
                }
                slot.wait(Duration::from_secs(1));
            }
            loop {
                let Some(state) = weak.upgrade() else {
                    return;
                };
                if !run_pass(&state, &dir, &name) {
                    return;
                }
                drop(state);
                match rescan {
                    Some(every) => std::thread::sleep(every),
                    None => return,
                }
            }
        })
        .map(|_| ())
}

/// One pass as a job; `false` when the store is closed (the server is going away).
fn run_pass(state: &AppState, dir: &Path, name: &str) -> bool {
    // Loading has ended (see `spawn_sync`); a failed load ends the sync, and the log and
    // /readyz say why.
    let Some(model) = state.model.wait(Duration::ZERO) else {
        tracing::error!(dir = %dir.display(), model = %state.model.describe(), "the photo folder cannot be synced without the CLIP model");
        return false;
    };
    let collection = match state.store.collection(name) {
        Some(c) => c,
        None => match photo_collection(&state.store, name, &model) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(collection = name, error = %e, "cannot open the photo collection");
                return false;
            }
        },
    };
    let job = state.jobs.start("photo_sync", name);
    let started = Instant::now();
    match sync_once(dir, &collection, &model, &job.progress) {
        Ok(r) => {
            tracing::info!(
                dir = %dir.display(),
                added = r.added,
                updated = r.updated,
                removed = r.removed,
                unchanged = r.unchanged,
                failed = r.failed,
                seconds = started.elapsed().as_secs_f64(),
                "photo folder synced"
            );
            job.finish(JobState::Done, serde_json::to_value(&r).unwrap_or_default());
            true
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "photo sync failed");
            job.finish(
                JobState::Failed,
                serde_json::json!({"code": "photo_sync_failed", "message": e.to_string()}),
            );
            !matches!(
                e,
                SyncError::Storage(glimpse_storage::StorageError::Closed(_))
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_relative_slash_paths_within_the_limit() {
        let dir = Path::new("/photos");
        assert_eq!(
            relative_id(dir, Path::new("/photos/2024/a.jpg")).as_deref(),
            Some("2024/a.jpg")
        );
        assert_eq!(relative_id(dir, Path::new("/elsewhere/a.jpg")), None);
        let long = format!("/photos/{}.jpg", "x".repeat(300));
        assert_eq!(relative_id(dir, Path::new(&long)), None);
    }

    /// Only points the sync made are deleted, and only when `stat` says the file is gone.
    #[test]
    fn removal_spares_api_points_and_files_that_cannot_be_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("photos");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keep.png"), b"x").unwrap();
        // `sub` is a file, so `sub/b.png` cannot be looked up (ENOTDIR), not "not found".
        std::fs::write(dir.join("sub"), b"x").unwrap();
        let store = Store::open(&tmp.path().join("data"), Default::default()).unwrap();
        let c = store.create_collection("p", 4, Metric::Cosine).unwrap();
        let synced = |id: &str| Point {
            id: id.into(),
            vector: vec![1.0, 0.0, 0.0, 0.0],
            image_path: Some(id.into()),
            image_bytes: None,
            metadata: BTreeMap::from([
                (META_SIZE.to_string(), MetaValue::Int(1)),
                (META_MTIME.to_string(), MetaValue::Int(2)),
            ]),
        };
        let api = Point {
            id: "from-the-api".into(),
            vector: vec![0.0, 1.0, 0.0, 0.0],
            image_path: None,
            image_bytes: None,
            metadata: BTreeMap::new(),
        };
        c.upsert(vec![
            synced("keep.png"),
            synced("gone.png"),
            synced("sub/b.png"),
            api,
        ])
        .unwrap();
        let present = HashSet::from(["keep.png".to_string()]);
        assert_eq!(remove_missing(&dir, &c, &present).unwrap(), 1);
        assert!(c.get("gone.png").is_none());
        assert!(c.get("from-the-api").is_some());
        assert!(c.get("sub/b.png").is_some());
        assert!(c.get("keep.png").is_some());
    }
}
