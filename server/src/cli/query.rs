//! `glimpse query`: offline batch queries straight on a data directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use glimpse_storage::{SearchRequest, Store, StoreOptions};
use rayon::prelude::*;

use crate::ingest;

/// Arguments of `glimpse query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Data directory (must not be in use by a running server).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Collection to search.
    #[arg(long)]
    pub collection: String,
    /// Parquet file with an `embedding` column, one query per row.
    #[arg(long)]
    pub vectors: PathBuf,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// IVF lists to probe (default: the index's choice).
    #[arg(long)]
    pub nprobe: Option<usize>,
    /// Re-rank depth multiplier (default: the index's choice).
    #[arg(long)]
    pub refine: Option<usize>,
    /// Output Parquet: one row per query in input order, `ids` and `scores`.
    #[arg(long)]
    pub out: PathBuf,
    /// Scan segments still waiting for their index (a bulk load not yet indexed) exactly,
    /// instead of waiting for their index builds first: every query then reads every one of
    /// their rows.
    #[arg(long)]
    pub exact_scan: bool,
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

/// Runs every query of the input file and writes the results.
pub fn query(a: QueryArgs) -> Result<()> {
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    let store = Store::open(&a.data_dir, StoreOptions::default())
        .with_context(|| format!("opening {}", a.data_dir.display()))?;
    let coll = store
        .collection(&a.collection)
        .with_context(|| format!("collection {:?} does not exist", a.collection))?;
    let pending = coll.unindexed_rows();
    if pending > 0 {
        if a.exact_scan {
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
                filter: None,
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
