//! `glimpse serve`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use glimpse_storage::{CompactRerank, Durability, HeapThresholds, Store, StoreOptions, TierMargin};

use crate::chroma::registry::Registry;
use crate::config::ServerConfig;
use crate::model::{DeviceArg, ServingOptions};
use crate::model_slot::{ModelSlot, ModelState};
use crate::remote_link::{RemoteLink, RemoteSettings};
use crate::state::AppState;

/// Arguments of `glimpse serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (created when missing).
    #[arg(long, default_value = "./glimpse-data")]
    pub data_dir: PathBuf,
    /// Address to listen on. Loopback by default; opening it up is a choice.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// CLIP model: a Hugging Face repo id, a local directory, or `none` for vector search only.
    #[arg(long, default_value = "openai/clip-vit-base-patch32")]
    pub model: String,
    /// Device for the model.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Text and image queries that arrive within this many milliseconds of each other (or
    /// while a forward pass runs) share one forward pass; 0 gives every query its own pass.
    /// A query waits this long for others, not at all when the last pass held only one
    /// query, and up to a quarter of the last pass's duration while that pass's clients are
    /// coming back (as long as such waits gather them).
    #[arg(long, default_value_t = 2.0)]
    pub batch_window_ms: f64,
    /// Most text (and, separately, image) queries waiting for a forward pass; more are
    /// answered 503 `embed_queue_full` with `Retry-After`.
    #[arg(long, default_value_t = 256)]
    pub batch_queue: usize,
    /// Text query embeddings kept in the LRU cache (repeated queries skip the model); 0 turns
    /// the cache off.
    #[arg(long, default_value_t = glimpse_embedder::DEFAULT_TEXT_CACHE)]
    pub query_cache: usize,
    /// `/readyz` answers 503 until the model is loaded (and for good if it fails), so a
    /// SkyServe or Kubernetes readiness probe sends no traffic that needs text search too
    /// early. Without it the server is ready as soon as the store is open.
    #[arg(long)]
    pub wait_for_model: bool,
    /// When `--model` names a local directory that is missing or incomplete at start (a
    /// volume mounted or filled later), keep looking for it this many seconds before giving up.
    #[arg(long, default_value_t = 0)]
    pub model_wait_secs: u64,
    /// Serve image files referenced by `image_path` from inside this directory only.
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
    /// Allow bulk-load by server-side path, inside this directory only.
    #[arg(long)]
    pub import_root: Option<PathBuf>,
    /// Bearer token required on write routes.
    #[arg(long, env = "GLIMPSE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Require the API key on read routes too.
    #[arg(long)]
    pub protect_reads: bool,
    /// Collection used by `/search` and `/health` when several exist.
    #[arg(long)]
    pub collection: Option<String>,
    /// Longest text query in characters.
    #[arg(long, default_value_t = 2000)]
    pub max_text_chars: usize,
    /// Largest k a search may ask for.
    #[arg(long, default_value_t = 1000)]
    pub max_k: usize,
    /// Whether searches read the raw vectors for the final ranking when a request does not
    /// say (its `rescore` field): `always` (exact scores), `auto` (segments whose recall table
    /// found ranking on the compact tier's codes alone enough for the target read no raw
    /// vector, so the vector files may sit on a slow disk; scores are then estimates) or
    /// `never` (codes alone wherever a segment has them).
    #[arg(long, default_value = "always")]
    pub rescore: glimpse_storage::Rescore,
    /// Largest JSON body in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_json_bytes: usize,
    /// Largest Parquet upload in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Heavy requests (bulk loads, multipart uploads, bodies over 1 MiB) served at once; more get
    /// 503 with Retry-After, so concurrent large bodies cannot exhaust memory.
    #[arg(long, default_value_t = 2)]
    pub max_heavy_requests: usize,
    /// Fsync the WAL every N milliseconds instead of on every commit (faster, loses up to N ms on power loss).
    #[arg(long)]
    pub fsync_interval_ms: Option<u64>,
    /// Build each bulk load's ANN index inside the load request, before the data becomes visible,
    /// instead of in the background after it is durable (searched exactly until then).
    #[arg(long)]
    pub index_during_load: bool,
    /// Which new indexes get the compact re-rank tier (0.75 bytes per dimension of each row in
    /// the index file from 256 dimensions, 1 below; cosine and dot collections): searches then read raw vectors only for the
    /// few candidates its error margin cannot rule out, with the same results (for the rotated codes, unless two rows' rounding errors exceed twelve standard deviations together). `auto` (the
    /// default): indexes whose own calibration needs a re-rank of at least 64 per result for
    /// the default recall target, where it is clearly faster; `on` (or the bare flag): every index, so the vector files
    /// need not stay in memory (collections larger than RAM; `0.75·dim` bytes per row on disk);
    /// `off`: none.
    #[arg(
        long,
        value_enum,
        default_value_t = CompactRerankArg::Auto,
        num_args = 0..=1,
        default_missing_value = "on"
    )]
    pub compact_rerank: CompactRerankArg,
    /// The margin the compact tier prunes candidates with before reading raw rows: `measured`
    /// (the default), the share each index's own calibration queries needed to keep their
    /// top 10, with a quarter to spare (3-7x fewer raw rows; a fresh query may, rarely, swap a
    /// near-tie at the 10th place), or `full`, the whole error bound (the same top k as
    /// re-ranking every candidate exactly).
    #[arg(long, value_enum, default_value_t = TierMarginArg::Measured)]
    pub tier_margin: TierMarginArg,
    /// A folder of photos to search: new and changed photos are embedded and loaded in the
    /// background (into `--collection`, default `photos`), removed ones are deleted, and the
    /// images are served from it. Implies `--images-dir DIR`.
    #[arg(long)]
    pub photos: Option<PathBuf>,
    /// With `--photos`: look for new, changed and removed photos again every N seconds
    /// (0: only at start).
    #[arg(long, default_value_t = 0)]
    pub photos_rescan_secs: u64,
    /// Keep the data in object storage: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `file:///abs/path`. Credentials, region and endpoint come
    /// from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`, ...). `--data-dir` then holds the WAL and a cache; started on an
    /// empty one, the server restores from the bucket. See docs/scaling.md.
    #[arg(long, env = "GLIMPSE_REMOTE")]
    pub remote: Option<String>,
    /// With `--remote`: a read-only replica that serves the newest version in the bucket
    /// (write routes answer 405 `read_only_replica`; `/readyz` waits for the first sync).
    #[arg(long, requires = "remote")]
    pub replica: bool,
    /// With `--replica`: look for a new version this often, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub sync_secs: f64,
    /// With `--remote` (writer): point writes are durable in the local WAL when acknowledged
    /// and reach the bucket when their memtable is flushed, at the latest this many seconds
    /// later. Bulk loads answer only once they are in the bucket.
    #[arg(long, default_value_t = 30.0)]
    pub remote_flush_secs: f64,
    /// With `--remote` (writer): keep every object that one of the newest N manifests names.
    #[arg(long, default_value_t = 10)]
    pub remote_retain_versions: usize,
    /// With `--remote`: delete nothing younger than this many seconds, and keep a manifest this
    /// long after a newer one appeared, so a lagging replica never finds its files gone.
    #[arg(long, default_value_t = 600.0)]
    pub remote_gc_grace_secs: f64,
}

