//! Soak benchmark: N minutes of mixed load on ONE `glimpse serve` process that
//! this program starts itself, then goal checks.
//!
//! The server is the release binary (`--glimpse PATH`, else `$GLIMPSE_BIN`, else
//! `target/release/glimpse`), run as `serve --data-dir <tmp>/data --model none
//! --bind 127.0.0.1:<free port> --import-root <tmp>/import`; all traffic stays on
//! the loopback interface. Without a CLIP model text search is unavailable, so
//! every search is a vector search (`POST /v1/collections/soak/search {"vector"}`).
//!
//! Setup (not timed): a CLIP-like synthetic data set (`glimpse_index::synthetic`)
//! of `--initial` vectors (default 100,000, dim 512) is written as Parquet
//! shards in Glimpse's schema and bulk-loaded by path, and the soak starts once
//! its ANN index is built (`unindexed_rows == 0`). Then, until the deadline:
//!
//! * `--search-threads` clients (4) send vector searches (k = 10), paced to
//!   `--search-qps` in total (0 = back to back);
//! * one client upserts batches of `--upsert-batch` points at `--upsert-rate`
//!   batches/s, a `--new-fraction` of them new ids, the rest new versions of
//!   live ids;
//! * one client deletes live ids (one `DELETE` each, at most `--delete-rate`/s)
//!   whenever the collection holds more than `--initial` points, so the data
//!   set churns but does not grow;
//! * a bulk load of `--bulk-rows` rows (half new ids, half new versions) every
//!   `--bulk-every-s`, in the middle of each interval: a shard written with
//!   `glimpse_server::ingest::write_partition_atomic` and loaded with
//!   `POST .../bulk-load {"paths": [...]}`;
//! * a compaction (`POST .../compact`) every `--compact-every-s`.
//!
//! No two requests in flight touch the same id, so a client-side model of every
//! acknowledged write (id -> version or deleted) is exact. Vectors are rows of a
//! pool chosen by a hash of (id, version), so nothing but versions is kept.
//!
//! Every interval (`--interval-s`, 60 by default) prints search p50/p99, requests
//! done by kind, 5xx and other failures, and the server's RSS (`VmRSS` and
//! `RssAnon` of `/proc/<pid>/status`, at the interval's end and its peak), and
//! which background work (bulk load, compaction) overlapped it. At the end:
//!
//! * p99 of the last interval within 1.5x of the second's;
//! * RSS growth from the end of interval 2 to the end of the last under 10%;
//! * zero 5xx answers (soak, setup and verification alike);
//! * every acknowledged write present: `GET /v1/collections/soak/points/{id}` of
//!   every id the model knows (or, above `--verify-max`, every deleted id and a
//!   random sample of live ones, at least 2,000): a live id must come back with
//!   exactly the vector of its last acknowledged version, a deleted id with 404;
//!   the server's live count must equal the model's.
//!
//! Each check prints PASS/FAIL with its numbers; the program exits non-zero if
//! one fails. The per-interval numbers are plotted to an SVG (`--out`, default
//! `docs/img/soak.svg`; `--quick`: `target/soak-quick.svg`) with a CSV of the
//! same numbers beside it.
//!
//! `--quick` is the smoke check: 1 minute in 10-second intervals, 20,000
//! initial vectors, bulk loads of 1,000 rows every 10 s, a compaction at 30 s.
//!
//! Usage: `soak [--minutes 10] [--quick] [--glimpse PATH] [--out FILE.svg] ...`
//! (`soak --help` lists every flag).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use glimpse_benches::http::{HttpClient, HttpError, Response};
use glimpse_index::synthetic::{SyntheticSpec, generate};
use glimpse_server::ingest::{ShardRecord, ShardWriterOptions, write_partition_atomic};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod load;
mod model;
mod records;
mod report;
mod server;
mod verify;

use load::*;
use model::*;
use records::*;
use report::*;
use server::*;
use verify::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const COLLECTION: &str = "soak";
const USAGE: &str = "usage: soak [--minutes 10] [--quick] [--glimpse PATH] [--interval-s 60] \
[--initial 100000] [--dim 512] [--search-threads 4] [--search-qps 200] [--upsert-batch 16] \
[--upsert-rate 8] [--new-fraction 0.25] [--delete-rate 100] [--bulk-every-s 60] \
[--bulk-rows 5000] [--compact-every-s 240] [--verify-max 250000] [--out docs/img/soak.svg] \
[--work-dir DIR] [--seed 7] [--keep]";

