//! Public data types: points, metadata values, options, statistics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::filter::Filter;
pub use crate::meta_value::MetaValue;

/// Longest id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest metadata key, in bytes.
pub const MAX_META_KEY_BYTES: usize = 256;
/// Most metadata one point may carry, keys and string values together, in bytes: every search
/// hit echoes it, and a bulk load holds it in memory until its commit.
pub const MAX_META_BYTES_PER_POINT: usize = 64 << 10;
/// Largest squared L2 norm of a stored or query vector: beyond it, dot products and distances
/// overflow `f32` and scores turn into infinities or NaN.
pub const MAX_SQUARED_NORM: f64 = f32::MAX as f64;
/// Largest number of results one search may ask for.
pub const MAX_K: usize = 10_000;

/// One stored point.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Point {
    /// Unique id within its collection (1..=256 bytes).
    pub id: String,
    /// The vector; its length must equal the collection's dimension.
    pub vector: Vec<f32>,
    /// Where the image lives, if it is stored outside the database.
    pub image_path: Option<String>,
    /// Inline image bytes, kept in a per-segment blob file.
    pub image_bytes: Option<Vec<u8>>,
    /// Flat metadata.
    pub metadata: BTreeMap<String, MetaValue>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Ids that did not exist before.
    pub inserted: usize,
    /// Ids whose previous version was replaced.
    pub replaced: usize,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The point id.
    pub id: String,
    /// Score under the collection metric (see [`Metric`]).
    pub score: f32,
    /// The stored image path, if any.
    pub image_path: Option<String>,
    /// The stored metadata.
    pub metadata: BTreeMap<String, MetaValue>,
}

/// Where one search spent its time, for monitoring: the ANN stages summed
/// over indexed segments, and the exact scans of memtables and of segments
/// still waiting for their index.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SearchTimings {
    /// Coarse ranking, distance tables and list scans of the indexed segments.
    pub ann_scan: std::time::Duration,
    /// Exact re-ranking of their candidates against the raw vectors.
    pub rerank: std::time::Duration,
    /// Brute-force scans (memtables, unindexed segments).
    pub exact_scan: std::time::Duration,
    /// Indexed segments searched.
    pub indexed_segments: u32,
    /// Rows scanned exactly.
    pub exact_rows: u64,
    /// Candidates re-ranked against the raw vectors over all indexed segments.
    pub reranked: u64,
    /// Candidates scored on the compact tier's codes first (see `SearchStats`).
    pub compact_scored: u64,
    /// The lowest recall@k that an indexed segment's recall table promised for the parameters
    /// it used (exactly scanned rows count as 1); `None` when no table spoke.
    pub expected_recall: Option<f32>,
    /// Indexed segments searched without a promise: no recall table (an index written before
    /// calibration, or too small to calibrate), or `nprobe`/`refine` given by hand.
    pub uncalibrated_segments: u32,
}

impl SearchTimings {
    /// Folds one indexed segment's promised recall into the totals.
    pub(crate) fn note_segment_recall(&mut self, recall: Option<f32>) {
        match recall {
            Some(r) => {
                self.expected_recall = Some(self.expected_recall.map_or(r, |e| e.min(r)));
            }
            None => self.uncalibrated_segments += 1,
        }
    }
}

/// Parameters of a search.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// Number of results (1..=[`MAX_K`]).
    pub k: usize,
    /// IVF lists to probe in indexed segments (the recall table's when `None`).
    pub nprobe: Option<usize>,
    /// Candidates re-ranked exactly per indexed segment (index default when `None`).
    pub refine: Option<usize>,
    /// Recall@k to aim at in indexed segments (default
    /// [`DEFAULT_RECALL_TARGET`](glimpse_index::DEFAULT_RECALL_TARGET)): each segment uses the
    /// cheapest parameters its own recall table names for it; 1.0 scans exactly. `nprobe` and
    /// `refine`, when given, override the table's.
    pub recall_target: Option<f32>,
    /// Whether indexed segments read the raw rows for the final ranking.
    pub rescore: Rescore,
    /// Metadata filter evaluated per row inside the scan.
    pub filter: Option<Filter>,
}