/// Collection `--photos` fills when `--collection` is not given.
pub const DEFAULT_PHOTOS_COLLECTION: &str = "photos";

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn store_options(a: &ServeArgs) -> StoreOptions {
    let mut opts = StoreOptions::default();
    if let Some(ms) = a.fsync_interval_ms {
        opts.durability = Durability::Periodic(Duration::from_millis(ms.max(1)));
    }
    opts.defer_bulk_index = !a.index_during_load;
    opts.compact_rerank = match a.compact_rerank {
        CompactRerankArg::Auto => CompactRerank::Auto,
        CompactRerankArg::On => CompactRerank::On,
        CompactRerankArg::Off => CompactRerank::Off,
    };
    opts.tier_margin = match a.tier_margin {
        TierMarginArg::Measured => TierMargin::Measured,
        TierMarginArg::Full => TierMargin::Full,
    };
    opts
}

/// `--tier-margin` values (see [`TierMargin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TierMarginArg {
    /// The share of the full margin each index's calibration queries needed (fewer raw reads).
    Measured,
    /// The full margin (the same top k as re-ranking every candidate exactly).
    Full,
}

/// `--compact-rerank` values (see [`CompactRerank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompactRerankArg {
    /// Indexes whose calibration needs a re-rank of at least 64 per result at the default
    /// recall target.
    Auto,
    /// Every cosine or dot index.
    On,
    /// None.
    Off,
}

