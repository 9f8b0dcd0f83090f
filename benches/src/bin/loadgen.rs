//! Closed-loop HTTP load generator for `glimpse serve`: search throughput
//! (QPS) and p50/p99 latency per concurrency level, optionally while a
//! bulk-load runs against the same server.
//!
//! Each client is a thread with its own keep-alive connection that sends
//! `POST /v1/collections/{c}/search {"vector": q, "k": k}` back to back,
//! cycling through the query file from its own offset. Request bodies are
//! serialised up front and answers are only checked for status 200 (the
//! first one is parsed and must hold `k` results), so the generator spends
//! as little CPU as possible on a machine it shares with the server.
//!
//! With `--bulk-load FILE` a background thread uploads the Parquet file to
//! `POST /v1/collections/{bulk-collection}/bulk-load` again and again (ids are
//! upserted, so the collection does not grow) for as long as the levels run;
//! every level is then measured "with bulk-load running" and the loads
//! completed are reported.
//!
//! Usage: `loadgen --url http://127.0.0.1:8000 --collection C --queries Q.npy|Q.fvecs
//!   [--concurrency 1,8,32] [--duration-s 10] [--warmup-s 1] [--k 10]
//!   [--nprobe N] [--refine R] [--bulk-load FILE] [--bulk-collection C] [--json]`
//!
//! With `--json` every level is also printed as one JSON line
//! (`clients, qps, p50_ms, p99_ms, queries, errors, reconnects, bulk_load,
//! bulk_loads_done`) for scripts such as `benches/chroma_compare.py`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glimpse_benches::http::HttpClient;
use glimpse_benches::npy::read_vectors;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    url: String,
    collection: String,
    queries: PathBuf,
    concurrency: Vec<usize>,
    duration: Duration,
    warmup: Duration,
    k: usize,
    nprobe: Option<usize>,
    refine: Option<usize>,
    bulk_load: Option<PathBuf>,
    bulk_collection: Option<String>,
    json: bool,
}

fn parse_args() -> Result<Args> {
    let mut url = None;
    let mut collection = None;
    let mut queries = None;
    let mut a = Args {
        url: String::new(),
        collection: String::new(),
        queries: PathBuf::new(),
        concurrency: vec![1, 8, 32],
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        k: 10,
        nprobe: None,
        refine: None,
        bulk_load: None,
        bulk_collection: None,
        json: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    let secs = |key: &str, v: &str| -> Result<Duration> {
        let s: f64 = v.parse().map_err(|e| format!("{key} {v}: {e}"))?;
        if !(s.is_finite() && s >= 0.0) {
            return Err(format!("{key} {v}: must be a non-negative number").into());
        }
        Ok(Duration::from_secs_f64(s))
    };
    let int = |key: &str, v: &str| -> Result<usize> {
        v.parse().map_err(|e| format!("{key} {v}: {e}").into())
    };
    while let Some(key) = it.next() {
        let key = key.as_str();
        if key == "--json" {
            a.json = true;
            continue;
        }
        if key == "--help" || key == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .ok_or_else(|| format!("missing value for {key}"))?
            .as_str();
        match key {
            "--url" => url = Some(v.trim_end_matches('/').to_string()),
            "--collection" => collection = Some(v.to_string()),
            "--queries" => queries = Some(PathBuf::from(v)),
            "--concurrency" => {
                a.concurrency = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| int(key, s))
                    .collect::<Result<_>>()?;
                if a.concurrency.is_empty() || a.concurrency.contains(&0) {
                    return Err("--concurrency needs positive client counts".into());
                }
            }
            "--duration-s" => a.duration = secs(key, v)?,
            "--warmup-s" => a.warmup = secs(key, v)?,
            "--k" => a.k = int(key, v)?,
            "--nprobe" => a.nprobe = Some(int(key, v)?),
            "--refine" => a.refine = Some(int(key, v)?),
            "--bulk-load" => a.bulk_load = Some(PathBuf::from(v)),
            "--bulk-collection" => a.bulk_collection = Some(v.to_string()),
            x => return Err(format!("unknown flag {x}\n{USAGE}").into()),
        }
    }
    a.url = url.ok_or(format!("--url is required\n{USAGE}"))?;
    a.collection = collection.ok_or(format!("--collection is required\n{USAGE}"))?;
    a.queries = queries.ok_or(format!("--queries is required\n{USAGE}"))?;
    if a.k == 0 {
        return Err("--k must be positive".into());
    }
    if a.duration.is_zero() {
        return Err("--duration-s must be positive".into());
    }
    Ok(a)
}

