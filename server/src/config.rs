//! Server settings that handlers consult (limits, roots, auth).

use std::path::PathBuf;

/// Settings of a running server, fixed at start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Bulk-load by path only reads inside this directory (`--import-root`);
    /// `None` refuses every path-based bulk-load.
    pub import_root: Option<PathBuf>,
    /// Image files are only served from inside this directory (`--images-dir`).
    pub images_dir: Option<PathBuf>,
    /// Bearer token protecting write routes (`--api-key` / `GLIMPSE_API_KEY`).
    pub api_key: Option<String>,
    /// Whether read routes need the API key too.
    pub protect_reads: bool,
    /// Collection used by `GET /search`, `POST /search` and `/health` when several exist.
    pub default_collection: Option<String>,
    /// Longest accepted text query, in characters.
    pub max_text_chars: usize,
    /// Largest accepted `k`.
    pub max_k: usize,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// Largest uploaded Parquet or image body, in bytes.
    pub max_upload_bytes: u64,
    /// Where uploads are spooled before they are read (inside the data dir).
    pub spool_dir: PathBuf,
    /// Heavy requests (bulk loads, multipart uploads, bodies over [`HEAVY_BODY_BYTES`]) served at
    /// once; more are answered 503 with `Retry-After`.
    pub max_heavy_requests: usize,
    /// Whether `/readyz` waits for the model (`--wait-for-model`).
    pub wait_for_model: bool,
    /// Whether searches read the raw rows for the final ranking when a request does not say
    /// (`--rescore`).
    pub rescore: glimpse_storage::Rescore,
}

/// A request body larger than this (or of unknown length) makes a request heavy.
pub const HEAVY_BODY_BYTES: u64 = 1 << 20;

impl ServerConfig {
    /// Defaults for a data directory: everything closed that can be.
    pub fn new(spool_dir: PathBuf) -> Self {
        ServerConfig {
            import_root: None,
            images_dir: None,
            api_key: None,
            protect_reads: false,
            default_collection: None,
            max_text_chars: 2_000,
            max_k: 1_000,
            max_json_bytes: 64 * 1024 * 1024,
            max_upload_bytes: 64 * 1024 * 1024 * 1024,
            spool_dir,
            max_heavy_requests: 2,
            wait_for_model: false,
            rescore: glimpse_storage::Rescore::Always,
        }
    }
}
