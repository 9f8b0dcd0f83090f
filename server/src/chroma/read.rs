//! Record reads: `count`, `get` (by ids, filters, pages) and `query` (nearest neighbours, with
//! Chroma's distances: `1 − cos` for cosine, squared L2 for l2, `1 − dot` for ip).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use glimpse_index::{Metric, exact_search};
use glimpse_storage::{Collection, Filter, MAX_K, Point, SearchRequest};
use serde_json::{Value, json};

use super::error::{ChromaError, ChromaJson, ChromaPath, ChromaResult, blocking};
use super::wire::{
    DOCUMENT_KEY, GetBody, Include, QueryBody, URI_KEY, check_ids, metadata_out, reserved_out,
    vector_out,
};
use super::{filters, resolve};
use crate::state::AppState;

/// Most records one `get` returns when it names no `limit`: past it the client is asked to
/// page, rather than the server building an answer of unbounded size.
const MAX_GET_RECORDS: usize = 100_000;
/// Most queries in one `query` call.
const MAX_QUERIES: usize = 1_000;

type RecordPath = ChromaPath<(String, String, String)>;

/// `GET …/{id}/count` → the number of records.
pub(super) async fn count(
    State(state): State<Arc<AppState>>,
    ChromaPath((t, d, c)): RecordPath,
) -> ChromaResult<Json<Value>> {
    let target = resolve(&state, &t, &d, &c)?;
    Ok(Json(json!(target.engine.map_or(0, |e| e.len()))))
}

/// `POST …/{id}/get`.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    ChromaPath((t, d, c)): RecordPath,
    ChromaJson(body): ChromaJson<GetBody>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        let target = resolve(&state, &t, &d, &c)?;
        let (inc, names) = Include::parse(body.include.as_deref(), false)?;
        let filter = filters::build(body.where_.as_ref(), body.where_document.as_ref())?;
        let offset = body.offset.unwrap_or(0);
        let points = match target.engine {
            None => Vec::new(),
            Some(engine) => fetch(&engine, body.ids, filter.as_ref(), offset, body.limit)?,
        };
        let mut out = json!({
            "ids": points.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            "embeddings": null, "metadatas": null, "documents": null, "uris": null,
            "include": names,
        });
        fill_fields(&mut out, &points.iter().collect::<Vec<_>>(), inc);
        Ok(Json(out))
    })
    .await
}

/// The points a `get` returns: the ids asked for that exist and match (in the order asked),
/// or a page of the matching records.
fn fetch(
    engine: &Collection,
    ids: Option<Vec<String>>,
    filter: Option<&Filter>,
    offset: usize,
    limit: Option<usize>,
) -> ChromaResult<Vec<Point>> {
    if let Some(ids) = ids {
        check_ids(&ids, usize::MAX)?;
        return Ok(ids
            .iter()
            .filter_map(|id| engine.get(id))
            .filter(|p| filter.is_none_or(|f| f.matches(&p.metadata)))
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect());
    }
    match limit {
        Some(l) => Ok(engine.scan(filter, offset, l.min(MAX_GET_RECORDS))),
        None => {
            let points = engine.scan(filter, offset, MAX_GET_RECORDS + 1);
            if points.len() > MAX_GET_RECORDS {
                return Err(ChromaError::invalid(format!(
                    "more than {MAX_GET_RECORDS} records match; page through them with limit \
                     and offset"
                )));
            }
            Ok(points)
        }
    }
}

/// Fills the included fields of an answer, one entry per point.
fn fill_fields(out: &mut Value, points: &[&Point], inc: Include) {
    let list = |f: &dyn Fn(&Point) -> Value| Value::Array(points.iter().map(|p| f(p)).collect());
    if inc.embeddings {
        out["embeddings"] = list(&|p| vector_out(&p.vector));
    }
    if inc.metadatas {
        out["metadatas"] = list(&|p| metadata_out(&p.metadata));
    }
    if inc.documents {
        out["documents"] = list(&|p| reserved_out(&p.metadata, DOCUMENT_KEY));
    }
    if inc.uris {
        out["uris"] = list(&|p| reserved_out(&p.metadata, URI_KEY));
    }
}

/// Chroma's distance (ascending, 0 for the query itself) from an engine score.
fn distance(metric: Metric, score: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => 1.0 - score,
        Metric::L2 => score,
    }
}