const USAGE: &str = "usage: loadgen --url URL --collection C --queries Q.npy|Q.fvecs \
[--concurrency 1,8,32] [--duration-s 10] [--warmup-s 1] [--k 10] [--nprobe N] [--refine R] \
[--bulk-load FILE.parquet] [--bulk-collection C] [--json]";

/// Builds every search body once, so the measured loop does no JSON work.
fn search_bodies(args: &Args) -> Result<Vec<Vec<u8>>> {
    let m = read_vectors(&args.queries)?;
    if m.rows == 0 {
        return Err(format!("{}: no query vectors", args.queries.display()).into());
    }
    let mut bodies = Vec::with_capacity(m.rows);
    for i in 0..m.rows {
        let row = m.row(i).ok_or("query row out of range")?;
        let mut body = serde_json::json!({ "vector": row, "k": args.k });
        if let Some(n) = args.nprobe {
            body["nprobe"] = n.into();
        }
        if let Some(r) = args.refine {
            body["refine"] = r.into();
        }
        bodies.push(serde_json::to_vec(&body)?);
    }
    Ok(bodies)
}

/// One level's measurements.
struct LevelResult {
    clients: usize,
    seconds: f64,
    latencies_us: Vec<u32>,
    errors: u64,
    reconnects: u64,
    first_error: Option<String>,
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
}

/// Runs `clients` closed-loop clients for warm-up + duration; records only
/// requests that both start and finish inside the measured window.
fn run_level(args: &Args, path: &str, bodies: &Arc<Vec<Vec<u8>>>, clients: usize) -> LevelResult {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let stop = measure_from + args.duration;
    let handles: Vec<_> = (0..clients)
        .map(|w| {
            let bodies = Arc::clone(bodies);
            let url = args.url.clone();
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                let mut first_error = None;
                let mut client = match HttpClient::new(&url, Duration::from_secs(60)) {
                    Ok(c) => c,
                    Err(e) => return (lat, 1, 0, Some(e.to_string())),
                };
                let now = Instant::now();
                if start > now {
                    std::thread::sleep(start - now);
                }
                let mut i = w * (bodies.len() / clients.max(1)).max(1);
                loop {
                    let t = Instant::now();
                    if t >= stop {
                        break;
                    }
                    let body = &bodies[i % bodies.len()];
                    i += 1;
                    let r = client.post(&path, "application/json", body);
                    let done = Instant::now();
                    match r {
                        Ok(resp) if resp.status == 200 => {
                            if t >= measure_from && done <= stop {
                                let us = (done - t).as_micros().min(u128::from(u32::MAX));
                                lat.push(us as u32);
                            }
                        }
                        Ok(resp) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| {
                                format!(
                                    "status {}: {}",
                                    resp.status,
                                    String::from_utf8_lossy(&resp.body)
                                )
                            });
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                            // Back off a little so a dead server is not hammered.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, errors, client.connects.saturating_sub(1), first_error)
            })
        })
        .collect();
    let mut r = LevelResult {
        clients,
        seconds: args.duration.as_secs_f64(),
        latencies_us: Vec::new(),
        errors: 0,
        reconnects: 0,
        first_error: None,
    };
    for h in handles {
        match h.join() {
            Ok((lat, errors, reconnects, first_error)) => {
                r.latencies_us.extend(lat);
                r.errors += errors;
                r.reconnects += reconnects;
                if r.first_error.is_none() {
                    r.first_error = first_error;
                }
            }
            Err(_) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| "a client thread panicked".into());
            }
        }
    }
    r.latencies_us.sort_unstable();
    r
}

/// Counters of the background bulk-load thread.
#[derive(Default)]
struct BulkStats {
    done: AtomicU64,
    failed: AtomicU64,
    rows: AtomicU64,
    micros: AtomicU64,
}

