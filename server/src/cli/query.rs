//! `glimpse query`: offline batch queries straight on a data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use glimpse_storage::{SearchRequest, Store, StoreOptions};
use rayon::prelude::*;

use crate::ingest;

/// Arguments of `glimpse query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Data directory (must not be in use by a running server). With `--remote`, the cache
    /// the bucket's files are fetched into (default: a folder under the temp directory named
    /// after the URL, reused by the next query).
    #[arg(long, required_unless_present = "remote")]
    pub data_dir: Option<PathBuf>,
    /// Query the newest version in object storage (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///abs/path`; credentials from the environment as for `glimpse serve --remote`).
    #[arg(long, env = "GLIMPSE_REMOTE")]
    pub remote: Option<String>,
    /// Collection to search.
    #[arg(long)]
    pub collection: String,
    /// Parquet file with an `embedding` column, one query per row.
    #[arg(long)]
    pub vectors: PathBuf,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Recall@10 to aim at, in (0, 1]: each segment searches with the cheapest parameters its
    /// own recall table (measured when its index was built) names for it; 1 scans exactly.
    #[arg(long, default_value_t = glimpse_index::DEFAULT_RECALL_TARGET, value_parser = parse_recall_target)]
    pub recall_target: f32,
    /// IVF lists to probe (expert override of the recall table's choice).
    #[arg(long)]
    pub nprobe: Option<usize>,
    /// Re-rank depth multiplier (expert override of the recall table's choice).
    #[arg(long)]
    pub refine: Option<usize>,
    /// Whether the final ranking reads the raw vectors: `always` (exact scores), `auto` (not
    /// in segments whose recall table found the compact tier's codes enough for the target)
    /// or `never` (codes alone wherever a segment has them).
    #[arg(long, default_value = "always")]
    pub rescore: glimpse_storage::Rescore,
    /// Output Parquet: one row per query in input order, `ids` and `scores`.
    #[arg(long)]
    pub out: PathBuf,
    /// Scan segments still waiting for their index (a bulk load not yet indexed) exactly,
    /// instead of waiting for their index builds first: every query then reads every one of
    /// their rows.
    #[arg(long)]
    pub exact_scan: bool,
}

/// `--recall-target`: a number in (0, 1].
fn parse_recall_target(s: &str) -> Result<f32, String> {
    let t: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    crate::http::search::check_recall_target(Some(t))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "missing value".to_string())
}

/// Waits, with a progress bar of the rows left, until the store's background thread has built
/// every pending index (it starts at once: no bulk load runs in this process).
fn wait_for_indexes(coll: &glimpse_storage::Collection, pending: u64) {
    let bar = indicatif::ProgressBar::new(pending);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "indexing {bar:30} {pos}/{len} rows [{elapsed_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let left = coll.unindexed_rows();
        bar.set_position(pending.saturating_sub(left));
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    bar.finish_and_clear();
}

/// Brings a read-only cache of the bucket at `url` up to its newest version.
fn fetch_remote(url: &str, cache: Option<&Path>) -> Result<Arc<Store>> {
    let cache = match cache {
        Some(d) => d.to_path_buf(),
        None => {
            let tag: String = url
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .take(100)
                .collect();
            std::env::temp_dir().join(format!("glimpse-query-cache-{tag}"))
        }
    };
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let bucket = glimpse_remote::Bucket::open(url)?;
        let (store, mut follower) = glimpse_remote::open_replica(
            bucket,
            &cache,
            StoreOptions::default(),
            Vec::new(),
            Duration::ZERO,
        )?;
        let out = follower.sync_once().await?;
        eprintln!(
            "{url}: version {} ({} bytes fetched into {})",
            follower.status().version(),
            out.bytes,
            cache.display()
        );
        Ok::<_, anyhow::Error>(store)
    })
}

/// Runs every query of the input file and writes the results.
pub fn query(a: QueryArgs) -> Result<()> {
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    let store = match &a.remote {
        Some(url) => fetch_remote(url, a.data_dir.as_deref())?,
        None => {
            let dir = a.data_dir.as_deref().context("--data-dir is required")?;
            Arc::new(
                Store::open(dir, StoreOptions::default())
                    .with_context(|| format!("opening {}", dir.display()))?,
            )
        }
    };
    let coll = store
        .collection(&a.collection)
        .with_context(|| format!("collection {:?} does not exist", a.collection))?;
    let pending = coll.unindexed_rows();
    if pending > 0 {
        if store.is_read_only() {
            // The writer builds indexes; a copy of its bucket cannot.
            eprintln!(
                "{pending} rows of the bucket's newest version wait for their index (the writer \
                 builds it): every query scans them exactly"
            );
        } else if a.exact_scan {
            eprintln!(
                "{pending} rows wait for their index; --exact-scan: every query scans them exactly"
            );
        } else {
            eprintln!(
                "{pending} rows wait for their index (a bulk load not yet indexed): building it \
                 before querying (--exact-scan scans them exactly instead)"
            );
            wait_for_indexes(&coll, pending);
        }
    }
    let queries = ingest::read_query_vectors(&a.vectors)
        .with_context(|| format!("reading {}", a.vectors.display()))?;
    for (i, q) in queries.iter().enumerate() {
        if q.len() != coll.dim() {
            bail!(
                "query {i} has {} dimensions but collection {:?} has {}",
                q.len(),
                a.collection,
                coll.dim()
            );
        }
    }
    let started = std::time::Instant::now();
    let results: Vec<ingest::QueryResult> = queries
        .par_iter()
        .enumerate()
        .map(|(i, q)| {
            let req = SearchRequest {
                k: a.k,
                nprobe: a.nprobe,
                refine: a.refine,
                recall_target: Some(a.recall_target),
                filter: None,
                rescore: a.rescore,
            };
            coll.search(q, &req).map(|hits| {
                let (ids, scores) = hits.into_iter().map(|h| (h.id, h.score)).unzip();
                ingest::QueryResult {
                    query: i as i64,
                    ids,
                    scores,
                }
            })
        })
        .collect::<Result<_, _>>()?;
    let mut writer = ingest::QueryResultsWriter::create(&a.out)
        .with_context(|| format!("creating {}", a.out.display()))?;
    writer.write(&results)?;
    writer
        .commit()
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "{} queries in {:.2}s -> {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