/// Whether a search of an indexed segment reads its raw `f32` rows for the final ranking, or
/// ranks on the compact tier's codes alone (no raw read, scores that are estimates). Segments
/// without a compact tier always read the raw rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rescore {
    /// Always re-rank exactly on the raw rows: exact scores.
    #[default]
    Always,
    /// Rank on the codes alone in each segment whose recall table found that ranking reach
    /// the target (it then uses that point's parameters), else as `Always`: the raw rows may
    /// sit on a slow disk without slowing searches, at the recall the table promises.
    Auto,
    /// Rank on the codes alone wherever a segment has them, whatever its table says (an
    /// expert override: the recall promised is the codes-only one where measured).
    Never,
}

impl Rescore {
    /// The name used by the HTTP API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Rescore::Always => "always",
            Rescore::Auto => "auto",
            Rescore::Never => "never",
        }
    }
}

impl std::str::FromStr for Rescore {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Rescore, String> {
        match s {
            "always" => Ok(Rescore::Always),
            "auto" => Ok(Rescore::Auto),
            "never" => Ok(Rescore::Never),
            other => Err(format!(
                "rescore must be `always`, `auto` or `never`, got {other:?}"
            )),
        }
    }
}

/// When acknowledged writes reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync the WAL before acknowledging each write (group commit shares
    /// one fsync among concurrent writers). Survives power loss.
    #[default]
    EveryCommit,
    /// fsync the WAL at this interval; a power cut loses at most about this
    /// much acknowledged data (a process crash loses nothing).
    Periodic(Duration),
}

/// How segment files are checked when a store opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Files up to this size are crc-checked at open; larger ones (the
    /// vector, blob and index files of big segments) get a length check at
    /// open and a full crc check in a background thread.
    pub max_bytes_at_open: u64,
    /// Whether large files are verified in the background after open.
    pub background: bool,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            max_bytes_at_open: 64 << 20,
            background: true,
        }
    }
}

/// Size-tiered compaction settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionOptions {
    /// Run compaction automatically in the background.
    pub enabled: bool,
    /// Merge when at least this many segments fall in one size tier.
    pub min_merge: usize,
    /// Merge at most this many segments at once.
    pub max_merge: usize,
    /// Segments whose row counts differ by less than this factor share a tier.
    pub tier_ratio: f64,
    /// Rewrite a segment alone once this fraction of its rows is deleted.
    pub max_deleted_fraction: f64,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            min_merge: 4,
            max_merge: 10,
            tier_ratio: 4.0,
            max_deleted_fraction: 0.3,
        }
    }
}

/// Which new index files carry the compact re-rank tier ([`StoreOptions::compact_rerank`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CompactRerank {
    /// Those whose own calibration found that the default recall target needs a deep re-rank
    /// (at least [`crate::AUTO_COMPACT_MIN_REFINE`] candidates per result), where the tier
    /// makes searches clearly faster: data whose PQ ranking is coarse, such as many uneven
    /// clusters under heavy noise. Data that a shallow re-rank serves (CLIP-like clusters)
    /// gets none and keeps its size.
    #[default]
    Auto,
    /// Every cosine or dot index: for collections whose vectors outgrow RAM.
    On,
    /// None.
    Off,
}

/// How wide a margin the compact tier prunes candidates with ([`StoreOptions::tier_margin`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TierMargin {
    /// The share of the full margin that each index's own calibration queries needed to keep
    /// their exact top k, with a quarter to spare (`glimpse_index::Calibration::tier_margin`;
    /// the full margin where none was measured): 3-7x fewer raw rows read. A fresh query needs
    /// more than all 512 calibration queries did with odds below 1/513, and then a near-tie at
    /// the k-th place may swap.
    #[default]
    Measured,
    /// The full margin: the same top k as re-ranking every candidate on its raw row, always
    /// for 8-bit codes, and short of odds below `e^-36` a pair for the rotated 6-bit ones.
    Full,
}