/// The `--remote` flags, checked; `None` without `--remote`.
fn remote_settings(a: &ServeArgs) -> Result<Option<RemoteSettings>> {
    let Some(url) = &a.remote else {
        return Ok(None);
    };
    let secs = |flag: &str, v: f64| -> Result<Duration> {
        if !(0.01..=86_400.0).contains(&v) {
            bail!("{flag} must be between 0.01 and 86400 seconds, got {v}");
        }
        Ok(Duration::from_secs_f64(v))
    };
    if a.replica && a.photos.is_some() {
        bail!("--photos writes to the store; a --replica takes no writes");
    }
    if !(0.0..=86_400.0 * 30.0).contains(&a.remote_gc_grace_secs) {
        bail!("--remote-gc-grace-secs must be between 0 and 2592000");
    }
    Ok(Some(RemoteSettings {
        url: url.clone(),
        replica: a.replica,
        sync_every: secs("--sync-secs", a.sync_secs)?,
        flush_every: secs("--remote-flush-secs", a.remote_flush_secs)?,
        retain_versions: a.remote_retain_versions.max(1),
        gc_grace: Duration::from_secs_f64(a.remote_gc_grace_secs),
    }))
}

/// Opens the store and model and builds the shared state (no listener). Without `--remote`
/// only: a server on object storage is started by [`serve`], which needs its runtime for it.
pub fn build_state(a: &ServeArgs) -> Result<Arc<AppState>> {
    if a.remote.is_some() {
        bail!("--remote is opened by `glimpse serve` itself (it needs the async runtime)");
    }
    let store = Store::open(&a.data_dir, store_options(a))
        .with_context(|| format!("opening data dir {}", a.data_dir.display()))?;
    assemble_state(a, Arc::new(store), None)
}

/// The shared state over an opened store (and its link to object storage, if any).
fn assemble_state(
    a: &ServeArgs,
    store: Arc<Store>,
    remote: Option<RemoteLink>,
) -> Result<Arc<AppState>> {
    let chroma = Registry::open(&a.data_dir).context("opening the Chroma namespace")?;
    // The port is bound at once; the model is resolved, downloaded and loaded meanwhile.
    let model = if a.model.eq_ignore_ascii_case("none") {
        if a.wait_for_model {
            bail!("--wait-for-model waits for a CLIP model; drop it or `--model none`");
        }
        ModelSlot::disabled()
    } else {
        if !(0.0..=10_000.0).contains(&a.batch_window_ms) {
            bail!(
                "--batch-window-ms must be between 0 and 10000, got {}",
                a.batch_window_ms
            );
        }
        let options = ServingOptions {
            batch_window: Duration::from_secs_f64(a.batch_window_ms / 1e3),
            batch_queue: a.batch_queue.max(1),
            query_cache: a.query_cache,
        };
        ModelSlot::load_in_background_with(
            &a.model,
            a.device,
            Duration::from_secs(a.model_wait_secs),
            options,
        )
    };
    for (flag, dir) in [
        ("--images-dir", &a.images_dir),
        ("--import-root", &a.import_root),
        ("--photos", &a.photos),
    ] {
        if let Some(d) = dir
            && !d.is_dir()
        {
            bail!("{flag} {} is not a directory", d.display());
        }
    }
    let mut images_dir = a.images_dir.clone();
    let mut default_collection = a.collection.clone();
    if let Some(photos) = &a.photos {
        if matches!(model.state(), ModelState::Disabled) {
            bail!("--photos needs a CLIP model to embed the photos; drop `--model none`");
        }
        if let Some(d) = &images_dir
            && std::fs::canonicalize(d).ok() != std::fs::canonicalize(photos).ok()
        {
            bail!(
                "--photos serves images from {}; --images-dir must be left out or name the same folder",
                photos.display()
            );
        }
        images_dir = Some(photos.clone());
        // The collection is created by the sync thread once the model (and so the
        // dimension) is known.
        default_collection.get_or_insert_with(|| DEFAULT_PHOTOS_COLLECTION.to_string());
    }
    let mut config = ServerConfig::new(a.data_dir.join("spool"));
    config.import_root = a.import_root.clone();
    config.images_dir = images_dir;
    config.api_key = a.api_key.clone().filter(|k| !k.is_empty());
    config.protect_reads = a.protect_reads;
    config.default_collection = default_collection;
    config.max_text_chars = a.max_text_chars;
    config.max_k = a.max_k;
    config.max_json_bytes = a.max_json_bytes;
    config.max_upload_bytes = a.max_upload_bytes;
    config.max_heavy_requests = a.max_heavy_requests.max(1);
    config.wait_for_model = a.wait_for_model;
    config.rescore = a.rescore;
    // Uploads interrupted by a crash leave spool files; nothing refers to them.
    let _ = std::fs::remove_dir_all(&config.spool_dir);
    Ok(Arc::new(AppState {
        store,
        model,
        heavy: Arc::new(tokio::sync::Semaphore::new(config.max_heavy_requests)),
        config,
        jobs: Default::default(),
        chroma: Arc::new(chroma),
        remote,
    }))
}

