//! `index_bench`'s command line (see the binary's doc for what each flag does).

use glimpse_index::PqBits;
use glimpse_index::synthetic::Shape;

use super::Result;

/// The parsed flags.
pub(crate) struct Args {
    pub(crate) n: usize,
    pub(crate) dim: usize,
    pub(crate) queries: usize,
    pub(crate) bits: PqBits,
    pub(crate) nlist: Option<usize>,
    pub(crate) m: Option<usize>,
    pub(crate) kmeans_iters: Option<usize>,
    pub(crate) pq_sample: Option<usize>,
    pub(crate) settings: Vec<(usize, usize)>,
    pub(crate) out: Option<String>,
    pub(crate) exact_queries: usize,
    pub(crate) seed: u64,
    pub(crate) vectors: VectorsMode,
    pub(crate) shape: Shape,
    pub(crate) query_shift: Option<f32>,
    pub(crate) targets: Vec<f32>,
    pub(crate) tiers: Tiers,
    pub(crate) evict: bool,
    /// Milliseconds between two evictions of the vector file (`--evict 1`).
    pub(crate) evict_ms: u64,
    /// Under `--evict 1`, MiB the evicted runs may fault back in (`--memory-cap-mb`: the
    /// process runs in a memory cgroup capped at that during them, the file evicted once at
    /// their start); 0 (the default) evicts every `evict_ms` instead.
    pub(crate) memory_cap_mb: u64,
    /// Calibration queries per set (the engine's default when `None`).
    pub(crate) calib_queries: Option<usize>,
    /// Seed of the calibration's row sample (the engine's default when `None`).
    pub(crate) calib_seed: Option<u64>,
    /// Standard errors the calibration subtracts (the engine's default when `None`).
    pub(crate) calib_margin: Option<f32>,
    /// Bootstrap replicates of the calibration's selection correction (the engine's default
    /// when `None`; 0 turns it off).
    pub(crate) calib_bootstrap: Option<usize>,
    /// The compact tier's codes (the engine's choice for the dimension when `None`).
    pub(crate) tier_codes: Option<glimpse_index::CompactKind>,
    /// Measure and run ranking on the codes alone too.
    pub(crate) codes_only: bool,
    /// Which pruning margins the runs with a tier use: the calibrated share (as the engine
    /// does), the full margin, or both side by side.
    pub(crate) tier_margin: MarginRuns,
    /// Map the raw vectors for scattered row reads (`--vector-advice rows`: no huge pages, no
    /// read-around, as the engine maps a segment whose index has a compact tier) instead of
    /// with 2 MiB pages (`huge`, the default, as it maps the others).
    pub(crate) row_reads: bool,
    /// Threads the timed pass searches on at once (`--search-threads`, default 1): a serving
    /// process answers concurrent queries, and one query's wait for a row read from disk is
    /// another's time on the core.
    pub(crate) search_threads: usize,
}

/// `--tier-margin`: which margins the runs with a tier prune with.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum MarginRuns {
    Calibrated,
    Full,
    Both,
}

/// Which re-rank the runs use (see the module doc).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Tiers {
    /// As the engine's default (`CompactRerank::Auto`): the tier where the calibration's
    /// default-target point uses it.
    Auto,
    Compact,
    F32,
    Both,
    /// Every setting on the index with rotated 6-bit codes, with 8-bit codes and without a
    /// tier, one after another.
    All,
}

/// Where the searched raw vectors live (see the module doc).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum VectorsMode {
    Mapped,
    Heap,
    Both,
}

