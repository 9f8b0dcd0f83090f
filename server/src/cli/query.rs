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
