//! IVF-PQ index benchmark on synthetic CLIP-like data.
//!
//! Builds the data itself (deterministic), builds the index (train + add,
//! all cores), then for several nprobe/refine settings measures recall@10
//! against exact search, single-thread QPS and p50/p99 latency; exact brute
//! force is measured in the same run as the baseline. With `--out DIR` it
//! also writes `base.npy`, `queries.npy` and `glimpse_results.json` there
//! for `benches/faiss_compare.sh`.
//!
//! Usage: `index_bench [--n 200000] [--dim 512] [--queries 1000]
//!   [--bits 4|8] [--nlist N] [--m M] [--kmeans-iters I] [--pq-sample S] [--settings 8:10,16:10,...] [--out DIR]
//!   [--vectors mapped|heap|both] [--data clip|hard] [--query-shift F] [--tiers auto|compact|f32|both|all]
//!   [--calib-queries Q] [--calib-seed S] [--calib-margin SE]
//!   [--calib-bootstrap B] [--tier-codes auto|sq8|rq6] [--evict 1 [--evict-ms MS]] [--codes-only 1]
//!   [--tier-margin calibrated|full|both] [--vector-advice huge|rows] [--memory-cap-mb MB]
//!   [--search-threads N]`
//!
//! `--data hard` draws the harder mixture of issue 17 (`Shape::Hard`: thousands of uneven
//! clusters, isotropic noise as large as their spread) instead of the CLIP-like data the
//! defaults were tuned on; `--query-shift 0` makes the queries in-distribution (default 0.6:
//! shifted off the data's cone, as text queries sit apart from image embeddings).
//!
//! The index is calibrated as the storage engine calibrates it (`calibrate`, queries held out
//! of training); the benchmark prints the time it took beside the build's, the recall table,
//! and measures the rows "target=T" with the parameters the table names for each of
//! `--targets` (default 0.9, 0.95, 0.98; 0.95 is the engine's default), on the benchmark's own
//! queries, which the calibration never saw. `--calib-queries`, `--calib-seed` and `--calib-margin`
//! change the calibration's sample (queries per set; its seed) and its margin (standard errors
//! subtracted), to tell its sampling noise from a bias of its recall model; `--calib-bootstrap`
//! its replicates of the selection's optimism (0: none).
//!
//! By default (`--tiers auto`) the index is searched as the storage engine writes it by
//! default: with the compact re-rank tier (`CompactCodes` of the kind `--tier-codes` names:
//! by default the engine's, `CompactKind::for_dim`; `sq8` one byte per dimension, `rq6` rotated
//! 6-bit codes; the recall table is costed for the engine's kind whichever is built) when the
//! calibration's 0.95 point re-ranks at least `AUTO_COMPACT_MIN_REFINE` per result, else
//! without; `--tiers compact`
//! searches the copy carrying it (as with `serve --compact-rerank on`), `--tiers f32` the copy
//! without, `--tiers both` runs every setting on each, `--tiers all` on the copy with rotated
//! 6-bit codes, the one with 8-bit codes and the one without, one after another (to compare
//! the kinds in one process: this VM's speed drifts between processes). `--evict 1`
//! runs every setting a second time ("[evicted]") while a thread drops the raw vector file from
//! memory every second (`--evict-ms`: the period; a fault reads a whole read-around window back,
//! so a second lets much of the file return between two drops) (`madvise(MADV_DONTNEED)` on the mapping, then
//! `posix_fadvise(POSIX_FADV_DONTNEED)` on the file), so the re-rank's reads go to the disk.
//! On a VM whose virtual disk answers from the host's cache that measures little (see
//! `docs/benchmarks.md`, "Compact re-rank tier and evicted vectors").
//!
//! `--codes-only 1` also measures, as the engine does for an index with the tier, each recall
//! table point's recall when ranking on the codes alone (`rescore` off), prints it and its
//! cost, and adds a codes-only run (" codes", no raw row read) of every target whose table names
//! a codes-only point and of every `--settings` pair, on the indexes with a tier (under
//! `--tiers all` the 8-bit copy's codes-only runs use the table measured on the rotated one).
//! Runs with a tier prune with the share of its margin measured as the engine measures it
//! (`RecallGrid::measure_tier_margin`, per kind of codes; printed with its cost);
//! `--tier-margin full` prunes with the full margin, `both` runs each setting both ways
//! (" m=full", " m=cal").
//!
//! `--memory-cap-mb MB` (with `--evict 1`) runs the evicted runs in a memory cgroup capped at
//! that (`MemoryCap`; Linux, cgroup v1, root): the vector file is evicted once at their start and
//! can come back only up to the cap, as on a machine with less memory than its data, instead of
//! being dropped every `--evict-ms` (which a fast page cache behind the disk refills between
//! drops).
//!
//! `--search-threads N` runs each timed pass on N threads at once, sharing the queries (a
//! serving process's concurrency: one query's wait for a row read from disk is another's time
//! on the core); q/s is then over wall time for all of them, q/cpu-s over the process's CPU
//! time, and p50/p99 over every query of every thread.
//!
//! `--vector-advice rows` maps the raw vectors as the engine maps those of a segment whose
//! index has a compact tier (`MappedF32::advise_row_reads`: no 2 MiB pages, no read-around);
//! the default, `huge`, as it maps the others.
//!
//! `--vectors` says where the raw vectors that the re-rank reads live: `mapped` (default) is how
//! the storage engine serves them, a file in the page cache mapped with `MappedF32` (huge pages
//! where the kernel gives them); `heap` is a plain `Vec`; `both` runs every setting on each,
//! alternating, to measure the difference in one process.