pub(crate) fn parse_args() -> Result<Args> {
    let mut a = Args {
        n: 200_000,
        dim: 512,
        queries: 1000,
        bits: PqBits::Auto,
        nlist: None,
        m: None,
        kmeans_iters: None,
        pq_sample: None,
        settings: Vec::new(),
        out: None,
        exact_queries: 100,
        seed: 2024,
        vectors: VectorsMode::Mapped,
        shape: Shape::ClipLike,
        query_shift: None,
        targets: vec![0.9, 0.95, 0.98],
        tiers: Tiers::Auto,
        evict: false,
        evict_ms: 1000,
        memory_cap_mb: 0,
        calib_queries: None,
        calib_seed: None,
        calib_margin: None,
        calib_bootstrap: None,
        tier_codes: None,
        codes_only: false,
        tier_margin: MarginRuns::Calibrated,
        row_reads: false,
        search_threads: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let key = argv[i].as_str();
        let val = argv
            .get(i + 1)
            .ok_or_else(|| format!("missing value for {key}"))?;
        match key {
            "--n" => a.n = val.parse()?,
            "--dim" => a.dim = val.parse()?,
            "--queries" => a.queries = val.parse()?,
            "--exact-queries" => a.exact_queries = val.parse()?,
            "--seed" => a.seed = val.parse()?,
            "--calib-queries" => a.calib_queries = Some(val.parse()?),
            "--calib-seed" => a.calib_seed = Some(val.parse()?),
            "--calib-margin" => a.calib_margin = Some(val.parse()?),
            "--calib-bootstrap" => a.calib_bootstrap = Some(val.parse()?),
            "--nlist" => a.nlist = Some(val.parse()?),
            "--m" => a.m = Some(val.parse()?),
            "--kmeans-iters" => a.kmeans_iters = Some(val.parse()?),
            "--pq-sample" => a.pq_sample = Some(val.parse()?),
            "--bits" => {
                a.bits = match val.as_str() {
                    "4" => PqBits::Four,
                    "8" => PqBits::Eight,
                    "auto" => PqBits::Auto,
                    x => return Err(format!("--bits must be 4, 8 or auto, not {x}").into()),
                }
            }
            "--settings" => {
                for s in val.split(',') {
                    let (p, r) = s.split_once(':').ok_or("settings are nprobe:refine")?;
                    a.settings.push((p.parse()?, r.parse()?));
                }
            }
            "--out" => a.out = Some(val.clone()),
            "--data" => {
                a.shape = match val.as_str() {
                    "clip" => Shape::ClipLike,
                    "hard" => Shape::Hard,
                    x => return Err(format!("--data must be clip or hard, not {x}").into()),
                }
            }
            "--query-shift" => a.query_shift = Some(val.parse()?),
            "--tiers" => {
                a.tiers = match val.as_str() {
                    "auto" => Tiers::Auto,
                    "compact" => Tiers::Compact,
                    "f32" => Tiers::F32,
                    "both" => Tiers::Both,
                    "all" => Tiers::All,
                    x => {
                        return Err(format!(
                            "--tiers must be auto, compact, f32, both or all, not {x}"
                        )
                        .into());
                    }
                }
            }
            "--tier-codes" => {
                a.tier_codes = match val.as_str() {
                    "auto" => None,
                    "sq8" => Some(glimpse_index::CompactKind::Sq8),
                    "rq6" => Some(glimpse_index::CompactKind::Rotated6),
                    x => {
                        return Err(
                            format!("--tier-codes must be auto, sq8 or rq6, not {x}").into()
                        );
                    }
                }
            }
            "--evict" => a.evict = val == "1" || val == "true",
            "--codes-only" => a.codes_only = val == "1" || val == "true",
            "--vector-advice" => {
                a.row_reads = match val.as_str() {
                    "huge" => false,
                    "rows" => true,
                    x => return Err(format!("--vector-advice: {x}?").into()),
                }
            }
            "--tier-margin" => {
                a.tier_margin = match val.as_str() {
                    "calibrated" => MarginRuns::Calibrated,
                    "full" => MarginRuns::Full,
                    "both" => MarginRuns::Both,
                    x => return Err(format!("--tier-margin: {x}?").into()),
                }
            }
            "--evict-ms" => a.evict_ms = val.parse::<u64>()?.max(1),
            "--memory-cap-mb" => a.memory_cap_mb = val.parse::<u64>()?,
            "--search-threads" => a.search_threads = val.parse::<usize>()?.clamp(1, 256),
            "--targets" => {
                a.targets = val
                    .split(',')
                    .map(|t| t.parse::<f32>())
                    .collect::<std::result::Result<_, _>>()?
            }
            "--vectors" => {
                a.vectors = match val.as_str() {
                    "mapped" => VectorsMode::Mapped,
                    "heap" => VectorsMode::Heap,
                    "both" => VectorsMode::Both,
                    x => {
                        return Err(
                            format!("--vectors must be mapped, heap or both, not {x}").into()
                        );
                    }
                }
            }
            x => return Err(format!("unknown flag {x}").into()),
        }
        i += 2;
    }
    Ok(a)
}
