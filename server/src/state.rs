//! What every handler shares.

use std::sync::Arc;

use glimpse_storage::{Collection, Store};

use crate::chroma::registry::Registry;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::jobs::JobRegistry;
use crate::model::Model;
use crate::model_slot::ModelSlot;

/// Shared state of a running server.
pub struct AppState {
    /// The storage engine.
    pub store: Arc<Store>,
    /// The CLIP model: absent (`--model none`), loading in the background, ready or failed.
    pub model: Arc<ModelSlot>,
    /// Limits, roots and auth.
    pub config: ServerConfig,
    /// Async bulk-load jobs.
    pub jobs: JobRegistry,
    /// Permits for heavy requests (see `http::admission`).
    pub heavy: Arc<tokio::sync::Semaphore>,
    /// The Chroma API's tenants, databases and collection UUIDs.
    pub chroma: Arc<Registry>,
    /// The link to object storage (`--remote`), if any.
    pub remote: Option<crate::remote_link::RemoteLink>,
}

impl AppState {
    /// Looks up a collection or answers 404 naming it.
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>, ApiError> {
        self.store
            .collection(name)
            .ok_or_else(|| ApiError::not_found(format!("collection {name:?} does not exist")))
    }

    /// The collection a route without an explicit one uses: `--collection`
    /// when set, else the only collection there is.
    pub fn default_collection(&self, explicit: Option<&str>) -> Result<Arc<Collection>, ApiError> {
        if let Some(name) = explicit.or(self.config.default_collection.as_deref()) {
            return self.collection(name);
        }
        let all = self.store.list();
        match all.len() {
            0 => Err(ApiError::not_found(
                "there is no collection yet: bulk-load some data first",
            )),
            1 => self.collection(&all[0].name),
            _ => Err(ApiError::bad_request(format!(
                "there are {} collections; name one with `collection=` (one of: {})",
                all.len(),
                all.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The model, or the 503 that says why there is none (not configured, still loading,
    /// failed to load).
    pub fn model(&self) -> Result<Arc<Model>, ApiError> {
        self.model.get()
    }
}
