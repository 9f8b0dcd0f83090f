//! Object storage: a writer publishes a bulk load of `--n` × `--dim` CLIP-like vectors (with
//! its ANN index) to a real S3 API on loopback (moto's server), then
//!
//! 1. a replica starts cold from the bucket (every file fetched, every segment opened, ready
//!    to serve), against the raw time to download the same objects with the same client and
//!    concurrency into plain files (the baseline, measured in the same run);
//! 2. (after 3.) `--loads` small bulk loads each go to the bucket, and the time from each
//!    load's publication to its visibility on a replica polling every `--sync-secs` is recorded;
//! 3. one thread searches the replica for `--secs`, first idle, then while it applies
//!    `--loads` versions (loads into another collection, published beforehand) one per
//!    `--sync-secs`: p50/p99 of both, and their ratio.
//!
//! ```text
//! cargo run --release -p glimpse-benches --bin remote_bench -- \
//!     --moto /path/to/moto_server --n 1000000 --dim 512
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use glimpse_index::synthetic::{SyntheticSpec, generate};
use glimpse_remote::{Bucket, PublisherOptions, open_replica, open_writer, read_manifest};
use glimpse_storage::{Metric, Point, SearchRequest, Store, StoreOptions};
use object_store::ObjectStoreExt;

struct Args {
    moto: PathBuf,
    n: usize,
    dim: usize,
    loads: usize,
    load_rows: usize,
    sync_secs: f64,
    secs: f64,
    repeat: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut a = Args {
        moto: PathBuf::from("moto_server"),
        n: 1_000_000,
        dim: 512,
        loads: 10,
        load_rows: 10_000,
        sync_secs: 1.0,
        secs: 10.0,
        repeat: 3,
        dir: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--moto" => a.moto = PathBuf::from(val),
            "--n" => a.n = val.parse().unwrap_or(a.n),
            "--dim" => a.dim = val.parse().unwrap_or(a.dim),
            "--loads" => a.loads = val.parse().unwrap_or(a.loads),
            "--load-rows" => a.load_rows = val.parse().unwrap_or(a.load_rows),
            "--sync-secs" => a.sync_secs = val.parse().unwrap_or(a.sync_secs),
            "--secs" => a.secs = val.parse().unwrap_or(a.secs),
            "--repeat" => a.repeat = val.parse().unwrap_or(a.repeat).max(1),
            "--dir" => a.dir = Some(PathBuf::from(val)),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct MotoServer(std::process::Child);

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto(bin: &Path) -> Result<(MotoServer, String), BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let guard = MotoServer(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // moto checks no signature: an unsigned PUT creates the bucket.
        let ok = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{endpoint}/bench")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok((guard, endpoint));
        }
        if Instant::now() > deadline {
            return Err("moto_server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bulk_load(store: &Store, name: &str, dim: usize, rows: &[f32], first_id: usize) {
    let c = store
        .create_collection(name, dim, Metric::Cosine)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut w = c.bulk_writer().unwrap_or_else(|e| panic!("{e}"));
    for (i, v) in rows.chunks_exact(dim).enumerate() {
        w.push(Point {
            id: (first_id + i).to_string(),
            vector: v.to_vec(),
            image_path: Some(format!("images/{}.jpg", first_id + i)),
            ..Point::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    w.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// GETs every key into `dir` (8 at a time, fsynced): the baseline of a cold start.
async fn raw_download(
    store: &Arc<dyn object_store::ObjectStore>,
    prefix: &object_store::path::Path,
    keys: &[(String, u64)],
    dir: &Path,
) -> Result<u64, BoxError> {
    futures_util::stream::iter(keys.iter().enumerate().map(|(i, (key, _))| {
        let store = store.clone();
        let path = object_store::path::Path::from(format!("{prefix}/{key}"));
        let file = dir.join(i.to_string());
        async move {
            use std::io::Write;
            let got = store.get(&path).await?;
            let mut s = got.into_stream();
            let mut f = std::fs::File::create(&file)?;
            let mut n = 0u64;
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                f.write_all(&chunk)?;
            }
            f.sync_all()?;
            Ok::<u64, BoxError>(n)
        }
    }))
    .buffer_unordered(8)
    .fold(Ok(0u64), |acc: Result<u64, BoxError>, r| async move {
        Ok(acc? + r?)
    })
    .await
}

/// Waits until the writer's background thread has indexed every segment (a small load borrows
/// the trained quantizers), so replicas get what a settled writer publishes.
fn wait_indexed(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while store
        .collection("images")
        .is_some_and(|c| c.unindexed_rows() > 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One thread of searches on `store` until `stop`; latencies in ms, sorted.
fn search_loop(
    store: Arc<Store>,
    queries: Arc<Vec<f32>>,
    dim: usize,
    stop: Arc<AtomicBool>,
) -> Vec<f64> {
    let mut lat = Vec::new();
    let mut i = 0;
    let nq = queries.len() / dim;
    while !stop.load(Ordering::Relaxed) {
        let q = &queries[(i % nq) * dim..(i % nq + 1) * dim];
        let t = Instant::now();
        let c = store
            .collection("images")
            .unwrap_or_else(|| panic!("no collection"));
        let hits = c
            .search(
                q,
                &SearchRequest {
                    k: 10,
                    ..SearchRequest::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hits.len(), 10);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        i += 1;
    }
    lat.sort_by(f64::total_cmp);
    lat
}

fn main() -> Result<(), BoxError> {
    let a = parse_args();
    let tmp;
    let root = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir_in(".")?;
            tmp.path().to_path_buf()
        }
    };
    let (_moto, endpoint) = start_moto(&a.moto)?;
    // SAFETY: set once, before any thread that reads the environment is started.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let url = "s3://bench/db";
    println!(
        "# remote_bench: n={} dim={} bucket={url} via moto_server at {endpoint}",
        a.n, a.dim
    );
    let data = generate(&SyntheticSpec::clip_like(
        a.n + 2 * a.loads * a.load_rows,
        500,
        a.dim,
        11,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // The writer: one bulk load with its index built in the commit, then published.
    let wopts = StoreOptions {
        defer_bulk_index: false,
        ..StoreOptions::default()
    };
    let (wstore, publisher) = rt.block_on(open_writer(
        Bucket::open(url)?,
        &root.join("writer"),
        wopts,
        PublisherOptions::default(),
    ))?;
    let t = Instant::now();
    bulk_load(&wstore, "images", a.dim, &data.vectors[..a.n * a.dim], 0);
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let version = rt.block_on(publisher.publish(&wstore, false))?;
    let publish_s = t.elapsed().as_secs_f64();
    let up = publisher.status().bytes_up.load(Ordering::Relaxed);
    println!(
        "writer: bulk load + index {load_s:.1} s; publish {:.0} MiB in {publish_s:.1} s ({:.0} MiB/s)",
        up as f64 / 1048576.0,
        up as f64 / 1048576.0 / publish_s
    );

    let manifest = rt.block_on(read_manifest(&Bucket::open(url)?, version))?;
    let keys: Vec<(String, u64)> = manifest
        .collections
        .values()
        .flat_map(|c| c.files.values().flat_map(|f| f.values()))
        .map(|f| (f.key.clone(), f.len))
        .collect();
    let (raw_store, prefix) = object_store::parse_url_opts(
        &url::Url::parse(url)?,
        std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v)),
    )?;
    let raw_store: Arc<dyn object_store::ObjectStore> = Arc::from(raw_store);

    // Cold starts against raw downloads of the same objects (same client library, same
    // concurrency of 8, written to plain files and fsynced), alternating, --repeat times.
    let mut ratios = Vec::new();
    let mut replica = None;
    for rep in 0..a.repeat {
        let raw_dir = root.join(format!("raw-{rep}"));
        std::fs::create_dir_all(&raw_dir)?;
        let t = Instant::now();
        let raw_bytes = rt.block_on(raw_download(&raw_store, &prefix, &keys, &raw_dir))?;
        let raw_s = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&raw_dir)?;
        // A replica from cold: fetch, open, answer a first query.
        let dir = root.join(format!("replica-{rep}"));
        let t = Instant::now();
        let (rstore, mut follower) = open_replica(
            Bucket::open(url)?,
            &dir,
            StoreOptions::default(),
            Vec::new(),
            Duration::from_secs(60),
        )?;
        let out = rt.block_on(follower.sync_once())?;
        let rc = rstore
            .collection("images")
            .ok_or("replica has no collection")?;
        let first = rc.search(
            data.query(0),
            &SearchRequest {
                k: 10,
                ..SearchRequest::default()
            },
        )?;
        let cold_s = t.elapsed().as_secs_f64();
        assert_eq!(first.len(), 10);
        assert_eq!(rc.len(), a.n as u64);
        drop(rc);
        ratios.push(cold_s / raw_s);
        println!(
            "cold start {rep}: replica ready in {cold_s:.2} s (fetch {:.2} s, apply {:.2} s, {:.0} MiB); raw download of the same {} objects ({:.0} MiB) {raw_s:.2} s; ratio {:.2}x",
            out.fetch_secs,
            out.apply_secs,
            out.bytes as f64 / 1048576.0,
            keys.len(),
            raw_bytes as f64 / 1048576.0,
            cold_s / raw_s
        );
        if let Some((s, _, d)) = replica.replace((rstore, follower, dir)) {
            drop(s);
            std::fs::remove_dir_all(d)?;
        }
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "cold start / raw download: median {:.2}x over {} runs (goal <= 1.5x)",
        percentile(&ratios, 0.5),
        ratios.len()
    );
    let Some((rstore, mut follower, _dir)) = replica else {
        return Err("no replica".into());
    };

    // Search p99 on the replica, idle, then while it applies --loads new versions one per
    // --sync-secs (published beforehand, so the writer does not share the cores meanwhile).
    // The loads go to another collection: what is measured is the cost of syncing (fetch,
    // fsync, open, swap), not that of searching more segments of the one queried.
    let sync_every = Duration::from_secs_f64(a.sync_secs);
    let served = follower.status().version();
    let mut versions = Vec::new();
    for l in 0..a.loads {
        let from = a.n + l * a.load_rows;
        bulk_load(
            &wstore,
            "incoming",
            a.dim,
            &data.vectors[from * a.dim..(from + a.load_rows) * a.dim],
            from,
        );
        wait_indexed(&wstore);
        versions.push(rt.block_on(publisher.publish(&wstore, false))?);
    }
    assert!(versions.iter().all(|&v| v > served));
    let queries = Arc::new(data.queries.clone());
    let run_searches = |secs: f64, during: &mut dyn FnMut()| -> Result<Vec<f64>, BoxError> {
        let stop = Arc::new(AtomicBool::new(false));
        let h = {
            let (s, q, st) = (rstore.clone(), queries.clone(), stop.clone());
            let dim = a.dim;
            std::thread::spawn(move || search_loop(s, q, dim, st))
        };
        let started = Instant::now();
        during();
        std::thread::sleep(Duration::from_secs_f64(secs).saturating_sub(started.elapsed()));
        stop.store(true, Ordering::Relaxed);
        h.join().map_err(|_| "search thread panicked".into())
    };
    // Warm-up (first touches of the mapped files after the cold start), not measured.
    run_searches(a.secs, &mut || {})?;
    let idle = run_searches(a.secs, &mut || {})?;
    let mut applied = Vec::new();
    let busy = run_searches(a.secs, &mut || {
        for &v in &versions {
            let t = Instant::now();
            if let Ok(out) = rt.block_on(follower.sync_to(Some(v))) {
                applied.push(out);
            }
            std::thread::sleep(sync_every.saturating_sub(t.elapsed()));
        }
    })?;
    println!(
        "replica search, one thread: idle p50 {:.2} ms p99 {:.2} ms ({} queries); while applying {} versions (one per {:.1} s, {:.0} MiB fetched) p50 {:.2} ms p99 {:.2} ms ({} queries); p99 ratio {:.2}x",
        percentile(&idle, 0.5),
        percentile(&idle, 0.99),
        idle.len(),
        applied.len(),
        a.sync_secs,
        applied.iter().map(|o| o.bytes).sum::<u64>() as f64 / 1048576.0,
        percentile(&busy, 0.5),
        percentile(&busy, 0.99),
        busy.len(),
        percentile(&busy, 0.99) / percentile(&idle, 0.99)
    );
    // Load -> visible: the replica polls every --sync-secs while the writer loads and publishes.
    let follower_stop = Arc::new(AtomicBool::new(false));
    let fstop = follower_stop.clone();
    let sync_task = rt.spawn(async move {
        while !fstop.load(Ordering::Relaxed) {
            let _ = follower.sync_once().await;
            tokio::time::sleep(sync_every).await;
        }
        follower
    });
    let mut visible_ms = Vec::new();
    for l in a.loads..2 * a.loads {
        let from = a.n + l * a.load_rows;
        bulk_load(
            &wstore,
            "images",
            a.dim,
            &data.vectors[from * a.dim..(from + a.load_rows) * a.dim],
            from,
        );
        wait_indexed(&wstore);
        rt.block_on(publisher.publish(&wstore, false))?;
        let answered = Instant::now();
        let want = (a.n + (l + 1 - a.loads) * a.load_rows) as u64;
        while rstore.collection("images").map_or(0, |c| c.len()) < want {
            if answered.elapsed() > Duration::from_secs(120) {
                return Err(format!("load {l} not visible on the replica after 120 s").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        visible_ms.push(answered.elapsed().as_secs_f64() * 1e3);
        // Loads arrive at any point of the replica's polling period, not right after a sync.
        std::thread::sleep(Duration::from_secs_f64(
            a.sync_secs * ((l as f64 * 0.37) % 1.0),
        ));
    }
    follower_stop.store(true, Ordering::Relaxed);
    rt.block_on(sync_task)?;
    visible_ms.sort_by(f64::total_cmp);
    println!(
        "load -> visible on a replica (sync every {:.1} s, {} loads of {} rows): median {:.0} ms, max {:.0} ms",
        a.sync_secs,
        a.loads,
        a.load_rows,
        percentile(&visible_ms, 0.5),
        percentile(&visible_ms, 1.0)
    );

    Ok(())
}
