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
    // A replica is ready once it serves a complete version; a fenced writer never again.
    let remote = state.remote.as_ref().map(|l| l.status());
    let status = if state.config.wait_for_model && !model_ready {
        "waiting_for_model"
    } else if remote.as_ref().is_some_and(|r| r.is_fenced()) {
        "fenced"
    } else if remote.as_ref().is_some_and(|r| !r.synced_once()) {
        "waiting_for_first_sync"
    } else {
        "ready"
    };
    let mut body = json!({
        "status": status,
        "model": model,
        "model_id": model_id,
        "collections": collections,
    });
    if let Some(r) = remote {
        body["remote"] = r.to_json();
    }
    (
        if status == "ready" {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
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
        if let Some(link) = &st.remote {
            METRICS.sync_remote(&link.status());
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
