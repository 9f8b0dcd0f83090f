//! Operational routes: liveness, readiness, metrics, OpenAPI, the page.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use crate::metrics::METRICS;
use crate::model_slot::ModelState;
use crate::state::AppState;

/// The OpenAPI document, kept beside docs/api.md.
const OPENAPI: &str = include_str!("../../assets/openapi.json");
/// The search page (self-contained: no CDN, no external font).
const PAGE: &str = include_str!("../../assets/index.html");

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    // The store is opened before the listener exists; the model loads in the background.
    // Ready means: vector search and loads work, and with --wait-for-model also text search.
    let collections = state.store.list().len();
    let model = state.model.describe();
    let model_id = match state.model.state() {
        ModelState::Ready(m) => Some(m.id().to_string()),
        _ => None,
    };
    let model_ready = matches!(state.model.state(), ModelState::Ready(_));
    let ready = !state.config.wait_for_model || model_ready;
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(json!({
            "status": if ready { "ready" } else { "waiting_for_model" },
            "model": model,
            "model_id": model_id,
            "collections": collections,
        })),
    )
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let st = state.clone();
    let text = tokio::task::spawn_blocking(move || {
        for info in st.store.list() {
            if let Some(c) = st.store.collection(&info.name) {
                METRICS.sync_collection(&info.name, &c.stats(), &c.counters());
            }
        }
        METRICS.render()
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(super) async fn page() -> Html<&'static str> {
    Html(PAGE)
}