mod args;

use std::time::Instant;

use args::{MarginRuns, Tiers, VectorsMode, parse_args};

use glimpse_benches::mapped_files::{EvictGuard, MemoryCap, map_bytes, mapped_copy, mapped_index};
use glimpse_index::synthetic::{Shape, SyntheticSpec, generate, to_npy};
use glimpse_index::{
    Calibration, CalibrationOptions, Cancel, IndexParams, IvfPqIndex, IvfPqView, Metric, Neighbor,
    SearchParams, calibration_rows, exact_search, exact_search_batch, measure_recall,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn ctx<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> Result<T> {
    r.map_err(|e| format!("{what}: {e}").into())
}

/// CPU time of the calling thread, in seconds. Reported beside wall time
/// because the shared bench machine is often loaded by other processes.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU time of the whole process (all threads), in seconds.
fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn recall(got: &[Neighbor], want: &[Neighbor]) -> f64 {
    let hits = got
        .iter()
        .filter(|g| want.iter().any(|w| w.row == g.row))
        .count();
    hits as f64 / want.len().max(1) as f64
}

/// Reads one float of every 4 KiB page of `vectors`, so a mapped file is resident after.
fn touch_pages(vectors: &[f32]) {
    let sum: f32 = vectors.iter().step_by(1024).sum();
    std::hint::black_box(sum);
}

/// The calibration's recall table, one line per target.
fn print_calibration(c: &Calibration) {
    println!(
        "recall table (k={}, {} queries per set, shift {}):",
        c.k, c.queries, c.shift
    );
    for p in &c.points {
        println!(
            "  target {:<6} nprobe {:>4} refine {:>3}  recall in {:.4} shifted {:.4}{}",
            p.target,
            p.nprobe,
            p.refine,
            p.recall_in,
            p.recall_shifted,
            if p.reached { "" } else { "  (not reached)" }
        );
        if p.codes_recall_in > 0.0 {
            println!(
                "  {:<37} codes only: in {:.4} shifted {:.4}{}",
                "",
                p.codes_recall_in,
                p.codes_recall_shifted,
                if p.codes_reached {
                    ""
                } else {
                    "  (not reached)"
                }
            );
        }
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (n, dim) = (args.n, args.dim);
    let metric = Metric::Cosine;
    let k = 10;
    println!(
        "# index_bench: N={n} d={dim} queries={} metric={metric}",
        args.queries
    );
    println!(
        "# cores: {} (build uses all; search single-threaded)",
        rayon::current_num_threads()
    );

    let t = Instant::now();
    let mut spec = match args.shape {
        Shape::ClipLike => SyntheticSpec::clip_like(n, args.queries, dim, args.seed),
        Shape::Hard => SyntheticSpec::hard(n, args.queries, dim, args.seed),
    };
    if let Some(s) = args.query_shift {
        spec.query_shift = s;
    }
    println!(
        "# data: {:?}, query shift {} ({})",
        args.shape,
        spec.query_shift,
        if spec.query_shift == 0.0 {
            "in-distribution queries"
        } else {
            "queries shifted off the data's cone"
        }
    );
    let data = generate(&spec);
    println!("data generated in {:.1}s", t.elapsed().as_secs_f64());

    if let Some(dir) = &args.out {
        ctx(std::fs::create_dir_all(dir), &format!("creating {dir}"))?;
        let p = format!("{dir}/base.npy");
        ctx(
            std::fs::write(&p, to_npy(&data.vectors, n, dim)),
            &format!("writing {p}"),
        )?;
        let p = format!("{dir}/queries.npy");
        ctx(
            std::fs::write(&p, to_npy(&data.queries, args.queries, dim)),
            &format!("writing {p}"),
        )?;
        println!("wrote {dir}/base.npy and {dir}/queries.npy");
    }

    // Ground truth (parallel), then single-thread exact timing on a subset.
    let t = Instant::now();
    let truth: Vec<Vec<Neighbor>> =
        exact_search_batch(&data.vectors, dim, metric, &data.queries, k, None);
    println!("ground truth in {:.1}s", t.elapsed().as_secs_f64());
    let ne = args.exact_queries.min(args.queries);
    let t = Instant::now();
    let c = thread_cpu_s();
    for i in 0..ne {
        std::hint::black_box(exact_search(
            &data.vectors,
            dim,
            metric,
            data.query(i),
            k,
            None,
        ));
    }
    let exact_qps = ne as f64 / t.elapsed().as_secs_f64();
    let exact_cpu_qps = ne as f64 / (thread_cpu_s() - c);

    let params = IndexParams {
        nlist: args.nlist,
        m: args.m,
        bits: args.bits,
        kmeans_iters: args
            .kmeans_iters
            .unwrap_or(IndexParams::default().kmeans_iters),
        pq_train_sample: args.pq_sample,
        ..IndexParams::default()
    };
    let build_cpu = process_cpu_s();
    let mut copts = CalibrationOptions::default();
    if let Some(q) = args.calib_queries {
        copts.queries = q;
    }
    if let Some(s) = args.calib_seed {
        copts.seed = s;
    }
    if let Some(m) = args.calib_margin {
        copts.margin_se = m;
    }
    if let Some(b) = args.calib_bootstrap {
        copts.bootstrap = b;
    }
    let held_out = calibration_rows(n, &copts);
    let t = Instant::now();
    let index = IvfPqIndex::train_holding_out(
        &data.vectors,
        dim,
        metric,
        &params,
        &held_out,
        Cancel::NEVER,
    )?;
    let train_s = t.elapsed().as_secs_f64();
    let mut index = index;
    let t = Instant::now();
    index.add(&data.vectors, 0, Cancel::NEVER)?;
    let add_s = t.elapsed().as_secs_f64();
    let build_cpu = process_cpu_s() - build_cpu;
    let cal_cpu = process_cpu_s();
    let t = Instant::now();
    let grid = measure_recall(
        &index.view(),
        &data.vectors,
        &held_out,
        &copts,
        Cancel::NEVER,
    )?;
    // The table as the engine stores it without the compact tier, and with it (costed for
    // the tier's cheaper re-rank).
    let cal = grid.as_ref().map(|g| g.table(false));
    let cal_tier = grid.as_ref().map(|g| g.table(true));
    let cal_s = t.elapsed().as_secs_f64();
    let cal_cpu = process_cpu_s() - cal_cpu;
    println!(
        "calibration: {cal_s:.2}s wall, {cal_cpu:.1}s CPU = {:.1}% of the build's wall time ({:.1}% CPU)",
        100.0 * cal_s / (train_s + add_s),
        100.0 * cal_cpu / build_cpu
    );
    if let Some(c) = &cal {
        print_calibration(c);
    }
    if let Some(c) = cal_tier.as_ref().filter(|&c| Some(c) != cal.as_ref()) {
        println!("costed for an index with the compact tier:");
        print_calibration(c);
    }
    let tier_kind = if args.tiers == Tiers::All {
        glimpse_index::CompactKind::Rotated6
    } else {
        args.tier_codes
            .unwrap_or(glimpse_index::CompactKind::for_dim(dim))
    };
    println!("# compact tier codes: {tier_kind:?}");
    let compact = glimpse_index::CompactCodes::build(tier_kind, &data.vectors, dim, metric);
    let heap_bytes = index.to_bytes_with(cal_tier.as_ref(), compact.as_ref());
    let heap_plain_bytes = index.to_bytes_with(cal.as_ref(), None);
    // The index as the engine stores it by default (no compact tier), and with the tier,
    // each mapped from a file as the engine maps it.
    let bpv = heap_plain_bytes.len() as f64 / n as f64;
    let bpv_compact = heap_bytes.len() as f64 / n as f64;
    let (_plain_dir, plain_map, _) = mapped_index(&heap_plain_bytes)?;
    let (_tier_dir, tier_map, pmd_after_index) = mapped_index(&heap_bytes)?;
    drop((heap_bytes, heap_plain_bytes));
    println!(
        "# index files: mapped, {} MiB of huge pages in the process after mapping them",
        pmd_after_index >> 10
    );
    let plain_view = IvfPqView::from_bytes(map_bytes(&plain_map))?;
    let view = IvfPqView::from_bytes(map_bytes(&tier_map))?;
    // As the engine does for an index with a tier: each point's recall on the codes alone.
    let mut cal_codes = cal_tier.clone();
    if let (true, Some(g), Some(c)) = (args.codes_only, &grid, cal_codes.as_mut()) {
        let (t, cpu) = (Instant::now(), process_cpu_s());
        g.measure_codes_only(&view, &data.vectors, c, Cancel::NEVER)?;
        println!(
            "codes-only calibration: {:.2}s wall, {:.1}s CPU = {:.1}% of the build's wall time",
            t.elapsed().as_secs_f64(),
            process_cpu_s() - cpu,
            100.0 * t.elapsed().as_secs_f64() / (train_s + add_s)
        );
        print_calibration(c);
    }
    // Under `--tiers all`, the same index with the other kind of codes.
    let sq8_map = if args.tiers == Tiers::All {
        let codes = glimpse_index::CompactCodes::build(
            glimpse_index::CompactKind::Sq8,
            &data.vectors,
            dim,
            metric,
        );
        let bytes = index.to_bytes_with(cal_tier.as_ref(), codes.as_ref());
        println!(
            "# --tiers all: {:.1} bytes/vector with 8-bit codes",
            bytes.len() as f64 / n as f64
        );
        Some(mapped_index(&bytes)?)
    } else {
        None
    };
    let sq8_view = match &sq8_map {
        Some((_, map, _)) => Some(IvfPqView::from_bytes(map_bytes(map))?),
        None => None,
    };
    // As the engine does for an index with a tier: the share of the margin its queries need.
    let (t, mut shares) = (Instant::now(), Vec::new());
    for v in std::iter::once(&view).chain(sq8_view.as_ref()) {
        if let (Some(g), Some(mut c)) = (&grid, cal_tier.clone()) {
            g.measure_tier_margin(v, &data.vectors, &mut c, Cancel::NEVER)?;
            println!(
                "# tier margin ({:?}): {:.3}",
                v.compact_kind(),
                c.tier_margin_for(k)
            );
            shares.push((v.compact_kind(), c.tier_margin_for(k)));
        }
    }
    let share = |kind| shares.iter().find(|s| s.0 == kind).map_or(1.0, |s| s.1);
    let pct = 100.0 * t.elapsed().as_secs_f64() / (train_s + add_s);
    println!("tier margin calibration: {pct:.1}% of the build's wall time");
    let sizes = index.list_sizes();
    let max_list = sizes.iter().copied().max().unwrap_or(0);
    println!(
        "build: train {train_s:.2}s + add {add_s:.2}s = {:.2}s wall, {build_cpu:.1}s CPU; nlist={} m={} bits={:?}; \
         index {:.1} bytes/vector, {bpv_compact:.1} with the compact tier (raw f32: {} bytes/vector); largest list {max_list} (mean {:.0})",
        train_s + add_s,
        index.nlist(),
        index.m(),
        index.bits(),
        bpv,
        dim * 4,
        n as f64 / index.nlist() as f64
    );

    let settings = if args.settings.is_empty() {
        let base = glimpse_index::default_nprobe(index.nlist());
        vec![
            (base / 4, 10),
            (base / 2, 10),
            (base, 5),
            (base, 10),
            (base * 2, 10),
            (base * 4, 20),
        ]
    } else {
        args.settings.clone()
    };

    println!();
    println!(
        "{:<22} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8}",
        "config", "recall@10", "QPS wall", "QPS cpu", "p50 us", "p99 us", "vs exact", "raw rows"
    );
    println!(
        "{:<22} {:>9.4} {:>10.1} {:>10.1} {:>9.0} {:>9.0} {:>10}",
        "exact brute force",
        1.0,
        exact_qps,
        exact_cpu_qps,
        1e6 / exact_qps,
        1e6 / exact_qps,
        "1.0x"
    );
    let mut rows = Vec::new();
    let default_label = "defaults before calibration";
    let mut all: Vec<(String, SearchParams)> =
        vec![(default_label.to_string(), SearchParams::default())];
    // Which tables' points the target rows search with: the one of the index each run
    // searches (for `auto`, as the engine decides), both under `both`.
    let deep = cal
        .as_ref()
        .and_then(|c| c.point_for(glimpse_index::DEFAULT_RECALL_TARGET))
        .is_some_and(glimpse_storage::auto_builds_compact_tier);
    let tables: Vec<(&str, Option<&Calibration>)> = match args.tiers {
        Tiers::Auto if deep => vec![("", cal_tier.as_ref())],
        Tiers::Auto | Tiers::F32 => vec![("", cal.as_ref())],
        Tiers::Compact => vec![("", cal_tier.as_ref())],
        Tiers::Both | Tiers::All => vec![
            (" tier table", cal_tier.as_ref()),
            (" f32 table", cal.as_ref()),
        ],
    };
    for &t in &args.targets {
        for &(which, table) in &tables {
            if let Some(p) = table.and_then(|c| c.point_for(t)) {
                all.push((
                    format!("target={t}{which} ({}:{})", p.nprobe, p.refine),
                    SearchParams {
                        k,
                        nprobe: Some(p.nprobe as usize),
                        refine: Some(p.refine as usize),
                        rescore: true,
                        tier_margin: 1.0,
                    },
                ));
            }
        }
    }
    if args.codes_only {
        for &t in &args.targets {
            if let Some(p) = cal_codes.as_ref().and_then(|c| c.codes_point_for(t)) {
                all.push((
                    format!("target={t} codes ({}:{})", p.nprobe, p.refine),
                    SearchParams {
                        k,
                        nprobe: Some(p.nprobe as usize),
                        refine: Some(p.refine as usize),
                        rescore: false,
                        tier_margin: 1.0,
                    },
                ));
            }
        }
    }
    for &(p, r) in &settings {
        for rescore in [true, false] {
            if rescore || args.codes_only {
                all.push((
                    format!(
                        "nprobe={} refine={r}{}",
                        p.max(1),
                        if rescore { "" } else { " codes" }
                    ),
                    SearchParams {
                        k,
                        nprobe: Some(p.max(1)),
                        refine: Some(r),
                        rescore,
                        tier_margin: 1.0,
                    },
                ));
            }
        }
    }
    let mapped = if args.vectors == VectorsMode::Heap {
        None
    } else {
        let (dir, map, pmd_kb) = mapped_copy(&data.vectors)?;
        if args.row_reads {
            map.advise_row_reads();
        }
        println!(
            "# vectors: {} MiB file mapping, {} MiB of it on huge pages",
            (data.vectors.len() * 4) >> 20,
            pmd_kb.saturating_sub(pmd_after_index) >> 10
        );
        Some((dir, map))
    };
    let mut base_runs: Vec<(String, SearchParams, &[f32])> = Vec::new();
    for (label, sp) in all {
        match (&mapped, args.vectors) {
            (Some((_, map)), VectorsMode::Both) => {
                base_runs.push((format!("{label} [map]"), sp, map.as_slice()));
                base_runs.push((format!("{label} [heap]"), sp, &data.vectors));
            }
            (Some((_, map)), _) => base_runs.push((label, sp, map.as_slice())),
            (None, _) => base_runs.push((label, sp, &data.vectors)),
        }
    }
    let tiers: Vec<(&str, &IvfPqView<'_>)> = match args.tiers {
        Tiers::Auto => {
            println!(
                "# tiers auto: {} (as the engine's default: the tier from {} per result at the 0.95 point)",
                if deep {
                    "compact tier"
                } else {
                    "no tier, f32 re-rank"
                },
                glimpse_storage::AUTO_COMPACT_MIN_REFINE
            );
            vec![("", if deep { &view } else { &plain_view })]
        }
        Tiers::Compact => vec![("", &view)],
        Tiers::F32 => vec![("", &plain_view)],
        Tiers::Both => vec![(" [compact]", &view), (" [f32]", &plain_view)],
        Tiers::All => match &sq8_view {
            Some(sq) => vec![(" [rq6]", &view), (" [sq8]", sq), (" [f32]", &plain_view)],
            None => vec![(" [rq6]", &view), (" [f32]", &plain_view)],
        },
    };
    let evicts: &[bool] = if args.evict && mapped.is_some() {
        &[false, true]
    } else {
        &[false]
    };
    let mut runs = Vec::new();
    for (label, sp, vectors) in base_runs {
        for &(tier, v) in &tiers {
            // Ranking on the codes alone needs a tier.
            if !sp.rescore && v.compact_kind().is_none() {
                continue;
            }
            let calibrated = share(v.compact_kind());
            let margins = match args.tier_margin {
                _ if v.compact_kind().is_none() || !sp.rescore => vec![(1.0, "")],
                MarginRuns::Calibrated => vec![(calibrated, "")],
                MarginRuns::Full => vec![(1.0, "")],
                MarginRuns::Both => vec![(1.0, " m=full"), (calibrated, " m=cal")],
            };
            for (tier_margin, m) in margins {
                for &evict in evicts {
                    let suffix = if evict { " [evicted]" } else { "" };
                    let sp = SearchParams { tier_margin, ..sp };
                    runs.push((format!("{label}{tier}{m}{suffix}"), sp, vectors, v, evict));
                }
            }
        }
    }
    for (label, sp, vectors, view, evict) in &runs {
        let vectors: &[f32] = vectors;
        let capped = *evict && args.memory_cap_mb > 0;
        let cap = match capped {
            true => Some(MemoryCap::enter(args.memory_cap_mb << 20)?),
            false => None,
        };
        // Under a cap, one eviction just before the timed pass (after the warm-up, whose rows
        // would otherwise still be there) and one pass over the queries: every query meets
        // the file cold but for what earlier queries of the pass faulted back within the cap.
        let start_evicting = || match (&mapped, *evict) {
            (Some((dir, map)), true) if std::ptr::eq(vectors, map.as_slice()) => {
                let period = if capped { u64::MAX / 2 } else { args.evict_ms };
                EvictGuard::start(dir.path().join("vectors.f32"), vectors, period).map(Some)
            }
            _ => Ok(None),
        };
        if !*evict {
            // Resident means resident: an earlier evicted run may have left the file out, and
            // a search that prunes on the tier whenever its rows are out would never bring the
            // ruled-out rows back by itself.
            touch_pages(vectors);
        }
        let mut evictor = if capped { None } else { start_evicting()? };
        // Warm-up pass (also measures recall), then timed pass.
        let mut rec = 0.0;
        let mut stats = glimpse_index::SearchStats::default();
        for (i, want) in truth.iter().enumerate() {
            let got = view.search_with_stats(data.query(i), vectors, sp, None, &mut stats);
            rec += recall(&got, want);
        }
        rec /= args.queries as f64;
        // Raw rows read by the re-rank per query (after the compact tier's pruning); for an
        // evicted run, those of the timed pass (a shallow search prunes only with its rows out).
        let mut raw_rows = stats.reranked as f64 / args.queries as f64;
        let mut timed = glimpse_index::SearchStats::default();
        if capped {
            evictor = start_evicting()?;
            // Let the eviction happen before the first query.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Evicted runs go on for at least 5 s, so the file is dropped several times during
        // the measurement rather than once at its start.
        let min_secs = if *evict && !capped { 5.0 } else { 0.0 };
        let threads = args.search_threads;
        // One thread's CPU time, or the process's when several search (the evicting thread's
        // few microseconds a second included).
        let cpu_s = if threads == 1 {
            thread_cpu_s
        } else {
            process_cpu_s
        };
        let next = std::sync::atomic::AtomicUsize::new(0);
        let t = Instant::now();
        let c = cpu_s();
        let search_until_done = || {
            let mut stats = glimpse_index::SearchStats::default();
            let mut lat = Vec::with_capacity(args.queries / threads + 1);
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= args.queries && t.elapsed().as_secs_f64() >= min_secs {
                    break;
                }
                let s = Instant::now();
                let q = data.query(n % args.queries);
                std::hint::black_box(view.search_with_stats(q, vectors, sp, None, &mut stats));
                lat.push(s.elapsed().as_secs_f64() * 1e6);
            }
            (lat, stats)
        };
        let parts: Vec<(Vec<f64>, glimpse_index::SearchStats)> = if threads == 1 {
            vec![search_until_done()]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| scope.spawn(search_until_done))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|_| "a search thread panicked"))
                    .collect::<std::result::Result<_, _>>()
            })?
        };
        let wall = t.elapsed().as_secs_f64();
        let cpu = cpu_s() - c;
        let mut lat = Vec::with_capacity(args.queries);
        for (part, stats) in &parts {
            lat.extend_from_slice(part);
            timed.add(stats);
        }
        let done = lat.len();
        let qps = done as f64 / wall;
        if *evict {
            raw_rows = timed.reranked as f64 / done as f64;
        }
        let cpu_qps = done as f64 / cpu;
        lat.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        drop(evictor);
        if let Some(c) = cap {
            println!(
                "# capped at {} MiB: reclaimed {} times",
                args.memory_cap_mb,
                c.failcnt()
            );
        }
        println!(
            "{label:<22} {rec:>9.4} {qps:>10.1} {cpu_qps:>10.1} {p50:>9.0} {p99:>9.0} {:>9.1}x {raw_rows:>8.1}",
            cpu_qps / exact_cpu_qps
        );
        rows.push(format!(
            "    {{\"config\": \"{label}\", \"nprobe\": {}, \"refine\": {}, \"recall\": {rec:.5}, \
             \"qps\": {qps:.2}, \"cpu_qps\": {cpu_qps:.2}, \"p50_us\": {p50:.1}, \"p99_us\": {p99:.1}}}",
            sp.nprobe.unwrap_or(glimpse_index::default_nprobe(index.nlist())),
            sp.refine.unwrap_or(glimpse_index::default_refine(n)),
        ));
    }

    if let Some(dir) = &args.out {
        let json = format!(
            "{{\"n\": {n}, \"dim\": {dim}, \"queries\": {}, \"k\": {k}, \"nlist\": {}, \
             \"m\": {}, \"bits\": \"{:?}\", \"train_s\": {train_s:.3}, \"add_s\": {add_s:.3}, \
             \"build_s\": {:.3}, \"build_cpu_s\": {build_cpu:.3}, \"bytes_per_vector\": {bpv:.2}, \"exact_qps\": {exact_qps:.2}, \"exact_cpu_qps\": {exact_cpu_qps:.2}, \
             \"configs\": [\n{}\n]}}\n",
            args.queries,
            index.nlist(),
            index.m(),
            index.bits(),
            train_s + add_s,
            rows.join(",\n")
        );
        let p = format!("{dir}/glimpse_results.json");
        ctx(std::fs::write(&p, json), &format!("writing {p}"))?;
        println!("wrote {p}");
    }
    Ok(())
}