/// Options of [`crate::Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// WAL fsync policy.
    pub durability: Durability,
    /// Freeze and flush the memtable at this many rows.
    pub memtable_flush_rows: usize,
    /// Freeze and flush the memtable at about this many bytes.
    pub memtable_flush_bytes: usize,
    /// Start a new WAL file after this many bytes.
    pub wal_segment_bytes: u64,
    /// Compaction settings.
    pub compaction: CompactionOptions,
    /// Segments with at least this many rows get an ANN index file of their own training.
    pub index_min_rows: usize,
    /// Which index files also carry the compact re-rank tier (cosine and dot only; from 256
    /// dimensions rotated 6-bit codes, 0.75 bytes per dimension of every row, under that one
    /// byte): the re-rank then reads raw rows only for the candidates its error margin
    /// ([`tier_margin`](Self::tier_margin)) cannot rule out, so the raw vector file need not
    /// stay in memory. It adds `0.75·dim` (or `dim`) bytes per row to the index file.
    /// Default [`CompactRerank::Auto`].
    pub compact_rerank: CompactRerank,
    /// The margin the compact tier prunes with. Default [`TierMargin::Measured`].
    pub tier_margin: TierMargin,
    /// Smaller segments (memtable flushes, small bulk loads) of at least this many rows are
    /// indexed with the quantizers of a trained index when the collection has one: one
    /// assignment pass, no k-means. Without it every such segment would be scanned exactly
    /// until a compaction merged it, and search time would climb under steady writes.
    pub borrowed_index_min_rows: usize,
    /// Bulk commits publish their segment before its ANN index exists (the
    /// way Qdrant, Milvus and Lance treat fresh data): the load returns once
    /// the data is durable, the segment is searched exactly meanwhile, and
    /// the background thread builds the index when bulk loading has been
    /// quiet for [`StoreOptions::bulk_quiet`]. `false` builds it inside the
    /// commit, before the data becomes visible.
    pub defer_bulk_index: bool,
    /// How long no bulk writer must have been open before the background
    /// thread starts deferred index builds or compactions: a load of many
    /// shards then runs without them competing for the cores, and the
    /// shards can be merged before anything is indexed twice.
    pub bulk_quiet: Duration,
    /// The longest deferred index builds wait for
    /// [`StoreOptions::bulk_quiet`] once they are due: under a steady
    /// stream of bulk loads they then run at least this often. They run
    /// outside the maintenance lock, so loads go on meanwhile, and later
    /// loads borrow the trained quantizers.
    pub bulk_quiet_max: Duration,
    /// The same bound for compactions, which hold the maintenance lock
    /// (and so every bulk commit) while they merge and train: longer, so a
    /// load of many shards is not stalled half way by a merge of its first
    /// shards.
    pub bulk_compaction_quiet_max: Duration,
    /// Checksum policy at open.
    pub verify: VerifyPolicy,
    /// Skip (and truncate) corrupt WAL data and ignore corrupt segments
    /// instead of refusing to open. Loses data; for disaster recovery only.
    pub salvage: bool,
    /// Open for reading only (a replica following another writer's manifests, an offline
    /// query): writes, flushes and compactions are refused with
    /// [`crate::StorageError::ReadOnly`], and no background thread runs, so nothing under
    /// the data directory changes except through [`crate::Collection::follow`].
    pub read_only: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::EveryCommit,
            // The active memtable is scanned exactly by every search: 10k rows of 512 floats
            // is ~1-2 ms on one core; flushed segments borrow a trained index (below).
            memtable_flush_rows: 10_000,
            memtable_flush_bytes: 256 << 20,
            wal_segment_bytes: 64 << 20,
            compaction: CompactionOptions::default(),
            index_min_rows: 20_000,
            borrowed_index_min_rows: 2_000,
            compact_rerank: CompactRerank::Auto,
            tier_margin: TierMargin::Measured,
            defer_bulk_index: true,
            bulk_quiet: Duration::from_secs(1),
            bulk_quiet_max: Duration::from_secs(10),
            bulk_compaction_quiet_max: Duration::from_secs(120),
            verify: VerifyPolicy::default(),
            salvage: false,
            read_only: false,
        }
    }
}

/// Summary of a collection, as listed by [`crate::Store::list`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionInfo {
    /// Collection name.
    pub name: String,
    /// Vector dimension.
    pub dim: usize,
    /// Metric name (`cosine`, `dot`, `l2`).
    pub metric: String,
    /// Live points.
    pub points: u64,
    /// Number of segments.
    pub segments: usize,
}

