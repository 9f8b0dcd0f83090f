//! Record writes: `add` (new ids only), `upsert` (insert or replace), `update` (merge into
//! existing records) and `delete` (by ids, `where` and `where_document`).
//!
//! A Chroma collection has no dimension until its first add; that add creates the engine
//! collection with the dimension of its embeddings and the metric of the collection's space.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use glimpse_storage::{Collection, Point};
use serde_json::{Value, json};

use super::error::{ChromaError, ChromaJson, ChromaPath, ChromaResult, blocking};
use super::registry::RegistryError;
use super::system::max_batch_size;
use super::wire::{
    DeleteBody, MetaChange, RecordsBody, apply_record, check_ids, check_len, metadata_in,
};
use super::{Target, filters, resolve};
use crate::state::AppState;

/// What a write does with ids that exist already.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// New ids are inserted; existing ones are left as they are.
    Add,
    /// New ids are inserted; existing ones are replaced by the record sent.
    Upsert,
    /// Existing ids take the fields sent (metadata merged key by key, `null` removing a key);
    /// missing ids are skipped.
    Update,
}

type RecordPath = ChromaPath<(String, String, String)>;

/// `POST …/{id}/add` → 201 `{}`.
pub(super) async fn add(
    State(state): State<Arc<AppState>>,
    ChromaPath((t, d, c)): RecordPath,
    ChromaJson(body): ChromaJson<RecordsBody>,
) -> ChromaResult<(StatusCode, Json<Value>)> {
    blocking(move || write_records(&state, &t, &d, &c, body, Mode::Add)).await?;
    Ok((StatusCode::CREATED, Json(json!({}))))
}

/// `POST …/{id}/upsert` → `{}`.
pub(super) async fn upsert(
    State(state): State<Arc<AppState>>,
    ChromaPath((t, d, c)): RecordPath,
    ChromaJson(body): ChromaJson<RecordsBody>,
) -> ChromaResult<Json<Value>> {
    blocking(move || write_records(&state, &t, &d, &c, body, Mode::Upsert)).await?;
    Ok(Json(json!({})))
}

/// `POST …/{id}/update` → `{}`.
pub(super) async fn update(
    State(state): State<Arc<AppState>>,
    ChromaPath((t, d, c)): RecordPath,
    ChromaJson(body): ChromaJson<RecordsBody>,
) -> ChromaResult<Json<Value>> {
    blocking(move || write_records(&state, &t, &d, &c, body, Mode::Update)).await?;
    Ok(Json(json!({})))
}

fn write_records(
    state: &AppState,
    tenant: &str,
    database: &str,
    id: &str,
    mut body: RecordsBody,
    mode: Mode,
) -> ChromaResult<()> {
    let target = resolve(state, tenant, database, id)?;
    let n = body.ids.len();
    check_ids(&body.ids, max_batch_size(state))?;
    check_len("embeddings", &body.embeddings, n)?;
    check_len("metadatas", &body.metadatas, n)?;
    check_len("documents", &body.documents, n)?;
    check_len("uris", &body.uris, n)?;
    let vectors: Vec<Option<Vec<f32>>> = match body.embeddings.take() {
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.map(|e| e.decode(i)).transpose())
            .collect::<ChromaResult<_>>()?,
        None => vec![None; n],
    };
    if mode != Mode::Update
        && let Some(i) = vectors.iter().position(Option::is_none)
    {
        return Err(ChromaError::invalid(format!(
            "record #{i} has no embedding: Glimpse stores the embeddings the client sends \
             (give the collection an embedding function, or pass embeddings)"
        )));
    }
    if n == 0 {
        return Ok(());
    }
    let (engine, created) = match (target.engine.clone(), mode) {
        (Some(e), _) => (e, false),
        // Nothing exists yet, so an update has nothing to change.
        (None, Mode::Update) => return Ok(()),
        (None, _) => (materialize(state, &target, &vectors)?, true),
    };
    let result = write_points(&engine, body, vectors, mode);
    if result.is_err() && created {
        // A refused first add must not fix the collection's dimension.
        state.chroma.unmaterialize(target.entry.id, || {
            if !engine.is_empty() {
                return Ok(false);
            }
            state
                .store
                .drop_collection(engine.name())
                .map_err(|e| RegistryError::Io {
                    path: state.store.path().join("collections").join(engine.name()),
                    reason: e.to_string(),
                })
        })?;
    }
    result
}

