//! Storage engine benchmarks: WAL group commit, bulk ingest vs a plain
//! sequential write, open/recovery time and resident memory.
//!
//! ```text
//! cargo run --release -p glimpse-benches --bin storage_bench -- [--n 1000000] [--dim 512]
//!     [--tail 100000] [--wal-secs 2] [--dir PATH] [--with-index]
//! ```
//! Without `--with-index` the bulk segment is written without its IVF-PQ
//! index (storage cost only); with it, `commit` also trains and writes the
//! index over the mapped vectors.
//! Every ratio compares against a baseline measured in the same run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glimpse_storage::{Durability, Metric, Point, SearchRequest, Store, StoreOptions};

struct Args {
    n: usize,
    dim: usize,
    tail: usize,
    wal_secs: f64,
    dir: Option<PathBuf>,
    with_index: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        n: 1_000_000,
        dim: 512,
        tail: 100_000,
        wal_secs: 2.0,
        dir: None,
        with_index: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--n" => a.n = val.parse().unwrap_or(a.n),
            "--dim" => a.dim = val.parse().unwrap_or(a.dim),
            "--tail" => a.tail = val.parse().unwrap_or(a.tail),
            "--wal-secs" => a.wal_secs = val.parse().unwrap_or(a.wal_secs),
            "--dir" => a.dir = Some(PathBuf::from(val)),
            "--with-index" => {
                a.with_index = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    a
}

/// Cheap deterministic vectors (xorshift), so generation cost is negligible
/// and identical in the engine run and the baseline.
struct Gen(u64);

impl Gen {
    fn fill(&mut self, out: &mut [f32]) {
        for x in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *x = ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
        }
    }
}

fn point(id: String, vector: Vec<f32>) -> Point {
    Point {
        id,
        vector,
        image_path: None,
        image_bytes: None,
        metadata: BTreeMap::new(),
    }
}

fn vm_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn fsync_dir(p: &Path) {
    if let Ok(f) = std::fs::File::open(p) {
        let _ = f.sync_all();
    }
}