/// Largest ratio of the last interval's p99 to the second's.
const P99_RATIO_MAX: f64 = 1.5;
/// Largest RSS growth from the end of interval 2 to the end of the last.
const RSS_GROWTH_MAX: f64 = 0.10;
/// Fewest live ids checked when the model is sampled.
const MIN_LIVE_SAMPLE: usize = 2_000;

struct Args {
    minutes: f64,
    quick: bool,
    glimpse: PathBuf,
    interval: Duration,
    initial: usize,
    dim: usize,
    search_threads: usize,
    search_qps: f64,
    upsert_batch: usize,
    upsert_rate: f64,
    new_fraction: f64,
    delete_rate: f64,
    bulk_every: Duration,
    bulk_rows: usize,
    compact_every: Duration,
    verify_max: usize,
    out: PathBuf,
    work_dir: Option<PathBuf>,
    seed: u64,
    keep: bool,
}

fn parse_args() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let mut a = Args {
        minutes: if quick { 1.0 } else { 10.0 },
        quick,
        glimpse: std::env::var_os("GLIMPSE_BIN")
            .map_or_else(|| PathBuf::from("target/release/glimpse"), PathBuf::from),
        interval: Duration::from_secs(if quick { 10 } else { 60 }),
        initial: if quick { 20_000 } else { 100_000 },
        dim: 512,
        search_threads: 4,
        search_qps: 200.0,
        upsert_batch: 16,
        upsert_rate: 8.0,
        new_fraction: 0.25,
        delete_rate: 100.0,
        bulk_every: Duration::from_secs(if quick { 10 } else { 60 }),
        bulk_rows: if quick { 1_000 } else { 5_000 },
        compact_every: Duration::from_secs(if quick { 30 } else { 240 }),
        verify_max: 250_000,
        out: PathBuf::from(if quick {
            "target/soak-quick.svg"
        } else {
            "docs/img/soak.svg"
        }),
        work_dir: None,
        seed: 7,
        keep: false,
    };
    let mut it = argv.iter();
    let num = |key: &str, v: &str| -> Result<f64> {
        let x: f64 = v.parse().map_err(|e| format!("{key} {v}: {e}"))?;
        if !(x.is_finite() && x >= 0.0) {
            return Err(format!("{key} {v}: must be a non-negative number").into());
        }
        Ok(x)
    };
    let int = |key: &str, v: &str| -> Result<usize> {
        v.parse().map_err(|e| format!("{key} {v}: {e}").into())
    };
    while let Some(key) = it.next() {
        let key = key.as_str();
        match key {
            "--quick" => continue,
            "--keep" => {
                a.keep = true;
                continue;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {}
        }
        let v = it
            .next()
            .ok_or_else(|| format!("missing value for {key}"))?
            .as_str();
        match key {
            "--minutes" => a.minutes = num(key, v)?,
            "--glimpse" => a.glimpse = PathBuf::from(v),
            "--interval-s" => a.interval = Duration::from_secs_f64(num(key, v)?),
            "--initial" => a.initial = int(key, v)?,
            "--dim" => a.dim = int(key, v)?,
            "--search-threads" => a.search_threads = int(key, v)?,
            "--search-qps" => a.search_qps = num(key, v)?,
            "--upsert-batch" => a.upsert_batch = int(key, v)?,
            "--upsert-rate" => a.upsert_rate = num(key, v)?,
            "--new-fraction" => a.new_fraction = num(key, v)?.min(1.0),
            "--delete-rate" => a.delete_rate = num(key, v)?,
            "--bulk-every-s" => a.bulk_every = Duration::from_secs_f64(num(key, v)?),
            "--bulk-rows" => a.bulk_rows = int(key, v)?,
            "--compact-every-s" => a.compact_every = Duration::from_secs_f64(num(key, v)?),
            "--verify-max" => a.verify_max = int(key, v)?,
            "--out" => a.out = PathBuf::from(v),
            "--work-dir" => a.work_dir = Some(PathBuf::from(v)),
            "--seed" => a.seed = int(key, v)? as u64,
            x => return Err(format!("unknown flag {x}\n{USAGE}").into()),
        }
    }
    if a.minutes <= 0.0 || a.interval.is_zero() {
        return Err("--minutes and --interval-s must be positive".into());
    }
    if a.initial == 0 || a.dim == 0 || a.search_threads == 0 {
        return Err("--initial, --dim and --search-threads must be positive".into());
    }
    Ok(a)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------

fn main() {
    if let Err(e) = run() {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if !args.glimpse.is_file() {
        return Err(format!(
            "no glimpse binary at {} (build it with `cargo build --release -p glimpse-server \
             --bin glimpse`, then pass --glimpse PATH or set GLIMPSE_BIN)",
            args.glimpse.display()
        )
        .into());
    }
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let n_buckets = (total.as_secs_f64() / args.interval.as_secs_f64()).ceil() as usize;
    let n_buckets = n_buckets.max(1);

    let t = Instant::now();
    let pool_rows = args.initial + (args.initial / 5).max(10_000);
    let data = generate(&SyntheticSpec::clip_like(
        pool_rows, 1_000, args.dim, args.seed,
    ));
    let search_bodies: Vec<Vec<u8>> = (0..data.n_queries())
        .map(|i| {
            let mut s = String::from("{\"vector\":");
            push_vector(&mut s, data.query(i));
            s.push_str(",\"k\":10}");
            s.into_bytes()
        })
        .collect();
    let pool = Pool {
        dim: args.dim,
        rows: pool_rows,
        vectors: data.vectors,
        seed: args.seed,
    };
    println!(
        "# soak{}: {} min in {} intervals of {:.0} s; {} initial vectors of dim {}, pool of {} \
         generated in {:.1} s",
        if args.quick { " --quick" } else { "" },
        args.minutes,
        n_buckets,
        args.interval.as_secs_f64(),
        args.initial,
        args.dim,
        pool_rows,
        t.elapsed().as_secs_f64()
    );
    println!(
        "# load: {} search clients at {} queries/s in total (k=10), upserts of {} points at {}/s \
         ({:.0}% new ids), deletes up to {}/s keeping ~{} points, bulk loads of {} rows every \
         {:.0} s, compaction every {:.0} s",
        args.search_threads,
        if args.search_qps > 0.0 {
            format!("{:.0}", args.search_qps)
        } else {
            "unpaced".into()
        },
        args.upsert_batch,
        args.upsert_rate,
        args.new_fraction * 100.0,
        args.delete_rate,
        args.initial,
        args.bulk_rows,
        args.bulk_every.as_secs_f64(),
        args.compact_every.as_secs_f64()
    );
    println!(
        "# searches are vector searches only: text search needs a CLIP model and the server runs \
         with --model none"
    );

    let root = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("glimpse-soak-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new().prefix("glimpse-soak-").tempdir()?,
    };
    let data_dir = root.path().join("data");
    let import = root.path().join("import");
    std::fs::create_dir_all(&import)?;
    let mut server = Server::start(
        &args.glimpse,
        &data_dir,
        &import,
        root.path().join("server.log"),
    )?;
    println!(
        "# server: {} (pid {}), data in {}",
        server.url,
        server.pid(),
        root.path().display()
    );

    let setup_rec = Recorder::new(Instant::now(), args.interval, 1);
    let mut ctx = Ctx {
        url: server.url.clone(),
        deadline: Instant::now(),
        pool,
        model: Mutex::new(Model::with_initial(args.initial)),
        rec: setup_rec,
        import: import.clone(),
        search_bodies,
        target_live: args.initial,
    };
    if let Err(e) = initial_load(&ctx, args.initial) {
        return Err(format!("{e}\n{}", server.log_tail()).into());
    }
    let (rss0, anon0) = rss_kib(server.pid());
    println!(
        "# after setup: RSS {:.0} MiB (anon {:.0} MiB)",
        mib(rss0),
        mib(anon0)
    );
    let setup_5xx = ctx.rec.other_5xx.load(Ordering::Relaxed);

    let t0 = Instant::now();
    ctx.deadline = t0 + total;
    ctx.rec = Recorder::new(t0, args.interval, n_buckets);
    ctx.rec.other_5xx.store(setup_5xx, Ordering::Relaxed);
    print_header();

    let mut rows: Vec<Row> = Vec::with_capacity(n_buckets);
    let pid = server.pid();
    let thread_result = std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        let per_thread = args.search_qps / args.search_threads as f64;
        for w in 0..args.search_threads {
            let ctx = &ctx;
            handles.push(s.spawn(move || search_loop(ctx, w, per_thread)));
        }
        {
            let ctx = &ctx;
            let (b, r, f, seed) = (
                args.upsert_batch,
                args.upsert_rate,
                args.new_fraction,
                args.seed,
            );
            handles.push(s.spawn(move || upsert_loop(ctx, b, r, f, seed)));
            let dr = args.delete_rate;
            handles.push(s.spawn(move || delete_loop(ctx, dr, seed)));
            let (every, n) = (args.bulk_every, args.bulk_rows);
            handles.push(s.spawn(move || bulk_loop(ctx, every, n, seed)));
            let every = args.compact_every;
            handles.push(s.spawn(move || compact_loop(ctx, every)));
        }

        // Sample RSS every second; print each interval once it is over (the
        // last one after every client has stopped).
        for i in 0..n_buckets {
            let end = (t0 + args.interval * (i as u32 + 1)).min(ctx.deadline);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                std::thread::sleep((end - now).min(Duration::from_secs(1)));
                let (rss, _) = rss_kib(pid);
                let mut b = lock(&ctx.rec.buckets);
                let k = ctx.rec.index(Instant::now(), n_buckets);
                b[k].rss_peak_kib = b[k].rss_peak_kib.max(rss);
            }
            let (rss, anon) = rss_kib(pid);
            {
                let mut b = lock(&ctx.rec.buckets);
                b[i].rss_kib = rss;
                b[i].rss_anon_kib = anon;
                b[i].rss_peak_kib = b[i].rss_peak_kib.max(rss);
            }
            if i + 1 < n_buckets {
                let b = lock(&ctx.rec.buckets)[i].clone();
                let r = row_of(i, args.interval, &b);
                print_row(&r);
                rows.push(r);
            }
        }
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert_with(|| "a load thread panicked".into());
                }
            }
        }
        let b = lock(&ctx.rec.buckets)[n_buckets - 1].clone();
        let r = row_of(n_buckets - 1, args.interval, &b);
        print_row(&r);
        rows.push(r);
        first_err.map_or(Ok(()), Err)
    });
    let ended = t0.elapsed();
    if let Err(e) = thread_result {
        eprintln!("# a load thread stopped early: {e}");
    }
    println!(
        "# load ran {:.1} s (the deadline was {:.1} s; work in flight then finished first)",
        ended.as_secs_f64(),
        total.as_secs_f64()
    );
    for c in lock(&ctx.rec.compactions).iter() {
        println!("# compaction took {c:.1} s");
    }
    for e in lock(&ctx.rec.first_errors).iter() {
        println!("# error: {e}");
    }

    // Totals.
    let mut sum = Bucket::default();
    for r in &rows {
        for k in 0..5 {
            sum.done[k] += r.b.done[k];
        }
        sum.upsert_points += r.b.upsert_points;
        sum.bulk_rows += r.b.bulk_rows;
        sum.e5xx += r.b.e5xx;
        sum.other_errors += r.b.other_errors;
    }
    println!(
        "# totals: {} searches, {} upserts ({} points), {} deletes, {} bulk loads ({} rows), {} \
         compactions, {} 5xx, {} other failures",
        sum.done[0],
        sum.done[1],
        sum.upsert_points,
        sum.done[2],
        sum.done[3],
        sum.bulk_rows,
        sum.done[4],
        sum.e5xx,
        sum.other_errors
    );

    let t = Instant::now();
    let verified = verify(&ctx, args.verify_max, args.seed);
    let verify_secs = t.elapsed().as_secs_f64();
    let described = describe(&ctx.url, &ctx.rec);
    let stopped = server.stop();
    println!("# server {stopped}");

    // The plot and its numbers.
    if let Some(dir) = args.out.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let title = format!(
        "Glimpse soak: {} vectors (dim {}), {} search clients, upserts + deletes + bulk loads + compaction",
        args.initial, args.dim, args.search_threads
    );
    match plot(&args.out, &rows, &title) {
        Ok(()) => println!("# plot: {}", args.out.display()),
        Err(e) => eprintln!("# plot failed: {e}"),
    }
    let csv = args.out.with_extension("csv");
    write_csv(&csv, &rows)?;
    println!("# numbers: {}", csv.display());

    // Checks.
    let mut failed = 0;
    let mut check = |ok: bool, name: &str, detail: String| {
        println!("{} {name}: {detail}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failed += 1;
        }
    };
    println!("# goal checks");
    if rows.len() >= 2 {
        let (second, last) = (&rows[1], &rows[rows.len() - 1]);
        let ratio = last.p99 / second.p99;
        check(
            ratio.is_finite() && ratio <= P99_RATIO_MAX,
            "p99 stable",
            format!(
                "last interval p99 {:.2} ms / second interval p99 {:.2} ms = {ratio:.2} (limit {P99_RATIO_MAX})",
                last.p99, second.p99
            ),
        );
        let (a, b) = (second.b.rss_kib as f64, last.b.rss_kib as f64);
        let growth = (b - a) / a.max(1.0);
        check(
            growth < RSS_GROWTH_MAX,
            "RSS growth after warm-up",
            format!(
                "{:.0} MiB at the end of interval 2 -> {:.0} MiB at the end = {:+.1}% (limit {:.0}%; anon {:.0} -> {:.0} MiB)",
                mib(second.b.rss_kib),
                mib(last.b.rss_kib),
                growth * 100.0,
                RSS_GROWTH_MAX * 100.0,
                mib(second.b.rss_anon_kib),
                mib(last.b.rss_anon_kib)
            ),
        );
    } else {
        println!("SKIP p99 stable / RSS growth: needs at least 2 intervals");
    }
    let other_5xx = ctx.rec.other_5xx.load(Ordering::Relaxed);
    check(
        sum.e5xx + other_5xx == 0,
        "zero 5xx",
        format!(
            "{} during the load, {other_5xx} during setup and verification",
            sum.e5xx
        ),
    );
    match (verified, described) {
        (Ok((v, live_total, uncertain)), Ok(d)) => {
            let server_count = d.get("count").and_then(serde_json::Value::as_u64);
            let lost = ctx.rec.lost_on_delete.load(Ordering::Relaxed);
            let count_ok = if uncertain == 0 {
                server_count == Some(live_total as u64)
            } else {
                server_count
                    .is_some_and(|c| c >= live_total as u64 && c <= (live_total + uncertain) as u64)
            };
            let ok = v.missing == 0
                && v.wrong_vector == 0
                && v.resurrected == 0
                && v.errors == 0
                && lost == 0
                && count_ok;
            check(
                ok,
                "acknowledged writes present",
                format!(
                    "GET {} live ids (of {live_total}) and {} deleted ids in {verify_secs:.1} s: \
                     {} missing, {} with a wrong vector, {} deleted but found, {} errors; {lost} \
                     deletes of live ids answered 404; server count {} vs model {live_total}{}",
                    v.live_checked,
                    v.deleted_checked,
                    v.missing,
                    v.wrong_vector,
                    v.resurrected,
                    v.errors,
                    server_count.map_or("?".into(), |c| c.to_string()),
                    if uncertain > 0 {
                        format!(" (+ up to {uncertain} ids whose write had no clear answer)")
                    } else {
                        String::new()
                    }
                ),
            );
            for p in &v.first {
                println!("#   {p}");
            }
            if let Some(segments) = d.get("segments") {
                println!(
                    "# final collection: {} points in {segments} segments",
                    server_count.unwrap_or(0)
                );
            }
        }
        (Err(e), _) | (_, Err(e)) => check(
            false,
            "acknowledged writes present",
            format!("verification failed: {e}"),
        ),
    }

    if args.keep {
        let kept = root.keep();
        println!("# kept {}", kept.display());
    }
    if failed > 0 {
        return Err(format!("{failed} goal check(s) failed").into());
    }
    println!("# all goal checks passed");
    Ok(())
}