/// Starts the background work `a` asks for (the `--photos` folder sync).
pub fn start_background(state: &Arc<AppState>, a: &ServeArgs) -> Result<()> {
    let Some(photos) = &a.photos else {
        return Ok(());
    };
    let name = state
        .config
        .default_collection
        .clone()
        .unwrap_or_else(|| DEFAULT_PHOTOS_COLLECTION.to_string());
    let rescan = (a.photos_rescan_secs > 0).then(|| Duration::from_secs(a.photos_rescan_secs));
    crate::photos::spawn_sync(state, photos.clone(), name, rescan)
        .context("starting the photo sync thread")
}

/// The allocator's thresholds for `serve`. Without a model, a server that bulk-loaded once
/// should not keep the load's freed buffers: serving needs almost no heap (the data is
/// memory-mapped). With one, every query's forward pass frees and reallocates megabytes of
/// activations per layer, and returning them to the OS at once made the kernel fault and zero
/// them again in the next layer (passes 1.5x longer for 16 text queries, 1.8x for an image
/// batch); an arena's free top of up to 64 MiB is small beside the model's weights.
pub fn serve_heap_thresholds(a: &ServeArgs) -> HeapThresholds {
    if a.model.eq_ignore_ascii_case("none") {
        HeapThresholds::PROMPT_RETURN
    } else {
        HeapThresholds::REUSE
    }
}

/// Runs `glimpse serve` until SIGTERM/Ctrl-C.
pub fn serve(a: ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let remote = remote_settings(&a)?;
    let state = match &remote {
        None => build_state(&a)?,
        Some(s) => {
            let (store, link, follower) =
                rt.block_on(crate::remote_link::open(&a.data_dir, store_options(&a), s))?;
            let state = assemble_state(&a, store, Some(link))?;
            let _guard = rt.enter();
            crate::remote_link::spawn(&state, follower, s);
            state
        }
    };
    start_background(&state, &a)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.bind)
            .await
            .with_context(|| format!("binding {}", a.bind))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line to find the port when binding :0.
        println!("glimpse listening on http://{addr}");
        tracing::info!(%addr, data_dir = %a.data_dir.display(), "serving");
        crate::http::serve(listener, state.clone(), shutdown_signal())
            .await
            .context("serving HTTP")?;
        crate::remote_link::publish_before_exit(&state).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn options(args: &[&str]) -> StoreOptions {
        let cmd = Cmd::try_parse_from(std::iter::once("glimpse").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        store_options(&cmd.serve)
    }

    fn policy(args: &[&str]) -> CompactRerank {
        options(args).compact_rerank
    }

    /// Vector search only returns freed memory at once; a server with a model keeps it.
    #[test]
    fn heap_thresholds_follow_the_model() {
        let args = |model: &str| {
            Cmd::try_parse_from(["glimpse", "--model", model])
                .unwrap_or_else(|e| panic!("{model}: {e}"))
                .serve
        };
        assert_eq!(
            serve_heap_thresholds(&args("none")),
            HeapThresholds::PROMPT_RETURN
        );
        assert_eq!(
            serve_heap_thresholds(&args("NONE")),
            HeapThresholds::PROMPT_RETURN
        );
        assert_eq!(
            serve_heap_thresholds(&args("/models/vitb32")),
            HeapThresholds::REUSE
        );
    }

    /// The measured margin by default; `full` on request; anything else refused.
    #[test]
    fn tier_margin_defaults_to_measured() {
        assert_eq!(options(&[]).tier_margin, TierMargin::Measured);
        let full = options(&["--tier-margin", "full"]).tier_margin;
        assert_eq!(full, TierMargin::Full);
        assert!(Cmd::try_parse_from(["glimpse", "--tier-margin", "wide"]).is_err());
    }

    /// `auto` by default; the bare flag (as before it took a value) still means every index.
    #[test]
    fn compact_rerank_defaults_to_auto_and_the_bare_flag_means_on() {
        assert_eq!(policy(&[]), CompactRerank::Auto);
        assert_eq!(policy(&["--compact-rerank"]), CompactRerank::On);
        assert_eq!(policy(&["--compact-rerank", "off"]), CompactRerank::Off);
        assert_eq!(policy(&["--compact-rerank=auto"]), CompactRerank::Auto);
        assert!(Cmd::try_parse_from(["glimpse", "--compact-rerank", "sometimes"]).is_err());
    }
}
