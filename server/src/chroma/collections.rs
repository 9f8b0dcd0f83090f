//! Collection routes: create (or get-or-create), list, count, get by name, modify by id,
//! delete by name.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use glimpse_storage::Collection;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::error::{ChromaError, ChromaJson, ChromaPath, ChromaQuery, ChromaResult, blocking};
use super::registry::{ChromaCollection, NewCollection};
use crate::state::AppState;

/// Body of `POST …/collections`.
#[derive(Debug, Deserialize)]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    configuration: Option<Value>,
    #[serde(default)]
    get_or_create: bool,
}

/// Body of `PUT …/collections/{id}`.
#[derive(Debug, Deserialize)]
pub struct ModifyBody {
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    new_metadata: Option<Map<String, Value>>,
    #[serde(default)]
    new_configuration: Option<Value>,
}

/// Paging of the collection list.
#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

/// The Collection object the client builds its `Collection` from.
pub(super) fn collection_json(c: &ChromaCollection, engine: Option<&Collection>) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "configuration_json": configuration_json(c),
        "metadata": c.metadata,
        "schema": null,
        "dimension": engine.map(Collection::dim),
        "tenant": c.tenant,
        "database": c.database,
        "version": 0,
        "log_position": 0,
    })
}

/// The configuration as the client set it, with the space in force filled in (the client
/// refuses a null `configuration_json`).
fn configuration_json(c: &ChromaCollection) -> Value {
    let mut cfg = match &c.configuration {
        Value::Object(o) => Value::Object(o.clone()),
        _ => json!({"hnsw": null, "spann": null, "embedding_function": null}),
    };
    let hnsw = &mut cfg["hnsw"];
    if hnsw.is_null() {
        *hnsw = json!({
            "space": c.space,
            "ef_construction": 100,
            "ef_search": 100,
            "max_neighbors": 16,
            "resize_factor": 1.2,
            "sync_threshold": 1000,
        });
    } else if let Some(h) = hnsw.as_object_mut() {
        h.insert("space".into(), Value::String(c.space.clone()));
    }
    cfg
}

/// The space asked for: the configuration's (`hnsw.space`, `spann.space`) first, then the
/// `hnsw:space` metadata key, then Chroma's default, `l2`.
fn requested_space(
    configuration: Option<&Value>,
    metadata: Option<&Map<String, Value>>,
) -> ChromaResult<String> {
    let from_cfg = configuration.and_then(|c| {
        ["hnsw", "spann"].iter().find_map(|k| {
            c.get(k)
                .and_then(|s| s.get("space"))
                .and_then(Value::as_str)
        })
    });
    let from_meta = metadata
        .and_then(|m| m.get("hnsw:space"))
        .and_then(Value::as_str);
    let space = from_cfg.or(from_meta).unwrap_or("l2");
    match space {
        "l2" | "cosine" | "ip" => Ok(space.to_string()),
        other => Err(ChromaError::invalid(format!(
            "space must be one of l2, cosine, ip; got {:?}",
            super::wire::cut(other)
        ))),
    }
}

/// `POST …/collections`.
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database)): ChromaPath<(String, String)>,
    ChromaJson(body): ChromaJson<CreateBody>,
) -> ChromaResult<Json<Value>> {
    let space = requested_space(body.configuration.as_ref(), body.metadata.as_ref())?;
    blocking(move || {
        state.chroma.adopt(&state.store)?;
        let store = state.store.clone();
        let c = state.chroma.create_collection(
            NewCollection {
                tenant,
                database,
                name: body.name,
                metadata: body.metadata,
                configuration: body.configuration.unwrap_or(Value::Null),
                space,
                get_or_create: body.get_or_create,
            },
            |name| store.collection(name).is_some(),
        )?;
        let engine = state.store.collection(&c.storage);
        Ok(Json(collection_json(&c, engine.as_deref())))
    })
    .await
}

/// `GET …/collections?limit=&offset=`.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database)): ChromaPath<(String, String)>,
    ChromaQuery(page): ChromaQuery<Page>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        state.chroma.adopt(&state.store)?;
        let all = state.chroma.list(&tenant, &database)?;
        let out: Vec<Value> = all
            .iter()
            .skip(page.offset.unwrap_or(0))
            .take(page.limit.unwrap_or(usize::MAX))
            .map(|c| collection_json(c, state.store.collection(&c.storage).as_deref()))
            .collect();
        Ok(Json(Value::Array(out)))
    })
    .await
}

/// `GET …/collections_count`.
pub(super) async fn count(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database)): ChromaPath<(String, String)>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        state.chroma.adopt(&state.store)?;
        Ok(Json(json!(state.chroma.list(&tenant, &database)?.len())))
    })
    .await
}

/// `GET …/collections/{name}`.
pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database, name)): ChromaPath<(String, String, String)>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        state.chroma.adopt(&state.store)?;
        let c = state.chroma.by_name(&tenant, &database, &name)?;
        let engine = state.store.collection(&c.storage);
        Ok(Json(collection_json(&c, engine.as_deref())))
    })
    .await
}

/// `GET …/collections/by-id/{id}`.
pub(super) async fn get_by_id(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database, id)): ChromaPath<(String, String, String)>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        let target = super::resolve(&state, &tenant, &database, &id)?;
        Ok(Json(collection_json(
            &target.entry,
            target.engine.as_deref(),
        )))
    })
    .await
}

/// `PUT …/collections/{id}`: rename, replace metadata, merge configuration. The engine
/// collection keeps its name (see `docs/chroma.md`).
pub(super) async fn modify(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database, id)): ChromaPath<(String, String, String)>,
    ChromaJson(body): ChromaJson<ModifyBody>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        let target = super::resolve(&state, &tenant, &database, &id)?;
        if let Some(m) = &body.new_metadata
            && m.contains_key("hnsw:space")
            && requested_space(None, Some(m))? != target.entry.space
        {
            return Err(ChromaError::invalid(
                "Changing the distance function of a collection once it is created is not \
                 supported currently.",
            ));
        }
        let id: Uuid = target.entry.id;
        state
            .chroma
            .modify(id, body.new_name, body.new_metadata, body.new_configuration)?;
        Ok(Json(json!({})))
    })
    .await
}

/// `DELETE …/collections/{name}`: the Chroma collection and its engine collection.
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    ChromaPath((tenant, database, name)): ChromaPath<(String, String, String)>,
) -> ChromaResult<Json<Value>> {
    blocking(move || {
        state.chroma.adopt(&state.store)?;
        let c = state.chroma.delete_collection(&tenant, &database, &name)?;
        state.store.drop_collection(&c.storage)?;
        Ok(Json(json!({})))
    })
    .await
}
