//! Image serving: `GET /images/{collection}/{id}` (stored bytes or a file
//! under `--images-dir`) and the original pipeline's `GET /image/{path}`.
//! Nothing is ever read outside `--images-dir`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::blocking;
use crate::error::{ApiError, ApiPath, ApiResult};
use crate::paths::{PathError, resolve_inside};
use crate::state::AppState;

/// Content type from the first bytes of an image.
pub fn sniff_content_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => "image/webp",
        [b'B', b'M', ..] => "image/bmp",
        _ => "application/octet-stream",
    }
}

fn image_response(bytes: Vec<u8>) -> Response {
    let ct = sniff_content_type(&bytes);
    let mut resp = (StatusCode::OK, Body::from(bytes)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    // Stored images never change under an id unless re-upserted; an hour of
    // caching keeps the result grid fast without pinning stale images long.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn read_under_images_dir(state: &AppState, user_path: &str) -> Result<Vec<u8>, ApiError> {
    let Some(root) = &state.config.images_dir else {
        return Err(ApiError::not_found(
            "no --images-dir is configured, so image files are not served",
        ));
    };
    let path = resolve_inside(root, user_path).map_err(|e| match e {
        PathError::NotFound(_) => ApiError::not_found(e.to_string()),
        _ => ApiError::invalid("invalid_path", e.to_string()),
    })?;
    if !path.is_file() {
        return Err(ApiError::not_found(format!("{user_path:?} is not a file")));
    }
    std::fs::read(&path).map_err(|e| ApiError::internal(format!("reading image: {e}")))
}

pub(super) async fn by_id(
    State(state): State<Arc<AppState>>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let coll = state.collection(&name)?;
    let st = state.clone();
    let bytes = blocking(move || {
        let p = coll
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("point {id:?} not found in {name:?}")))?;
        if let Some(b) = coll.image_bytes(&id) {
            return Ok(b);
        }
        let path = p
            .image_path
            .ok_or_else(|| ApiError::not_found(format!("point {id:?} has no image")))?;
        read_under_images_dir(&st, &path)
    })
    .await?;
    Ok(image_response(bytes))
}

pub(super) async fn by_path(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<String>,
) -> ApiResult<Response> {
    let st = state.clone();
    let bytes = blocking(move || read_under_images_dir(&st, &path)).await?;
    Ok(image_response(bytes))
}