/// Validates the records against the engine collection and writes them in one batch.
fn write_points(
    engine: &Collection,
    body: RecordsBody,
    mut vectors: Vec<Option<Vec<f32>>>,
    mode: Mode,
) -> ChromaResult<()> {
    let n = body.ids.len();
    if let Some(v) = vectors.iter().flatten().find(|v| v.len() != engine.dim()) {
        return Err(ChromaError::dimension(engine.dim(), v.len()));
    }
    let mut metadatas = body.metadatas.map(|m| m.into_iter());
    let mut documents = body.documents.map(|d| d.into_iter());
    let mut uris = body.uris.map(|u| u.into_iter());
    let mut points = Vec::with_capacity(n);
    for (i, record_id) in body.ids.into_iter().enumerate() {
        let meta = metadatas.as_mut().and_then(Iterator::next).flatten();
        // A null document or URI leaves the stored one as it is.
        let document = documents.as_mut().and_then(Iterator::next).flatten();
        let uri = uris.as_mut().and_then(Iterator::next).flatten();
        let changes = meta
            .map(metadata_in)
            .transpose()
            .map_err(|e| ChromaError::invalid(format!("record #{i}: {}", e.message)))?;
        if mode == Mode::Add
            && let Some((key, _)) = changes
                .iter()
                .flatten()
                .find(|(_, c)| matches!(c, MetaChange::Remove))
        {
            return Err(ChromaError::invalid(format!(
                "record #{i}: metadata value of {:?} is null; null removes a key in update and \
                 upsert only",
                super::wire::cut(key)
            )));
        }
        let vector = vectors[i].take();
        let existing = engine.get(&record_id);
        let point = match (existing, mode) {
            // Chroma keeps the record an add names again, untouched.
            (Some(_), Mode::Add) => continue,
            // Upsert and update merge into the stored record: the fields sent replace
            // theirs, metadata key by key.
            (Some(mut p), Mode::Upsert | Mode::Update) => {
                if let Some(v) = vector {
                    p.vector = v;
                }
                apply_record(&mut p, changes, document, uri);
                p
            }
            (None, Mode::Update) => continue,
            (None, Mode::Add | Mode::Upsert) => {
                // A fresh record: null metadata values are simply absent.
                let changes = changes.map(|c| {
                    c.into_iter()
                        .filter(|(_, c)| matches!(c, MetaChange::Set(_)))
                        .collect()
                });
                let mut p = Point {
                    id: record_id,
                    vector: vector.unwrap_or_default(),
                    ..Point::default()
                };
                apply_record(&mut p, changes, document, uri);
                p
            }
        };
        points.push(point);
    }
    engine.upsert(points)?;
    Ok(())
}

/// Creates the engine collection at the first add, with the dimension of its embeddings.
fn materialize(
    state: &AppState,
    target: &Target,
    vectors: &[Option<Vec<f32>>],
) -> ChromaResult<Arc<Collection>> {
    let dim = vectors.iter().flatten().map(Vec::len).next().unwrap_or(0);
    if let Some((i, v)) = vectors
        .iter()
        .flatten()
        .enumerate()
        .find(|(_, v)| v.len() != dim)
    {
        return Err(ChromaError::invalid(format!(
            "record #{i} has dimension {}, record #0 has {dim}: all embeddings of a batch have \
             one dimension",
            v.len()
        )));
    }
    let engine = state
        .store
        .create_collection(&target.entry.storage, dim, target.entry.metric())
        .map_err(|e| match e {
            glimpse_storage::StorageError::CollectionMismatch { dim: have, .. } => {
                ChromaError::dimension(have, dim)
            }
            other => other.into(),
        })?;
    state.chroma.set_materialized(target.entry.id)?;
    Ok(engine)
}

/// `POST …/{id}/delete` → `{"deleted": n}`.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    ChromaPath((t, d, c)): RecordPath,
    ChromaJson(body): ChromaJson<DeleteBody>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        let target = resolve(&state, &t, &d, &c)?;
        let filter = filters::build(body.where_.as_ref(), body.where_document.as_ref())?;
        if let Some(ids) = &body.ids {
            check_ids(ids, usize::MAX)?;
        }
        let Some(engine) = target.engine else {
            return Ok(Json(json!({"deleted": 0})));
        };
        let ids: Vec<String> = match (body.ids, &filter) {
            (Some(ids), None) => ids,
            (Some(ids), Some(f)) => ids
                .into_iter()
                .filter(|id| engine.get(id).is_some_and(|p| f.matches(&p.metadata)))
                .collect(),
            (None, Some(f)) => engine.scan_ids(Some(f), 0, usize::MAX),
            (None, None) => {
                return Err(ChromaError::invalid(
                    "delete needs ids, where or where_document; to empty a collection, delete \
                     it",
                ));
            }
        };
        let deleted = engine.delete(&ids)?;
        Ok(Json(json!({ "deleted": deleted })))
    })
    .await
}
