//! The routes around the data: identity, heartbeat, version, pre-flight checks, tenants and
//! databases.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChromaError, ChromaJson, ChromaPath, ChromaResult, blocking};
use super::registry::{DEFAULT_DATABASE, DEFAULT_TENANT};
use crate::state::AppState;

/// What `GET /api/v2/version` answers: the same as a `chromadb` 1.5.9 server (the client
/// checks nothing beyond it being a version string).
const CHROMA_VERSION: &str = "1.0.0";

/// Bytes assumed per record when sizing `max_batch_size` from the JSON body limit: a
/// 768-float embedding as JSON numbers is about 8 KiB, and a document and metadata fit
/// beside it.
const BYTES_PER_RECORD: usize = 16 << 10;

/// Most records one write may carry: what fits in the JSON body limit at
/// [`BYTES_PER_RECORD`] each.
pub(crate) fn max_batch_size(state: &AppState) -> usize {
    (state.config.max_json_bytes / BYTES_PER_RECORD).clamp(1, 100_000)
}

/// `GET /api/v2/auth/identity`: who the client is (there are no users).
pub(super) async fn identity() -> Json<Value> {
    Json(json!({
        "user_id": "",
        "tenant": DEFAULT_TENANT,
        "databases": [DEFAULT_DATABASE],
    }))
}

/// `GET /api/v2/heartbeat`.
pub(super) async fn heartbeat() -> Json<Value> {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Json(json!({ "nanosecond heartbeat": ns as u64 }))
}

/// `GET /api/v2/healthcheck`.
pub(super) async fn healthcheck() -> Json<Value> {
    Json(json!({"is_executor_ready": true, "is_log_client_ready": true}))
}

/// `GET /api/v2/version`.
pub(super) async fn version() -> Json<Value> {
    Json(Value::String(CHROMA_VERSION.into()))
}

/// `GET /api/v2/pre-flight-checks`: without `max_batch_size` the client refuses every write.
pub(super) async fn pre_flight(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "max_batch_size": max_batch_size(&state),
        "supports_base64_encoding": true,
    }))
}

/// `POST /api/v2/reset`: refused, as by a Chroma server without `ALLOW_RESET`.
pub(super) async fn reset() -> ChromaError {
    ChromaError::new(
        axum::http::StatusCode::FORBIDDEN,
        "ChromaError",
        "Resetting is not allowed by this configuration: drop collections one by one",
    )
}

/// Body naming a tenant or database to create.
#[derive(Debug, Deserialize)]
pub struct NameBody {
    name: String,
}

/// `POST /api/v2/tenants`.
pub(super) async fn create_tenant(
    State(state): State<Arc<AppState>>,
    ChromaJson(body): ChromaJson<NameBody>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        state.chroma.create_tenant(&body.name)?;
        Ok(Json(json!({})))
    })
    .await
}

/// `GET /api/v2/tenants/{tenant}`.
pub(super) async fn get_tenant(
    State(state): State<Arc<AppState>>,
    ChromaPath(tenant): ChromaPath<String>,
) -> ChromaResult<Json<Value>> {
    if !state.chroma.has_tenant(&tenant) {
        return Err(ChromaError::not_found(format!(
            "Tenant [{}] not found",
            super::wire::cut(&tenant)
        )));
    }
    Ok(Json(json!({ "name": tenant })))
}

/// `POST /api/v2/tenants/{tenant}/databases`.
pub(super) async fn create_database(
    State(state): State<Arc<AppState>>,
    ChromaPath(tenant): ChromaPath<String>,
    ChromaJson(body): ChromaJson<NameBody>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        state.chroma.create_database(&tenant, &body.name)?;
        Ok(Json(json!({})))
    })
    .await
}

/// `GET /api/v2/tenants/{tenant}/databases`.
pub(super) async fn list_databases(
    State(state): State<Arc<AppState>>,
    ChromaPath(tenant): ChromaPath<String>,
) -> ChromaResult<Json<Value>> {
    let list: Vec<Value> = state
        .chroma
        .databases(&tenant)?
        .into_iter()
        .map(|(name, id)| json!({"id": id, "name": name, "tenant": tenant}))
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `GET /api/v2/tenants/{tenant}/databases/{database}`.
pub(super) async fn get_database(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database)): ChromaPath<(String, String)>,
) -> ChromaResult<Json<Value>> {
    let id = state.chroma.database(&tenant, &database)?;
    Ok(Json(json!({"id": id, "name": database, "tenant": tenant})))
}

/// `DELETE /api/v2/tenants/{tenant}/databases/{database}`: the database and its collections.
pub(super) async fn delete_database(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database)): ChromaPath<(String, String)>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        let engine = state.chroma.delete_database(&tenant, &database)?;
        for name in engine {
            state.store.drop_collection(&name)?;
        }
        Ok(Json(json!({})))
    })
    .await
}
