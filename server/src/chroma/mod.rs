//! ChromaDB's HTTP API (v2, as spoken by the `chromadb` 1.5 Python client), served beside
//! `/v1` on the same port and over the same collections, so programs written against Chroma
//! switch by changing only the host. `docs/chroma.md` says what is supported and what
//! differs.
//!
//! | module | job |
//! | --- | --- |
//! | `registry` | tenants, databases, collection UUIDs and metadata (`chroma.json`) |
//! | `system` | identity, heartbeat, version, pre-flight, tenants, databases |
//! | `collections` | create, list, count, get, modify, delete collections |
//! | `write` | `add`, `upsert`, `update`, `delete` |
//! | `read` | `count`, `get`, `query` |
//! | `wire` | request bodies, embeddings, metadata, documents and URIs |
//! | `filters` | `where` and `where_document` |
//! | `error` | errors in Chroma's shape, with its names |

mod collections;
mod error;
mod filters;
mod read;
pub mod registry;
mod system;
mod wire;
mod write;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use glimpse_storage::Collection;
use uuid::Uuid;

use self::error::{ChromaError, ChromaResult};
use self::registry::ChromaCollection;
use crate::state::AppState;

/// Prefix of every Chroma route.
pub const PREFIX: &str = "/api/v2/";

/// Routes a Chroma server answers without a token, as a `chromadb` server with token auth
/// does.
pub const PUBLIC_ROUTES: [&str; 4] = [
    "/api/v2/heartbeat",
    "/api/v2/version",
    "/api/v2/pre-flight-checks",
    "/api/v2/healthcheck",
];

/// A request without the right token, as Chroma refuses it: 403 `AuthError` (the client
/// raises `ChromaAuthError`).
pub fn auth_refusal() -> ChromaError {
    ChromaError::new(axum::http::StatusCode::FORBIDDEN, "AuthError", "Forbidden")
}

/// A write refused by this server's role (a read-only replica, a fenced writer), in Chroma's
/// shape so its client raises an error naming the reason.
pub fn refusal(status: axum::http::StatusCode, message: String) -> ChromaError {
    ChromaError::new(status, "ChromaError", message)
}

/// A known Chroma route called with a method it does not take.
pub fn method_not_allowed(message: String) -> ChromaError {
    ChromaError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "ChromaError",
        message,
    )
}

/// Prefix of every collection route.
const COLLECTIONS: &str = "/api/v2/tenants/{tenant}/databases/{database}/collections";

/// Route templates that read although they are POSTed (auth treats them as reads).
pub const READ_ONLY_POSTS: [&str; 2] = [
    "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/get",
    "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/query",
];

/// The Chroma routes, to be merged into the main router (under its body limit).
pub fn routes() -> Router<Arc<AppState>> {
    let c = |tail: &str| format!("{COLLECTIONS}{tail}");
    Router::new()
        .route("/api/v2/auth/identity", get(system::identity))
        .route("/api/v2/heartbeat", get(system::heartbeat))
        .route("/api/v2/healthcheck", get(system::healthcheck))
        .route("/api/v2/version", get(system::version))
        .route("/api/v2/pre-flight-checks", get(system::pre_flight))
        .route("/api/v2/reset", post(system::reset))
        .route("/api/v2/tenants", post(system::create_tenant))
        .route("/api/v2/tenants/{tenant}", get(system::get_tenant))
        .route(
            "/api/v2/tenants/{tenant}/databases",
            post(system::create_database).get(system::list_databases),
        )
        .route(
            "/api/v2/tenants/{tenant}/databases/{database}",
            get(system::get_database).delete(system::delete_database),
        )
        .route(
            COLLECTIONS,
            post(collections::create).get(collections::list),
        )
        .route(
            "/api/v2/tenants/{tenant}/databases/{database}/collections_count",
            get(collections::count),
        )
        .route(
            &c("/{collection}"),
            get(collections::get_one)
                .put(collections::modify)
                .delete(collections::delete),
        )
        .route(&c("/by-id/{collection}"), get(collections::get_by_id))
        .route(&c("/{collection}/add"), post(write::add))
        .route(&c("/{collection}/upsert"), post(write::upsert))
        .route(&c("/{collection}/update"), post(write::update))
        .route(&c("/{collection}/delete"), post(write::delete))
        .route(&c("/{collection}/count"), get(read::count))
        .route(&c("/{collection}/get"), post(read::get))
        .route(&c("/{collection}/query"), post(read::query))
}

/// A Chroma collection addressed by UUID in a record route, with its engine collection when
/// it has one (none before the first add).
pub(crate) struct Target {
    /// The registry entry.
    pub entry: ChromaCollection,
    /// Its engine collection.
    pub engine: Option<Arc<Collection>>,
}

/// Resolves `{tenant}/{database}/{collection}` of a record route.
pub(crate) fn resolve(
    state: &AppState,
    tenant: &str,
    database: &str,
    id: &str,
) -> ChromaResult<Target> {
    let uuid = Uuid::parse_str(id).map_err(|_| {
        ChromaError::invalid(format!("collection id {:?} is not a UUID", wire::cut(id)))
    })?;
    let entry = state
        .chroma
        .by_id(uuid)
        .filter(|c| c.tenant == tenant && c.database == database)
        .ok_or_else(|| ChromaError::not_found(format!("Collection [{uuid}] does not exist.")))?;
    let engine = state.store.collection(&entry.storage);
    Ok(Target { entry, engine })
}
