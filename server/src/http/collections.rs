//! `/v1/collections`: create, list, describe, drop, compact.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use glimpse_index::Metric;
use serde::Deserialize;
use serde_json::{Value, json};

use super::blocking;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::state::AppState;

/// Body of `POST /v1/collections`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    name: String,
    dim: usize,
    #[serde(default)]
    metric: Option<String>,
}

/// Largest accepted dimension (bigG-14 is 1280; leave room for other models).
const MAX_DIM: usize = 16_384;

pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<CreateCollection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if body.dim == 0 || body.dim > MAX_DIM {
        return Err(ApiError::invalid(
            "invalid_dimension",
            format!("dim must be between 1 and {MAX_DIM}, got {}", body.dim),
        ));
    }
    let metric = match body.metric.as_deref() {
        None => Metric::Cosine,
        Some(m) => Metric::parse(m).ok_or_else(|| {
            ApiError::invalid(
                "invalid_metric",
                format!("metric must be one of cosine, dot, l2; got {m:?}"),
            )
        })?,
    };
    let st = state.clone();
    let info = blocking(move || {
        let c = st
            .store
            .create_collection(&body.name, body.dim, metric)
            .map_err(ApiError::from)?;
        Ok(describe(&c, st.config.rescore))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// JSON description of a collection; its recall report is for searches with `rescore` (the
/// server's default).
pub(crate) fn describe(
    c: &glimpse_storage::Collection,
    rescore: glimpse_storage::Rescore,
) -> Value {
    let s = c.stats();
    json!({
        "name": c.name(),
        "dim": c.dim(),
        "metric": c.metric().as_str(),
        "count": s.points,
        "segments": s.segments,
        "indexed_segments": s.indexed_segments,
        "unindexed_rows": s.unindexed_rows,
        "segment_bytes": s.segment_bytes,
        "wal_bytes": s.wal_bytes,
        "memtable_rows": s.memtable_rows,
        "recall": c.recall_report(None, rescore),
    })
}

pub(super) async fn list(State(state): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    let st = state.clone();
    blocking(move || {
        let mut out = Vec::new();
        for info in st.store.list() {
            if let Some(c) = st.store.collection(&info.name) {
                out.push(describe(&c, st.config.rescore));
            }
        }
        Ok(Json(json!({ "collections": out })))
    })
    .await
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let c = state.collection(&name)?;
    // With --remote: the bucket's manifest version this server published or serves.
    let version = state.remote.as_ref().map(|l| l.status().version());
    let rescore = state.config.rescore;
    blocking(move || {
        let mut info = describe(&c, rescore);
        if let Some(v) = version {
            info["version"] = json!(v);
        }
        Ok(Json(info))
    })
    .await
}

pub(super) async fn drop_one(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    state.collection(&name)?;
    let st = state.clone();
    blocking(move || {
        st.store.drop_collection(&name).map_err(ApiError::from)?;
        Ok(Json(json!({ "dropped": name })))
    })
    .await
}

/// `POST /v1/collections/{c}/compact`: flushes the memtable and merges every segment into one
/// (waiting for a background merge in progress first), then describes the result. For after a
/// large load, before a snapshot or a benchmark; the background policy does this on its own
/// schedule otherwise.
pub(super) async fn compact(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let c = state.collection(&name)?;
    let rescore = state.config.rescore;
    blocking(move || {
        let started = std::time::Instant::now();
        c.compact().map_err(ApiError::from)?;
        let mut info = describe(&c, rescore);
        info["compact_seconds"] = json!(started.elapsed().as_secs_f64());
        Ok(Json(info))
    })
    .await
}