/// `POST …/{id}/query`: one result list per query vector (or, with a CLIP model loaded,
/// per query text).
pub(super) async fn query(
    State(state): State<Arc<AppState>>,
    ChromaPath((t, d, c)): RecordPath,
    ChromaJson(body): ChromaJson<QueryBody>,
) -> ChromaResult<Json<Value>> {
    let (inc, names) = Include::parse(body.include.as_deref(), true)?;
    let filter = filters::build(body.where_.as_ref(), body.where_document.as_ref())?;
    let k = body.n_results.unwrap_or(10);
    if k == 0 {
        return Err(ChromaError::invalid("n_results must be a positive integer"));
    }
    let k = k.min(MAX_K);
    let queries = query_vectors(&state, body.query_embeddings, body.query_texts).await?;
    if queries.len() > MAX_QUERIES {
        return Err(ChromaError::invalid(format!(
            "at most {MAX_QUERIES} queries per call, got {}",
            queries.len()
        )));
    }
    if let Some(ids) = &body.ids {
        check_ids(ids, usize::MAX)?;
    }
    blocking(move || {
        let target = resolve(&state, &t, &d, &c)?;
        let mut results: Vec<Vec<(Point, f32)>> = Vec::with_capacity(queries.len());
        if let Some(engine) = &target.engine {
            for q in &queries {
                if q.len() != engine.dim() {
                    return Err(ChromaError::dimension(engine.dim(), q.len()));
                }
                results.push(match &body.ids {
                    Some(ids) => among_ids(engine, ids, q, k, filter.as_ref()),
                    None => nearest(engine, q, k, filter.clone(), inc)?,
                });
            }
        } else {
            results.resize_with(queries.len(), Vec::new);
        }
        let mut out = json!({
            "ids": results.iter().map(|r| r.iter().map(|(p, _)| p.id.clone()).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "embeddings": null, "metadatas": null, "documents": null, "uris": null,
            "distances": null,
            "include": names,
        });
        // One list per query for every included field.
        let per_query: Vec<Value> = results
            .iter()
            .map(|r| {
                let points: Vec<&Point> = r.iter().map(|(p, _)| p).collect();
                let mut one = json!({});
                fill_fields(&mut one, &points, inc);
                one
            })
            .collect();
        for field in ["embeddings", "metadatas", "documents", "uris"] {
            if per_query.iter().any(|q| q.get(field).is_some()) {
                out[field] = Value::Array(per_query.iter().map(|q| q[field].clone()).collect());
            }
        }
        if inc.distances {
            out["distances"] = json!(
                results
                    .iter()
                    .map(|r| r.iter().map(|(_, dist)| *dist).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            );
        }
        Ok(Json(out))
    })
    .await
}

/// The query vectors: sent, or embedded from texts by the server's model.
async fn query_vectors(
    state: &Arc<AppState>,
    embeddings: Option<Vec<super::wire::WireEmbedding>>,
    texts: Option<Vec<String>>,
) -> ChromaResult<Vec<Vec<f32>>> {
    match (embeddings, texts) {
        (Some(e), None) => e
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.decode(i))
            .collect(),
        (None, Some(texts)) => {
            if texts.len() > MAX_QUERIES {
                return Err(ChromaError::invalid(format!(
                    "at most {MAX_QUERIES} queries per call, got {}",
                    texts.len()
                )));
            }
            let model = state.model()?;
            let limit = state.config.max_text_chars;
            let mut out = Vec::with_capacity(texts.len());
            for t in texts {
                if t.trim().is_empty() || t.chars().count() > limit {
                    return Err(ChromaError::invalid(format!(
                        "query texts must be 1 to {limit} characters"
                    )));
                }
                let m = model.clone();
                let (v, _) =
                    blocking(move || m.embed_text(t.trim()).map_err(ChromaError::from)).await?;
                out.push(v.to_vec());
            }
            Ok(out)
        }
        (Some(_), Some(_)) => Err(ChromaError::invalid(
            "give query_embeddings or query_texts, not both",
        )),
        (None, None) => Err(ChromaError::invalid(
            "query needs query_embeddings (or query_texts when the server has a CLIP model)",
        )),
    }
}

/// Top `k` through the collection's index, with the stored points for the included fields.
fn nearest(
    engine: &Collection,
    q: &[f32],
    k: usize,
    filter: Option<Filter>,
    inc: Include,
) -> ChromaResult<Vec<(Point, f32)>> {
    let req = SearchRequest {
        k,
        filter,
        ..SearchRequest::default()
    };
    let hits = engine.search(q, &req)?;
    let metric = engine.metric();
    Ok(hits
        .into_iter()
        .filter_map(|h| {
            let dist = distance(metric, h.score);
            if inc.embeddings {
                // The point may have been deleted since the search: leave it out.
                return engine.get(&h.id).map(|p| (p, dist));
            }
            let p = Point {
                id: h.id,
                image_path: h.image_path,
                metadata: h.metadata,
                ..Point::default()
            };
            Some((p, dist))
        })
        .collect())
}

/// Exact top `k` among the given ids (Chroma's `query(ids=...)`).
fn among_ids(
    engine: &Collection,
    ids: &[String],
    q: &[f32],
    k: usize,
    filter: Option<&Filter>,
) -> Vec<(Point, f32)> {
    let points: Vec<Point> = ids
        .iter()
        .filter_map(|id| engine.get(id))
        .filter(|p| filter.is_none_or(|f| f.matches(&p.metadata)))
        .collect();
    let dim = engine.dim();
    let flat: Vec<f32> = points
        .iter()
        .flat_map(|p| p.vector.iter().copied())
        .collect();
    let metric = engine.metric();
    exact_search(&flat, dim, metric, q, k, None)
        .into_iter()
        .filter_map(|n| {
            let p = points.get(n.row as usize)?.clone();
            Some((p, distance(metric, n.score)))
        })
        .collect()
}