/// `x` as the `f64` of its shortest decimal form to 6 places, so reports read `0.95`, not the
/// `0.949999988` of the `f32` that holds it.
pub fn report_f32(x: f32) -> f64 {
    (x as f64 * 1e6).round() / 1e6
}

/// What a search aiming at one recall target does in one segment (see
/// [`Collection::recall_report`](crate::Collection::recall_report)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRecall {
    /// The segment's id.
    pub segment: u64,
    /// Rows of the segment (deleted ones included).
    pub rows: u64,
    /// Whether it has an index (else it is scanned exactly, recall 1).
    pub indexed: bool,
    /// Whether its index carries a recall table.
    pub calibrated: bool,
    /// Lists it probes (`None` when scanned exactly).
    pub nprobe: Option<usize>,
    /// Candidates it re-ranks per result (`None` when scanned exactly).
    pub refine: Option<usize>,
    /// Recall@k measured at these parameters on queries from its rows.
    pub recall_in: Option<f64>,
    /// The same on those queries shifted off the data.
    pub recall_shifted: Option<f64>,
    /// Whether the table's point reached the target (`None` without a table).
    pub reached: Option<bool>,
    /// Whether the final ranking uses the compact tier's codes alone (no raw row read); the
    /// recalls above are then the codes-only ones.
    pub codes_only: bool,
    /// The share of the compact tier's full pruning margin its re-rank uses (measured when
    /// its index was built; 1 is the full margin); `None` without a tier or when ranking on
    /// the codes alone.
    pub tier_margin: Option<f64>,
}

/// The recall a collection's searches at one target get, segment by segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallReport {
    /// The recall@k target reported on.
    pub target: f64,
    /// The lowest recall a segment's table promises at this target (exactly scanned
    /// segments count as 1); `None` when an indexed segment has no table.
    pub expected_recall: Option<f64>,
    /// Indexed segments without a recall table (searched with size-derived defaults).
    pub uncalibrated_segments: usize,
    /// One entry per segment.
    pub segments: Vec<SegmentRecall>,
}

/// Detailed statistics of one collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CollectionStats {
    /// Live points (newest version of each id, deletes excluded).
    pub points: u64,
    /// Number of segments.
    pub segments: usize,
    /// Segments with an ANN index file.
    pub indexed_segments: usize,
    /// Rows of segments waiting for their deferred index build (searched
    /// exactly until it is done).
    pub unindexed_rows: u64,
    /// Bytes of all segment files (tombstone files included).
    pub segment_bytes: u64,
    /// Rows in segments, including deleted/shadowed ones.
    pub segment_rows: u64,
    /// Rows hidden by tombstones in segments.
    pub deleted_rows: u64,
    /// Bytes of WAL files on disk.
    pub wal_bytes: u64,
    /// Rows in the active memtable.
    pub memtable_rows: usize,
    /// Memtables frozen and waiting to be flushed.
    pub frozen_memtables: usize,
    /// Last WAL sequence number contained in segments.
    pub checkpoint_seq: u64,
    /// Last WAL sequence number written.
    pub last_seq: u64,
    /// Segments that failed background verification and are not served.
    pub quarantined_segments: usize,
}

/// Monotonic counters for monitoring (Prometheus counters on the server).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StorageCounters {
    /// Bytes appended to the WAL.
    pub wal_bytes_written: u64,
    /// Records appended to the WAL.
    pub wal_records_written: u64,
    /// Write groups committed (one WAL append each).
    pub wal_groups: u64,
    /// WAL fsyncs.
    pub fsyncs: u64,
    /// Total seconds spent in WAL fsyncs.
    pub fsync_seconds: f64,
    /// Memtable flushes.
    pub flushes: u64,
    /// Total seconds spent flushing.
    pub flush_seconds: f64,
    /// Compactions.
    pub compactions: u64,
    /// Total seconds spent compacting.
    pub compaction_seconds: f64,
    /// Bulk ingests committed.
    pub bulk_commits: u64,
    /// Rows committed by bulk ingests.
    pub bulk_rows: u64,
    /// Deferred index builds finished (a bulk segment's index built after
    /// its commit).
    pub index_builds: u64,
    /// Total seconds spent in deferred index builds.
    pub index_build_seconds: f64,
    /// Failed writes (errors returned to callers).
    pub write_errors: u64,
}
