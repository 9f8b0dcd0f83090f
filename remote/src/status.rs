//! What `/readyz`, the collection description and `/metrics` report about
//! the bucket: shared between the sync task and the HTTP handlers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// The role of this process towards its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes its committed state (`--remote`).
    Writer,
    /// Follows the published versions, read-only (`--remote --replica`).
    Replica,
}

impl Role {
    /// `writer` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Replica => "replica",
        }
    }
}

/// Live status of the link to the bucket. Counters only go up.
#[derive(Debug)]
pub struct RemoteStatus {
    /// Writer or replica.
    pub role: Role,
    /// The `--remote` URL.
    pub url: String,
    version: AtomicU64,
    synced_at_ms: AtomicU64,
    synced_once: AtomicBool,
    fenced: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Completed publications (writer) or applied versions (replica).
    pub syncs: AtomicU64,
    /// Failed rounds.
    pub errors: AtomicU64,
    /// Bytes sent to the bucket.
    pub bytes_up: AtomicU64,
    /// Bytes fetched from the bucket.
    pub bytes_down: AtomicU64,
    /// Objects deleted by garbage collection.
    pub gc_deleted: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RemoteStatus {
    /// A status for `role` on `url`, not synced yet.
    pub fn new(role: Role, url: &str) -> Self {
        RemoteStatus {
            role,
            url: url.to_string(),
            version: AtomicU64::new(0),
            synced_at_ms: AtomicU64::new(0),
            synced_once: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            last_error: Mutex::new(None),
            syncs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            gc_deleted: AtomicU64::new(0),
        }
    }

    /// The manifest version published (writer) or served (replica); 0 before any.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Milliseconds since the epoch of the last successful round (0: none).
    pub fn synced_at_ms(&self) -> u64 {
        self.synced_at_ms.load(Ordering::Acquire)
    }

    /// Whether one complete round has succeeded since start.
    pub fn synced_once(&self) -> bool {
        self.synced_once.load(Ordering::Acquire)
    }

    /// Whether another writer took over the prefix.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// The error of the last round, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Why writes are refused now, if they are: fenced, or the bucket
    /// failing (writes would pile up where no replica or restore sees them).
    pub fn write_refusal(&self) -> Option<String> {
        if self.is_fenced() {
            return Some(
                self.last_error()
                    .unwrap_or_else(|| "fenced by another writer".into()),
            );
        }
        self.last_error()
            .map(|e| format!("object storage is failing: {e}"))
    }

    pub(crate) fn succeeded(&self, version: u64) {
        self.version.store(version, Ordering::Release);
        self.synced_at_ms.store(now_ms(), Ordering::Release);
        self.synced_once.store(true, Ordering::Release);
        *self.last_error.lock() = None;
    }

    pub(crate) fn failed(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(error);
    }

    pub(crate) fn fence(&self, error: String) {
        self.fenced.store(true, Ordering::Release);
        *self.last_error.lock() = Some(error);
    }

    /// JSON for `/readyz`: `{role, url, version, synced_at, fenced, error}`.
    pub fn to_json(&self) -> serde_json::Value {
        let at = self.synced_at_ms();
        serde_json::json!({
            "role": self.role.as_str(),
            "url": self.url,
            "version": self.version(),
            "synced_at": if at == 0 { serde_json::Value::Null } else { serde_json::json!(at as f64 / 1000.0) },
            "fenced": self.is_fenced(),
            "error": self.last_error(),
        })
    }
}
