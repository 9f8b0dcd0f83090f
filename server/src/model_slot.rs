//! Where the server keeps its CLIP model: absent (`--model none`), loading on a background
//! thread, ready, or failed with a reason.
//!
//! `glimpse serve` binds its port before the model is resolved, downloaded and loaded, so a
//! readiness probe, the page, vector search and bulk loads answer at once; only text and image
//! queries wait, with a 503 that says why (`model_loading`, `model_unavailable`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::ApiError;
use crate::model::{DeviceArg, Model, ServingOptions};

/// The model's state as `/readyz` and the page report it.
#[derive(Debug, Clone)]
pub enum ModelState {
    /// `--model none`: vector search only.
    Disabled,
    /// Being resolved, downloaded or loaded (the spec as given to `--model`).
    Loading(String),
    /// Loaded and serving.
    Ready(Arc<Model>),
    /// Loading failed; the reason, for the log, `/readyz` and every 503.
    Failed(String),
}

/// The server's model, shared by handlers and the background loader.
#[derive(Debug)]
pub struct ModelSlot {
    state: Mutex<ModelState>,
    changed: Condvar,
}

impl ModelSlot {
    /// A slot for `--model none`.
    pub fn disabled() -> Arc<ModelSlot> {
        Self::with(ModelState::Disabled)
    }

    /// A slot holding an already loaded model.
    pub fn ready(model: Arc<Model>) -> Arc<ModelSlot> {
        Self::with(ModelState::Ready(model))
    }

    fn with(state: ModelState) -> Arc<ModelSlot> {
        Arc::new(ModelSlot {
            state: Mutex::new(state),
            changed: Condvar::new(),
        })
    }

    /// Starts loading `spec` on a background thread and returns at once. A model directory
    /// that is missing or lacks its `config.json` (a volume mounted or filled after the server
    /// starts) is looked for again every second for up to `appear_within`.
    pub fn load_in_background(
        spec: &str,
        device: DeviceArg,
        appear_within: Duration,
    ) -> Arc<ModelSlot> {
        Self::load_in_background_with(spec, device, appear_within, ServingOptions::default())
    }

    /// [`load_in_background`](Self::load_in_background) with explicit batching and cache
    /// settings.
    pub fn load_in_background_with(
        spec: &str,
        device: DeviceArg,
        appear_within: Duration,
        options: ServingOptions,
    ) -> Arc<ModelSlot> {
        let slot = Self::with(ModelState::Loading(spec.to_string()));
        let loader = slot.clone();
        let spec = spec.to_string();
        let spawned = std::thread::Builder::new()
            .name("glimpse-model-load".into())
            .spawn(move || {
                let started = Instant::now();
                tracing::info!(model = %spec, "loading the CLIP model in the background; text and image queries answer 503 until it is ready");
                let looks_local = spec.starts_with('/') || spec.starts_with('.');
                let mut result = Model::load_with(&spec, device, options);
                while result.is_err()
                    && looks_local
                    && !std::path::Path::new(&spec).join("config.json").is_file()
                    && started.elapsed() + Duration::from_secs(1) <= appear_within
                {
                    std::thread::sleep(Duration::from_secs(1));
                    result = Model::load_with(&spec, device, options);
                }
                let next = match result {
                    Ok(m) => {
                        tracing::info!(model = %spec, seconds = started.elapsed().as_secs_f64(), "CLIP model ready");
                        ModelState::Ready(Arc::new(m))
                    }
                    Err(e) => {
                        let reason = format!("{e:#}");
                        tracing::error!(model = %spec, %reason, "the CLIP model could not be loaded; text and image queries stay unavailable");
                        ModelState::Failed(reason)
                    }
                };
                loader.set(next);
            });
        if let Err(e) = spawned {
            slot.set(ModelState::Failed(format!(
                "could not start the loader thread: {e}"
            )));
        }
        slot
    }

    fn set(&self, next: ModelState) {
        *self.state.lock() = next;
        self.changed.notify_all();
    }

    /// The current state.
    pub fn state(&self) -> ModelState {
        self.state.lock().clone()
    }

    /// The model, or the 503 a text or image query answers meanwhile.
    pub fn get(&self) -> Result<Arc<Model>, ApiError> {
        match &*self.state.lock() {
            ModelState::Ready(m) => Ok(m.clone()),
            ModelState::Loading(spec) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "model_loading",
                format!(
                    "the CLIP model {spec:?} is still loading (see the server log); vector search \
                     and bulk loads work meanwhile. Retry shortly, or start with --wait-for-model \
                     so readiness waits for it"
                ),
            )),
            ModelState::Failed(reason) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "model_unavailable",
                format!(
                    "the CLIP model could not be loaded: {reason}. Give a local model directory \
                     with --model DIR, or --model none for vector search only"
                ),
            )),
            ModelState::Disabled => Err(ApiError::unavailable(
                "no CLIP model is loaded (the server runs with `--model none`): text and image \
                 queries need `--model openai/clip-vit-base-patch32` or `--model DIR`",
            )),
        }
    }

    /// Waits up to `timeout` for loading to end; the model if it is ready then.
    pub fn wait(&self, timeout: Duration) -> Option<Arc<Model>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while matches!(*state, ModelState::Loading(_)) {
            if self.changed.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        match &*state {
            ModelState::Ready(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// `/readyz`'s words for the state: `none`, `loading`, `ready` or `failed: <reason>`.
    pub fn describe(&self) -> String {
        match &*self.state.lock() {
            ModelState::Disabled => "none".into(),
            ModelState::Loading(_) => "loading".into(),
            ModelState::Ready(_) => "ready".into(),
            ModelState::Failed(reason) => format!("failed: {reason}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_model_dir_fails_with_its_reason_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{ not json").unwrap();
        let slot = ModelSlot::load_in_background(
            dir.path().to_str().unwrap(),
            DeviceArg::Cpu,
            Duration::ZERO,
        );
        assert!(slot.wait(Duration::from_secs(60)).is_none());
        let d = slot.describe();
        assert!(d.starts_with("failed: "), "{d}");
        let e = slot.get().unwrap_err();
        assert_eq!(e.code, "model_unavailable");
        assert!(e.message.contains("--model DIR"), "{}", e.message);
    }

    #[test]
    fn disabled_says_how_to_enable() {
        let slot = ModelSlot::disabled();
        assert_eq!(slot.describe(), "none");
        assert!(slot.wait(Duration::ZERO).is_none());
        assert!(slot.get().unwrap_err().message.contains("--model none"));
    }
}
