//! Routes of the original Python pipeline's server, so its page and
//! clients work unchanged against Glimpse.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::search::{QueryInput, SearchKnobs, run_search};
use crate::error::{ApiJson, ApiResult};
use crate::state::AppState;

/// Body of the original `POST /search`.
#[derive(Debug, Deserialize)]
pub struct LegacySearch {
    text: String,
    #[serde(default = "default_n")]
    n_results: usize,
}

fn default_n() -> usize {
    5
}

/// `POST /search {"text","n_results"}` → `[{"image_path","similarity"}]`.
pub(super) async fn search_post(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<LegacySearch>,
) -> ApiResult<Json<Value>> {
    let coll = state.default_collection(None)?;
    let knobs = SearchKnobs {
        k: Some(body.n_results),
        ..Default::default()
    };
    let out = run_search(&state, coll, QueryInput::Text(body.text), knobs).await?;
    let list: Vec<Value> = out
        .results
        .iter()
        .map(|r| {
            let v = serde_json::to_value(r).unwrap_or(Value::Null);
            json!({
                "image_path": v.get("image_path").cloned().unwrap_or(Value::Null),
                "similarity": v.get("score").cloned().unwrap_or(Value::Null),
                "id": v.get("id").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `GET /health` → `{"status":"healthy","collection_size":N}`.
pub(super) async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let st = state.clone();
    let size = tokio::task::spawn_blocking(move || {
        st.default_collection(None)
            .map(|c| c.stats().points)
            .unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    Json(json!({"status": "healthy", "collection_size": size}))
}
