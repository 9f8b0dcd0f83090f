//! The HTTP API: routes, auth, request metrics and graceful shutdown.
//!
//! The entry point is [`serve`]`(listener, state, shutdown)`: tests bind
//! `127.0.0.1:0` and hand the listener in.

mod admission;
mod bulk_load;
mod collections;
mod compat;
mod images;
mod ops;
mod points;
pub(crate) mod search;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::state::AppState;

/// Builds the router over shared state.
pub fn router(state: Arc<AppState>) -> Router {
    let json_limit = state.config.max_json_bytes;
    let api = Router::new()
        .route(
            "/v1/collections",
            post(collections::create).get(collections::list),
        )
        .route(
            "/v1/collections/{c}",
            get(collections::get_one).delete(collections::drop_one),
        )
        .route("/v1/collections/{c}/compact", post(collections::compact))
        .route("/v1/collections/{c}/points", post(points::upsert))
        .route(
            "/v1/collections/{c}/points/{id}",
            get(points::get_one).delete(points::delete_one),
        )
        .route(
            "/v1/collections/{c}/search",
            post(search::search_collection),
        )
        .route("/v1/jobs", get(bulk_load::jobs))
        .route("/v1/jobs/{id}", get(bulk_load::job))
        .route("/search", get(search::search_get).post(compat::search_post))
        .route("/images/{c}/{id}", get(images::by_id))
        .route("/image/{*path}", get(images::by_path))
        .route("/health", get(compat::health))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/", get(ops::page))
        .merge(crate::chroma::routes())
        .layer(DefaultBodyLimit::max(json_limit));
    // Bulk-load bodies are streamed to disk under their own (larger) limit.
    let upload = Router::new()
        .route("/v1/collections/{c}/bulk-load", post(bulk_load::bulk_load))
        .layer(DefaultBodyLimit::disable());
    api.merge(upload)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admission::admit,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), remote_guard))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// Serves until `shutdown` resolves; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    // Every acknowledged write is already durable; this makes the periodic
    // durability policy durable too before the process exits.
    tokio::task::spawn_blocking(move || store.sync())
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    Ok(())
}

/// Unknown routes answer the same JSON error shape as everything else.
async fn unknown_route(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {} (see /openapi.json)",
        req.method(),
        req.uri().path()
    ))
}

/// A known route called with a method it does not take: 405 with a JSON body (in Chroma's
/// shape on Chroma's routes), rather than axum's empty one.
async fn method_not_allowed(req: Request) -> Response {
    let message = format!(
        "{} is not allowed on {} (see /openapi.json)",
        method_label(req.method()),
        req.uri().path()
    );
    if req.uri().path().starts_with(crate::chroma::PREFIX) {
        return crate::chroma::method_not_allowed(message).into_response();
    }
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
    .into_response()
}

/// Routes that read although they are POSTed (a query body).
const READ_ONLY_POSTS: [&str; 2] = ["/v1/collections/{c}/search", "/search"];

/// Whether a request may change stored data, decided from the route it matched (`route`, the
/// template, never the raw path: a collection or point may be named `search`) and its method.
/// Unknown routes and methods count as writes, so the key is asked for rather than skipped.
fn is_write(method: &Method, route: Option<&str>) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => false,
        Method::POST => !route.is_some_and(|r| {
            READ_ONLY_POSTS.contains(&r) || crate::chroma::READ_ONLY_POSTS.contains(&r)
        }),
        _ => true,
    }
}

/// The method as a metrics label: the standard ones by name, anything else folded into one
/// value, so made-up methods cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Bearer-token check for write routes (and reads with `--protect-reads`).
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
        let open = matches!(route, Some("/healthz" | "/readyz" | "/health" | "/metrics"))
            || route.is_some_and(|r| crate::chroma::PUBLIC_ROUTES.contains(&r));
        let open = open && matches!(*req.method(), Method::GET | Method::HEAD);
        let needs = !open && (state.config.protect_reads || is_write(req.method(), route));
        if needs {
            // Chroma's client sends its token either way (`chroma_auth_token_transport_header`).
            let headers = req.headers();
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .or_else(|| headers.get("x-chroma-token").and_then(|v| v.to_str().ok()));
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
                // Chroma's client maps its own refusal onto `ChromaAuthError`.
                if req.uri().path().starts_with(crate::chroma::PREFIX) {
                    return crate::chroma::auth_refusal().into_response();
                }
                return ApiError::unauthorized().into_response();
            }
        }
    }
    next.run(req).await
}

/// With `--remote`: writes on a replica answer 405 `read_only_replica`, and on a writer that
/// is fenced or cannot reach its bucket 503 (see `remote_link`).
async fn remote_guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(link) = &state.remote {
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
        // An unknown route is a 404 either way, and an unknown method a 405 with its own body.
        if route.is_some()
            && is_write(req.method(), route)
            && let Some(refusal) = link.refuse_write()
        {
            if req.uri().path().starts_with(crate::chroma::PREFIX) {
                return crate::chroma::refusal(refusal.status, refusal.message).into_response();
            }
            return refusal.into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts requests and observes latency by route template.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    METRICS
        .http_request_duration_seconds
        .with_label_values(&[route.as_str(), method])
        .observe(secs);
    METRICS
        .http_requests_total
        .with_label_values(&[route.as_str(), method, resp.status().as_str()])
        .inc();
    resp
}

/// Runs blocking work (storage, embedding, Parquet) off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}
