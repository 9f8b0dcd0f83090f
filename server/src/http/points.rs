//! `/v1/collections/{c}/points`: acknowledged-when-durable upserts, point
//! reads with the exact stored vector, deletes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use glimpse_storage::{MAX_ID_BYTES, MetaValue, Point};
use serde::Deserialize;
use serde_json::{Value, json};

use super::blocking;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::state::AppState;

/// Body of an upsert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    points: Vec<PointIn>,
}

/// One point as clients send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointIn {
    id: Value,
    vector: Vec<f64>,
    #[serde(default)]
    image_path: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

/// Accepts a string id or an integer id (as its decimal string).
pub(crate) fn id_from_json(v: &Value) -> Result<String, ApiError> {
    let id = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        other => {
            return Err(ApiError::invalid(
                "invalid_id",
                format!("id must be a string or an integer, got {other}"),
            ));
        }
    };
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::invalid(
            "invalid_id",
            format!(
                "id must be 1 to {MAX_ID_BYTES} bytes, got {} bytes",
                id.len()
            ),
        ));
    }
    Ok(id)
}

/// Converts client floats to f32, refusing values that are not finite in f32.
pub(crate) fn vector_from_json(v: &[f64], what: &str) -> Result<Vec<f32>, ApiError> {
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = x as f32;
            if f.is_finite() {
                Ok(f)
            } else {
                Err(ApiError::invalid(
                    "invalid_vector",
                    format!("{what}: element {i} ({x}) is not a finite 32-bit float"),
                ))
            }
        })
        .collect()
}

fn metadata_from_json(
    id: &str,
    m: Option<serde_json::Map<String, Value>>,
) -> Result<BTreeMap<String, MetaValue>, ApiError> {
    let mut out = BTreeMap::new();
    for (k, v) in m.unwrap_or_default() {
        let mv = match v {
            Value::String(s) => MetaValue::Str(s),
            Value::Bool(b) => MetaValue::Bool(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => MetaValue::Int(i),
                None => MetaValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Null => continue,
            other => {
                return Err(ApiError::invalid(
                    "invalid_metadata",
                    format!(
                        "point {id:?}: metadata {k:?} must be a string, number or bool, got {other}"
                    ),
                ));
            }
        };
        out.insert(k, mv);
    }
    Ok(out)
}

/// JSON form of a stored metadata value.
pub(crate) fn meta_json(m: &BTreeMap<String, MetaValue>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| {
                let j = match v {
                    MetaValue::Str(s) => json!(s),
                    MetaValue::Int(i) => json!(i),
                    MetaValue::Float(f) => json!(f),
                    MetaValue::Bool(b) => json!(b),
                };
                (k.clone(), j)
            })
            .collect(),
    )
}

pub(super) async fn upsert(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpsertBody>,
) -> ApiResult<Json<Value>> {
    let coll = state.collection(&name)?;
    if body.points.is_empty() {
        return Err(ApiError::invalid("empty_batch", "`points` is empty"));
    }
    let mut points = Vec::with_capacity(body.points.len());
    for p in body.points {
        let id = id_from_json(&p.id)?;
        let vector = vector_from_json(&p.vector, &format!("point {id:?}"))?;
        if vector.len() != coll.dim() {
            return Err(ApiError::invalid(
                "dimension_mismatch",
                format!(
                    "point {id:?} has {} dimensions, collection {name:?} has {}",
                    vector.len(),
                    coll.dim()
                ),
            ));
        }
        let metadata = metadata_from_json(&id, p.metadata)?;
        points.push(Point {
            id,
            vector,
            image_path: p.image_path,
            image_bytes: None,
            metadata,
        });
    }
    blocking(move || {
        let stats = coll.upsert(points).map_err(ApiError::from)?;
        Ok(Json(
            json!({"inserted": stats.inserted, "replaced": stats.replaced}),
        ))
    })
    .await
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let coll = state.collection(&name)?;
    blocking(move || {
        let p = coll
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("point {id:?} not found in {name:?}")))?;
        Ok(Json(json!({
            "id": p.id,
            "vector": p.vector,
            "image_path": p.image_path,
            "has_image_bytes": p.image_bytes.is_some(),
            "metadata": meta_json(&p.metadata),
        })))
    })
    .await
}

pub(super) async fn delete_one(
    State(state): State<Arc<AppState>>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let coll = state.collection(&name)?;
    blocking(move || {
        let n = coll
            .delete(std::slice::from_ref(&id))
            .map_err(ApiError::from)?;
        if n == 0 {
            return Err(ApiError::not_found(format!(
                "point {id:?} not found in {name:?}"
            )));
        }
        Ok(Json(json!({"deleted": id})))
    })
    .await
}