fn wal_throughput(root: &Path, dim: usize, secs: f64) -> Result<(), Box<dyn std::error::Error>> {
    println!("## WAL upsert throughput ({dim}-d, fsync per commit, {secs} s per row)");
    println!("| batch | writers | points/s | commits/s | fsyncs | points per fsync |");
    println!("|------:|--------:|---------:|----------:|-------:|-----------------:|");
    let mut single_batch1 = 0.0;
    for &batch in &[1usize, 100, 1000] {
        for &writers in &[1usize, 8] {
            let dir = root.join(format!("wal-{batch}-{writers}"));
            let _ = std::fs::remove_dir_all(&dir);
            let opts = StoreOptions {
                memtable_flush_rows: usize::MAX,
                memtable_flush_bytes: usize::MAX,
                ..StoreOptions::default()
            };
            let store = Store::open(&dir, opts)?;
            let c = store.create_collection("w", dim, Metric::Cosine)?;
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let start = Instant::now();
            let total: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..writers)
                    .map(|t| {
                        let c = c.clone();
                        s.spawn(move || {
                            let mut g = Gen(0x9E37_79B9 + t as u64);
                            let mut n = 0usize;
                            while Instant::now() < deadline {
                                let pts: Vec<Point> = (0..batch)
                                    .map(|i| {
                                        let mut v = vec![0f32; dim];
                                        g.fill(&mut v);
                                        point(format!("{t}-{n}-{i}"), v)
                                    })
                                    .collect();
                                if c.upsert(pts).is_err() {
                                    break;
                                }
                                n += 1;
                            }
                            n * batch
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            });
            let el = start.elapsed().as_secs_f64();
            let k = c.counters();
            let pps = total as f64 / el;
            if batch == 1 && writers == 1 {
                single_batch1 = pps;
            }
            println!(
                "| {batch} | {writers} | {pps:.0} | {:.0} | {} | {:.1} |",
                k.wal_records_written as f64 / el,
                k.fsyncs,
                total as f64 / k.fsyncs.max(1) as f64
            );
            if batch == 1 && writers == 8 {
                println!(
                    "|  |  | group commit speed-up 8 vs 1 writers (batch 1): {:.2}x | | | |",
                    pps / single_batch1
                );
            }
            drop(c);
            store.close()?;
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args();
    let tmp;
    let root = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir_in(".")?;
            tmp.path().to_path_buf()
        }
    };
    let (n, dim) = (args.n, args.dim);
    println!(
        "# storage_bench: n={n} dim={dim} tail={} dir={}",
        args.tail,
        root.display()
    );
    println!("bulk segment indexed in this run: {}", args.with_index);

    wal_throughput(&root, dim, args.wal_secs)?;

    // Baseline: plain sequential write + fsync of the same bytes.
    let bytes = n as u64 * dim as u64 * 4;
    let base_path = root.join("baseline.f32");
    let t = Instant::now();
    {
        let f = std::fs::File::create(&base_path)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut g = Gen(7);
        let mut v = vec![0f32; dim];
        for _ in 0..n {
            g.fill(&mut v);
            let b: &[u8] = bytemuck_cast(&v);
            w.write_all(b)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fsync_dir(&root);
    }
    let base_s = t.elapsed().as_secs_f64();
    std::fs::remove_file(&base_path)?;

    // Bulk ingest of the same vectors.
    let sdir = root.join("store");
    let _ = std::fs::remove_dir_all(&sdir);
    let opts = StoreOptions {
        memtable_flush_rows: usize::MAX,
        memtable_flush_bytes: usize::MAX,
        index_min_rows: if args.with_index { 20_000 } else { usize::MAX },
        ..StoreOptions::default()
    };
    let store = Store::open(&sdir, opts.clone())?;
    let c = store.create_collection("big", dim, Metric::Cosine)?;
    let t = Instant::now();
    let mut w = c.bulk_writer()?;
    let mut g = Gen(7);
    for i in 0..n {
        let mut v = vec![0f32; dim];
        g.fill(&mut v);
        w.push(point(i.to_string(), v))?;
    }
    let push_s = t.elapsed().as_secs_f64();
    let stats = w.commit()?;
    let bulk_s = t.elapsed().as_secs_f64();
    let mb = bytes as f64 / (1 << 20) as f64;
    println!("## Bulk ingest {n} x {dim} ({mb:.0} MiB of vectors)");
    println!("| run | seconds | MiB/s | ratio vs baseline |");
    println!("|-----|--------:|------:|------------------:|");
    println!(
        "| plain sequential write + fsync | {base_s:.2} | {:.0} | 1.00 |",
        mb / base_s
    );
    println!(
        "| bulk_writer push + commit ({} inserted; push {push_s:.2} s) | {bulk_s:.2} | {:.0} | {:.2} |",
        stats.inserted,
        mb / bulk_s,
        base_s / bulk_s
    );
    let q: Vec<f32> = c
        .get("12345")
        .map(|p| p.vector)
        .unwrap_or_else(|| vec![0.1; dim]);
    let t = Instant::now();
    let hits = c.search(
        &q,
        &SearchRequest {
            k: 10,
            ..SearchRequest::default()
        },
    )?;
    println!(
        "search k=10 over the segment: {:.1} ms (top id {:?})",
        t.elapsed().as_secs_f64() * 1e3,
        hits.first().map(|h| &h.id)
    );
    drop(c);
    store.close()?;
    drop(store);

    println!("## Open / recovery");
    println!("| store | open seconds | VmRSS after open (MiB) |");
    println!("|-------|-------------:|-----------------------:|");
    let rss0 = vm_rss_mib();
    let t = Instant::now();
    let store = Store::open(&sdir, opts.clone())?;
    let open_s = t.elapsed().as_secs_f64();
    let c = store.collection("big").ok_or("collection missing")?;
    println!(
        "| {n} x {dim} flushed, no WAL tail | {open_s:.3} | {:.0} (process before open: {rss0:.0}; raw vectors {mb:.0}) |",
        vm_rss_mib()
    );
    // Build a WAL tail of `tail` single-point records.
    let tail_opts = StoreOptions {
        durability: Durability::Periodic(Duration::from_millis(200)),
        ..opts.clone()
    };
    drop(c);
    store.close()?;
    drop(store);
    let store = Store::open(&sdir, tail_opts)?;
    let c = store.collection("big").ok_or("collection missing")?;
    let mut g = Gen(99);
    for i in 0..args.tail {
        let mut v = vec![0f32; dim];
        g.fill(&mut v);
        c.upsert(vec![point(format!("tail-{i}"), v)])?;
    }
    let wal_mb = c.stats().wal_bytes as f64 / (1 << 20) as f64;
    drop(c);
    store.close()?;
    drop(store);
    let t = Instant::now();
    let store = Store::open(&sdir, opts)?;
    let open_tail_s = t.elapsed().as_secs_f64();
    let c = store.collection("big").ok_or("collection missing")?;
    println!(
        "| {n} x {dim} + {} WAL records ({wal_mb:.0} MiB) | {open_tail_s:.3} | {:.0} |",
        args.tail,
        vm_rss_mib()
    );
    println!("points after recovery: {}", c.len());
    let c: Arc<_> = c;
    drop(c);
    drop(store);
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

fn bytemuck_cast(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns; u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}
