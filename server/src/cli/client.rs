//! Client subcommands: `glimpse load` (upload shards with a progress bar)
//! and `glimpse search`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::ingest::discover_shards;

/// Arguments of `glimpse load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Target collection (created with the data's dimension and cosine when missing).
    #[arg(long, default_value = "images")]
    pub collection: String,
    /// Bearer token for the server's write routes.
    #[arg(long, env = "GLIMPSE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Parquet shards or folders of shards.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Arguments of `glimpse search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Collection (default: the server's default).
    #[arg(long)]
    pub collection: Option<String>,
    /// Number of results.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// The query text.
    pub text: String,
}

/// A reader that advances a progress bar as the upload streams.
struct ProgressReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn error_message(resp: reqwest::blocking::Response) -> String {
    let status = resp.status();
    match resp.json::<Value>() {
        Ok(v) => v["error"]["message"]
            .as_str()
            .map(|m| format!("{status}: {m}"))
            .unwrap_or_else(|| format!("{status}: {v}")),
        Err(_) => status.to_string(),
    }
}

/// Uploads every shard under `paths`, one bulk-load request per shard, so a
/// failure names the shard and the shards before it stay loaded (re-running
/// is safe: loads upsert by id).
pub fn load(a: LoadArgs) -> Result<()> {
    let shards = discover_shards(&a.paths).context("finding shards")?;
    if shards.is_empty() {
        bail!("no Parquet shards under the given paths");
    }
    let total: u64 = shards
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(None::<Duration>)
        .build()?;
    let url = format!(
        "{}/v1/collections/{}/bulk-load",
        a.url.trim_end_matches('/'),
        a.collection
    );
    let (mut rows, mut inserted, mut replaced) = (0u64, 0u64, 0u64);
    // The collection's rows still waiting for their (background) index after the last shard.
    let mut unindexed_rows = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        bar.set_message(format!("shard {}/{}", i + 1, shards.len()));
        let file =
            std::fs::File::open(shard).with_context(|| format!("opening {}", shard.display()))?;
        let len = file.metadata()?.len();
        let body = reqwest::blocking::Body::sized(
            ProgressReader {
                inner: file,
                bar: bar.clone(),
            },
            len,
        );
        let mut req = client
            .post(&url)
            .header("content-type", "application/vnd.apache.parquet")
            .body(body);
        if let Some(k) = &a.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req
            .send()
            .with_context(|| format!("uploading {}", shard.display()))?;
        if !resp.status().is_success() {
            bar.abandon();
            bail!("{}: {}", shard.display(), error_message(resp));
        }
        let v: Value = resp.json()?;
        rows += v["rows"].as_u64().unwrap_or(0);
        inserted += v["inserted"].as_u64().unwrap_or(0);
        replaced += v["replaced"].as_u64().unwrap_or(0);
        unindexed_rows = v["unindexed_rows"].as_u64().unwrap_or(0);
        if !bar.is_hidden() {
            continue;
        }
        eprintln!(
            "Loaded {} ({} rows) [{}/{}]",
            shard.display(),
            v["rows"],
            i + 1,
            shards.len()
        );
    }
    bar.finish_with_message("done");
    println!(
        "{}",
        serde_json::json!({"shards": shards.len(), "rows": rows, "inserted": inserted,
            "replaced": replaced, "unindexed_rows": unindexed_rows})
    );
    Ok(())
}

/// Prints the results of a text search, one JSON line per hit.
pub fn search(a: SearchArgs) -> Result<()> {
    let client = reqwest::blocking::Client::new();
    let mut req = client
        .get(format!("{}/search", a.url.trim_end_matches('/')))
        .query(&[("q", a.text.as_str()), ("k", &a.k.to_string())]);
    if let Some(c) = &a.collection {
        req = req.query(&[("collection", c)]);
    }
    let resp = req.send()?;
    if !resp.status().is_success() {
        bail!("{}", error_message(resp));
    }
    let v: Value = resp.json()?;
    for r in v["results"].as_array().into_iter().flatten() {
        println!("{r}");
    }
    Ok(())
}
