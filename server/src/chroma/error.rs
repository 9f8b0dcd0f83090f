//! Errors in Chroma's shape, `{"error": "<Name>", "message": "..."}`: the Chroma client maps
//! the name onto its exception classes (`NotFoundError`, `UniqueConstraintError`, ...), and
//! programs catch those, so the names are Chroma's own.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::registry::RegistryError;
use crate::error::ApiError;

/// An error answered on a Chroma route.
#[derive(Debug, Clone)]
pub struct ChromaError {
    /// HTTP status.
    pub status: StatusCode,
    /// Chroma's error name (the client's exception class).
    pub name: &'static str,
    /// What went wrong, naming the value.
    pub message: String,
}

impl ChromaError {
    /// 404 `NotFoundError`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFoundError", message)
    }

    /// 400 `InvalidArgumentError`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgumentError", message)
    }

    /// 409 `UniqueConstraintError`: the name exists already.
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "UniqueConstraintError", message)
    }

    /// 400 `DuplicateIDError`: one id twice in a batch.
    pub fn duplicate_id(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DuplicateIDError", message)
    }

    /// A vector of another length than the collection's: 400 `InvalidArgumentError` with
    /// Chroma's own message (its server never sends `InvalidDimensionException`).
    pub fn dimension(expected: usize, got: usize) -> Self {
        Self::invalid(format!(
            "Collection expecting embedding with dimension of {expected}, got {got}"
        ))
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Any status and name.
    pub fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            name,
            message: message.into(),
        }
    }
}

impl IntoResponse for ChromaError {
    fn into_response(self) -> Response {
        crate::metrics::METRICS
            .errors_total
            .with_label_values(&[self.name])
            .inc();
        if self.status.is_server_error() {
            tracing::error!(error = self.name, "{}", self.message);
        }
        let body = Json(json!({"error": self.name, "message": self.message}));
        let mut resp = (self.status, body).into_response();
        // A full query batcher or a model still loading: worth retrying shortly.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

/// Errors of the shared layers (storage, model, limits) keep their status; the name is the
/// Chroma class closest to it.
impl From<ApiError> for ChromaError {
    fn from(e: ApiError) -> Self {
        let name = match e.status {
            StatusCode::NOT_FOUND => "NotFoundError",
            StatusCode::CONFLICT => "UniqueConstraintError",
            StatusCode::UNAUTHORIZED => "AuthError",
            StatusCode::PAYLOAD_TOO_LARGE => "InvalidArgumentError",
            StatusCode::SERVICE_UNAVAILABLE => "InternalError",
            s if s.is_client_error() => "InvalidArgumentError",
            _ => "InternalError",
        };
        Self::new(e.status, name, e.message)
    }
}

impl From<glimpse_storage::StorageError> for ChromaError {
    fn from(e: glimpse_storage::StorageError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<RegistryError> for ChromaError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => Self::not_found(m),
            RegistryError::AlreadyExists(m) => Self::exists(m),
            RegistryError::Invalid(m) => Self::invalid(m),
            RegistryError::Io { .. } => Self::internal(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ChromaError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("worker task failed: {e}"))
    }
}

impl From<JsonRejection> for ChromaError {
    fn from(r: JsonRejection) -> Self {
        ApiError::from(r).into()
    }
}

impl From<PathRejection> for ChromaError {
    fn from(r: PathRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

impl From<QueryRejection> for ChromaError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

/// Result alias for Chroma handlers.
pub type ChromaResult<T> = Result<T, ChromaError>;

/// `Json` extractor whose rejections are [`ChromaError`]s.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ChromaError))]
pub struct ChromaJson<T>(pub T);

/// `Path` extractor whose rejections are [`ChromaError`]s.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ChromaError))]
pub struct ChromaPath<T>(pub T);

/// `Query` extractor whose rejections are [`ChromaError`]s.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ChromaError))]
pub struct ChromaQuery<T>(pub T);

/// Runs blocking work (storage) off the async threads.
pub(crate) async fn blocking<T, F>(f: F) -> ChromaResult<T>
where
    F: FnOnce() -> ChromaResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}