/// Uploads `file` again and again until `stop` is set.
fn spawn_bulk_loader(
    url: String,
    path: String,
    file: PathBuf,
    stop: Arc<AtomicBool>,
    stats: Arc<BulkStats>,
) -> std::thread::JoinHandle<Option<String>> {
    std::thread::spawn(move || {
        let mut client = match HttpClient::new(&url, Duration::from_secs(3600)) {
            Ok(c) => c,
            Err(e) => return Some(e.to_string()),
        };
        let mut first_error = None;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            match client.post_file(&path, "application/vnd.apache.parquet", &file) {
                Ok(resp) if resp.status == 200 => {
                    let rows = serde_json::from_slice::<serde_json::Value>(&resp.body)
                        .ok()
                        .and_then(|v| v.get("rows").and_then(|r| r.as_u64()))
                        .unwrap_or(0);
                    stats.done.fetch_add(1, Ordering::Relaxed);
                    stats.rows.fetch_add(rows, Ordering::Relaxed);
                    stats
                        .micros
                        .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                Ok(resp) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert_with(|| {
                        format!(
                            "bulk-load status {}: {}",
                            resp.status,
                            String::from_utf8_lossy(&resp.body)
                        )
                    });
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert_with(|| format!("bulk-load: {e}"));
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        first_error
    })
}

/// Sends one search and checks the answer holds results, so a wrong
/// collection or dimension fails loudly before any timing.
fn preflight(args: &Args, path: &str, body: &[u8]) -> Result<()> {
    let mut c = HttpClient::new(&args.url, Duration::from_secs(60))?;
    let r = c.post(path, "application/json", body)?;
    if r.status != 200 {
        return Err(format!(
            "search on {}{path} answered {}: {}",
            args.url,
            r.status,
            String::from_utf8_lossy(&r.body)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    let n = v
        .get("results")
        .and_then(|r| r.as_array())
        .map_or(0, |r| r.len());
    if n == 0 {
        return Err(format!("search answered no results: {v}").into());
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let bodies = Arc::new(search_bodies(&args)?);
    let path = format!("/v1/collections/{}/search", args.collection);
    preflight(&args, &path, &bodies[0])?;

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(BulkStats::default());
    let bulk = args.bulk_load.as_ref().map(|file| {
        let coll = args.bulk_collection.as_deref().unwrap_or(&args.collection);
        spawn_bulk_loader(
            args.url.clone(),
            format!("/v1/collections/{coll}/bulk-load"),
            file.clone(),
            Arc::clone(&stop),
            Arc::clone(&stats),
        )
    });
    let label = if bulk.is_some() { " + bulk-load" } else { "" };
    println!(
        "# loadgen {} {}: {} queries, k={}, {:.1} s per level after {:.1} s warm-up{label}",
        args.url,
        args.collection,
        bodies.len(),
        args.k,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "clients", "QPS", "p50 ms", "p99 ms", "queries", "errors"
    );
    let mut failed = false;
    for &c in &args.concurrency {
        let before = stats.done.load(Ordering::Relaxed);
        let r = run_level(&args, &path, &bodies, c);
        let loads = stats.done.load(Ordering::Relaxed) - before;
        let qps = r.latencies_us.len() as f64 / r.seconds;
        let (p50, p99) = (
            percentile_ms(&r.latencies_us, 0.5),
            percentile_ms(&r.latencies_us, 0.99),
        );
        println!(
            "{:>8} {:>10.0} {:>10.2} {:>10.2} {:>10} {:>8}{}",
            r.clients,
            qps,
            p50,
            p99,
            r.latencies_us.len(),
            r.errors,
            if bulk.is_some() {
                format!("  ({loads} bulk-loads finished during the level)")
            } else {
                String::new()
            }
        );
        if let Some(e) = &r.first_error {
            eprintln!("# first error at {c} clients: {e}");
            failed = true;
        }
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "clients": r.clients, "qps": qps, "p50_ms": p50, "p99_ms": p99,
                    "queries": r.latencies_us.len(), "errors": r.errors,
                    "reconnects": r.reconnects, "bulk_load": bulk.is_some(),
                    "bulk_loads_done": loads,
                })
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = bulk {
        // The upload in flight finishes first: loads are all-or-nothing.
        let err = h.join().unwrap_or(Some("bulk-load thread panicked".into()));
        let done = stats.done.load(Ordering::Relaxed);
        let secs = stats.micros.load(Ordering::Relaxed) as f64 / 1e6;
        println!(
            "# bulk-load: {done} done ({} rows, {:.0} rows/s while loaded), {} failed",
            stats.rows.load(Ordering::Relaxed),
            stats.rows.load(Ordering::Relaxed) as f64 / secs.max(1e-9),
            stats.failed.load(Ordering::Relaxed)
        );
        if let Some(e) = err {
            eprintln!("# {e}");
            failed = true;
        }
    }
    if failed {
        return Err("some requests failed (see above)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile_ms;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let xs: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&xs, 0.5), 51.0);
        assert_eq!(percentile_ms(&xs, 0.99), 99.0);
        assert_eq!(percentile_ms(&xs, 0.0), 1.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }
}
