//! Admission control: at most `--max-heavy-requests` heavy requests run at once; the next one
//! is answered `503` with `Retry-After` at once instead of queueing its body in memory.
//!
//! Heavy means: a bulk load, a multipart image query, or any body larger
//! than [`HEAVY_BODY_BYTES`] or of unknown length. Light requests (a text search, a small
//! upsert, a GET) never wait for a permit, so searches stay fast while loads run.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::HEAVY_BODY_BYTES;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::state::AppState;

/// Routes whose every request is heavy, whatever its declared size.
const HEAVY_ROUTES: [&str; 1] = ["/v1/collections/{c}/bulk-load"];

/// Whether `req` needs a heavy-request permit.
fn is_heavy(req: &Request) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| HEAVY_ROUTES.contains(&m.as_str()))
    {
        return true;
    }
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    multipart || declared.is_none_or(|n| n > HEAVY_BODY_BYTES)
}

/// The middleware: light requests pass; a heavy one holds a permit until its answer is ready.
pub(super) async fn admit(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if !is_heavy(&req) {
        return next.run(req).await;
    }
    let Ok(permit) = state.heavy.clone().try_acquire_owned() else {
        METRICS.http_heavy_rejected_total.inc();
        let mut resp = ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_heavy_requests",
            format!(
                "{} heavy requests (bulk loads, image queries, bodies over {} bytes) are running; \
                 retry shortly or raise --max-heavy-requests",
                state.config.max_heavy_requests, HEAVY_BODY_BYTES
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    let resp = next.run(req).await;
    drop(permit);
    resp
}
