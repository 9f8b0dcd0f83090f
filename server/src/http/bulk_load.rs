//! `POST /v1/collections/{c}/bulk-load`, `GET /v1/jobs` and `GET /v1/jobs/{id}`.
//!
//! The body is either a Parquet file, streamed to a spool file on disk
//! (never buffered whole in memory), or JSON `{"paths": [...]}` naming files
//! or folders inside `--import-root`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::blocking;
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult};
use crate::jobs::{JobProgress, JobState};
use crate::paths::{PathError, resolve_inside};
use crate::shard_loader::bulk_load as run_bulk_load;
use crate::state::AppState;

/// Query string of a bulk load.
#[derive(Debug, Deserialize)]
pub struct BulkQuery {
    #[serde(default, rename = "async")]
    run_async: bool,
}

/// JSON body naming server-side paths.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsBody {
    paths: Vec<String>,
}

/// A spooled upload, removed when dropped.
struct SpoolFile(PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn spool_body(state: &AppState, body: Body) -> Result<SpoolFile, ApiError> {
    let dir = &state.config.spool_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("upload-{}.parquet", uuid::Uuid::new_v4()));
    let spool = SpoolFile(path.clone());
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", path.display())))?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    let limit = state.config.max_upload_bytes;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::too_large(format!(
                "upload is larger than the limit of {limit} bytes"
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("spooling upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("spooling upload: {e}")))?;
    if written == 0 {
        return Err(ApiError::invalid("empty_body", "the request body is empty"));
    }
    Ok(spool)
}

fn resolve_paths(state: &AppState, paths: &[String]) -> Result<Vec<PathBuf>, ApiError> {
    let Some(root) = &state.config.import_root else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "import_disabled",
            "bulk-load by path is disabled: start the server with --import-root DIR",
        ));
    };
    if paths.is_empty() {
        return Err(ApiError::invalid("empty_paths", "`paths` is empty"));
    }
    paths
        .iter()
        .map(|p| {
            resolve_inside(root, p).map_err(|e| match e {
                PathError::NotFound(_) => ApiError::not_found(e.to_string()),
                PathError::OutsideRoot(_) => {
                    ApiError::new(StatusCode::FORBIDDEN, "outside_import_root", e.to_string())
                }
                PathError::Invalid(_) => ApiError::invalid("invalid_path", e.to_string()),
            })
        })
        .collect()
}

pub(super) async fn bulk_load(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<BulkQuery>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !glimpse_storage::is_valid_collection_name(&name) {
        return Err(ApiError::invalid(
            "invalid_argument",
            format!("invalid collection name {name:?}: use 1 to 64 characters from [A-Za-z0-9_-]"),
        ));
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Paths named in JSON, and every shard a walk of them finds, must lie inside this root.
    let root = if is_json {
        state.config.import_root.clone()
    } else {
        None
    };
    let (paths, spool) = if is_json {
        // The upload route has no body limit (Parquet is streamed to disk); a JSON body is
        // buffered, so it gets the JSON limit of every other route.
        let limit = state.config.max_json_bytes;
        let mut bytes = Vec::new();
        let mut stream = req.into_body().into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::too_large(format!(
                    "JSON body is larger than the limit of {limit} bytes (--max-json-bytes)"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let body: PathsBody = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid("invalid_json", format!("invalid JSON body: {e}")))?;
        (resolve_paths(&state, &body.paths)?, None)
    } else {
        let spool = spool_body(&state, req.into_body()).await?;
        (vec![spool.0.clone()], Some(spool))
    };

    if q.run_async {
        let job = state.jobs.start("bulk_load", &name);
        let st = state.clone();
        let j = job.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _spool = spool;
            let loaded = run_bulk_load(&st.store, &name, &paths, root.as_deref(), &j.progress)
                .and_then(|report| {
                    let version = rt.block_on(publish(&st))?;
                    Ok(with_version(json!(report), version))
                });
            match loaded {
                Ok(report) => j.finish(JobState::Done, report),
                Err(e) => j.finish(
                    JobState::Failed,
                    json!({"code": e.code, "message": e.message}),
                ),
            }
        });
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"job_id": job.id, "status_url": format!("/v1/jobs/{}", job.id)})),
        ));
    }
    let st = state.clone();
    let report = blocking(move || {
        let _spool = spool;
        run_bulk_load(
            &st.store,
            &name,
            &paths,
            root.as_deref(),
            &JobProgress::default(),
        )
    })
    .await?;
    // With --remote the answer waits until the segment and its manifest are in the bucket.
    let version = publish(&state).await?;
    Ok((StatusCode::OK, Json(with_version(json!(report), version))))
}

/// Publishes to object storage on a `--remote` writer; the version that holds the load.
async fn publish(state: &AppState) -> Result<Option<u64>, ApiError> {
    match &state.remote {
        Some(link) => link.publish(&state.store).await,
        None => Ok(None),
    }
}

/// Adds `remote_version` to a load report when the load went to object storage.
fn with_version(mut report: Value, version: Option<u64>) -> Value {
    if let Some(v) = version {
        report["remote_version"] = json!(v);
    }
    report
}

pub(super) async fn job(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let job = state
        .jobs
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("job {id:?} not found")))?;
    Ok(Json(job.to_json()))
}

pub(super) async fn jobs(State(state): State<Arc<AppState>>) -> Json<Value> {
    let jobs: Vec<Value> = state.jobs.list().iter().map(|j| j.to_json()).collect();
    Json(json!({ "jobs": jobs }))
}
