//! Prometheus metrics: one registry, names in base units following the
//! Prometheus conventions (`glimpse_..._seconds`, `_total`, `_bytes`).
//!
//! Counters that the request path updates live here; gauges that describe
//! stored state (points, segments, WAL) are refreshed from the store at
//! scrape time, so they can never drift from the truth.

use std::sync::LazyLock;

use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Every metric the server exports.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Requests by route template, method and status.
    pub http_requests_total: IntCounterVec,
    /// Request latency by route template and method.
    pub http_request_duration_seconds: HistogramVec,
    /// Search time split into `embed`, `search` (ANN scan + re-rank in the engine) and `total`.
    pub search_stage_seconds: HistogramVec,
    /// Query-embedding cache hits.
    pub query_cache_hits_total: IntCounter,
    /// Query-embedding cache misses.
    pub query_cache_misses_total: IntCounter,
    /// Queries per forward pass of the query batchers, by tower.
    pub embed_batch_size: HistogramVec,
    /// Time a query waited for its forward pass, by tower.
    pub embed_queue_wait_seconds: HistogramVec,
    /// Duration of a batcher's forward pass, by tower: with the batch sizes, how busy the
    /// towers are and what a pass of that size costs under the server's load.
    pub embed_pass_seconds: HistogramVec,
    /// Query embeddings computed (batched or not), by tower; its rate is embeds per second.
    pub embeds_total: IntCounterVec,
    /// Queries refused because a batcher's queue was full, by tower.
    pub embed_queue_rejected_total: IntCounterVec,
    /// Rows committed by bulk loads.
    pub bulk_load_rows_total: IntCounter,
    /// Parquet bytes read by bulk loads.
    pub bulk_load_bytes_total: IntCounter,
    /// Bulk-load duration.
    pub bulk_load_duration_seconds: Histogram,
    /// Errors answered, by error code.
    pub errors_total: IntCounterVec,
    /// Heavy requests turned away because `--max-heavy-requests` were running.
    pub http_heavy_rejected_total: IntCounter,
    /// Live points per collection (refreshed at scrape).
    pub collection_points: IntGaugeVec,
    /// Segments per collection (refreshed at scrape).
    pub collection_segments: IntGaugeVec,
    /// Bytes of segment files per collection (refreshed at scrape).
    pub collection_segment_bytes: IntGaugeVec,
    /// Bytes of WAL per collection (refreshed at scrape).
    pub collection_wal_bytes: IntGaugeVec,
    /// Rows waiting for a deferred index build per collection (refreshed at scrape).
    pub collection_unindexed_rows: IntGaugeVec,
    /// Resident set size of the process (refreshed at scrape).
    pub process_resident_memory_bytes: IntGauge,
    /// Engine counters per collection (`name` label), synced from the store at scrape.
    pub storage_counts: IntCounterVec,
    /// Engine time counters per collection (`name` label), synced at scrape.
    pub storage_seconds: CounterVec,
    /// Object storage (`--remote`): the manifest version published or served, whether this
    /// writer is fenced, when the last round succeeded; synced at scrape.
    pub remote_gauges: GaugeVec,
    /// Object storage events by kind, synced at scrape.
    pub remote_events: IntCounterVec,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let m = Metrics {
            http_requests_total: counter_vec(
                "glimpse_http_requests_total",
                "HTTP requests answered, by route, method and status.",
                &["route", "method", "status"],
            ),
            http_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "glimpse_http_request_duration_seconds",
                    "HTTP request latency by route and method.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "method"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            search_stage_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "glimpse_search_stage_seconds",
                    "Search time by stage: embed (CLIP), search (the storage engine's whole search), \
                     ann_scan (coarse ranking, tables and list scans of indexed segments), \
                     rerank (exact re-rank of their candidates), exact_scan (brute force over \
                     memtables and unindexed segments), total.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["stage"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            http_heavy_rejected_total: IntCounter::new(
                "glimpse_http_heavy_rejected_total",
                "Heavy requests answered 503 because --max-heavy-requests were running.",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            query_cache_hits_total: IntCounter::new(
                "glimpse_query_cache_hits_total",
                "Text queries answered from the query-embedding cache.",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            query_cache_misses_total: IntCounter::new(
                "glimpse_query_cache_misses_total",
                "Text queries that ran the CLIP text tower.",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            embed_batch_size: HistogramVec::new(
                HistogramOpts::new(
                    "glimpse_embed_batch_size",
                    "Queries embedded together in one forward pass of a query batcher, by tower \
                     (text, image).",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0]),
                &["tower"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            embed_queue_wait_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "glimpse_embed_queue_wait_seconds",
                    "Time a query waited in a batcher's queue for its forward pass, by tower.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["tower"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            embed_pass_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "glimpse_embed_pass_seconds",
                    "Duration of one forward pass of a query batcher (all its queries), by \
                     tower; its rate() is the share of time the tower's worker computes.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["tower"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            embeds_total: counter_vec(
                "glimpse_embeds_total",
                "Query embeddings computed by the CLIP towers (cache hits excluded), by tower; \
                 rate() of it is embeds per second.",
                &["tower"],
            ),
            embed_queue_rejected_total: counter_vec(
                "glimpse_embed_queue_rejected_total",
                "Queries answered 503 because a batcher's queue was full (--batch-queue), by tower.",
                &["tower"],
            ),
            bulk_load_rows_total: IntCounter::new(
                "glimpse_bulk_load_rows_total",
                "Rows committed by bulk loads.",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            bulk_load_bytes_total: IntCounter::new(
                "glimpse_bulk_load_bytes_total",
                "Parquet bytes read by bulk loads.",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            bulk_load_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "glimpse_bulk_load_duration_seconds",
                    "Duration of bulk loads, from request to durable commit.",
                )
                .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]),
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            errors_total: counter_vec(
                "glimpse_errors_total",
                "Error responses by error code.",
                &["code"],
            ),
            collection_points: gauge_vec(
                "glimpse_collection_points",
                "Live points per collection.",
                &["collection"],
            ),
            collection_segments: gauge_vec(
                "glimpse_collection_segments",
                "Immutable segments per collection.",
                &["collection"],
            ),
            collection_segment_bytes: gauge_vec(
                "glimpse_collection_segment_bytes",
                "Bytes of segment files per collection.",
                &["collection"],
            ),
            collection_wal_bytes: gauge_vec(
                "glimpse_collection_wal_bytes",
                "Bytes of write-ahead log per collection.",
                &["collection"],
            ),
            collection_unindexed_rows: gauge_vec(
                "glimpse_collection_unindexed_rows",
                "Rows of bulk-loaded segments still waiting for their ANN index (searched exactly until built).",
                &["collection"],
            ),
            process_resident_memory_bytes: IntGauge::new(
                "glimpse_process_resident_memory_bytes",
                "Resident set size of the server process.",
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            storage_counts: counter_vec(
                "glimpse_storage_events_total",
                "Storage engine events by collection and kind: wal_bytes (bytes appended to the WAL), \
                 wal_records, fsyncs, flushes, compactions, bulk_commits, bulk_rows, index_builds (deferred index builds).",
                &["collection", "kind"],
            ),
            storage_seconds: CounterVec::new(
                Opts::new(
                    "glimpse_storage_seconds_total",
                    "Seconds the storage engine spent by collection and kind: fsync, flush, compaction, index_build.",
                ),
                &["collection", "kind"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            remote_gauges: GaugeVec::new(
                Opts::new(
                    "glimpse_remote",
                    "Object storage (--remote) by field: version (manifest published by this \
                     writer or served by this replica), fenced (1 when another writer took over \
                     the prefix), last_sync_timestamp_seconds (Unix time of the last successful \
                     round), replica (1 on a replica).",
                ),
                &["field"],
            )
            .unwrap_or_else(|e| panic!("metric: {e}")),
            remote_events: counter_vec(
                "glimpse_remote_events_total",
                "Object storage events by kind: syncs (versions published or applied), errors \
                 (failed rounds), bytes_up, bytes_down, gc_deleted (objects removed).",
                &["kind"],
            ),
            registry,
        };
        let r = &m.registry;
        let regs: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.http_requests_total.clone()),
            Box::new(m.http_request_duration_seconds.clone()),
            Box::new(m.search_stage_seconds.clone()),
            Box::new(m.query_cache_hits_total.clone()),
            Box::new(m.query_cache_misses_total.clone()),
            Box::new(m.embed_batch_size.clone()),
            Box::new(m.embed_queue_wait_seconds.clone()),
            Box::new(m.embed_pass_seconds.clone()),
            Box::new(m.embeds_total.clone()),
            Box::new(m.embed_queue_rejected_total.clone()),
            Box::new(m.bulk_load_rows_total.clone()),
            Box::new(m.bulk_load_bytes_total.clone()),
            Box::new(m.bulk_load_duration_seconds.clone()),
            Box::new(m.errors_total.clone()),
            Box::new(m.http_heavy_rejected_total.clone()),
            Box::new(m.collection_points.clone()),
            Box::new(m.collection_segments.clone()),
            Box::new(m.collection_segment_bytes.clone()),
            Box::new(m.collection_wal_bytes.clone()),
            Box::new(m.collection_unindexed_rows.clone()),
            Box::new(m.process_resident_memory_bytes.clone()),
            Box::new(m.storage_counts.clone()),
            Box::new(m.storage_seconds.clone()),
            Box::new(m.remote_gauges.clone()),
            Box::new(m.remote_events.clone()),
        ];
        for c in regs {
            r.register(c)
                .unwrap_or_else(|e| panic!("register metric: {e}"));
        }
        m
    }

    /// Renders the registry in the Prometheus text format.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory_bytes() {
            self.process_resident_memory_bytes.set(rss as i64);
        }
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Metrics {
    /// Refreshes every per-collection metric from the engine's stats and
    /// counters (called at scrape time, so gauges never drift).
    pub fn sync_collection(
        &self,
        collection: &str,
        stats: &glimpse_storage::CollectionStats,
        counters: &glimpse_storage::StorageCounters,
    ) {
        let gauges = [
            (&self.collection_points, stats.points as i64),
            (&self.collection_segments, stats.segments as i64),
            (&self.collection_segment_bytes, stats.segment_bytes as i64),
            (&self.collection_wal_bytes, stats.wal_bytes as i64),
            (&self.collection_unindexed_rows, stats.unindexed_rows as i64),
        ];
        for (gauge, value) in gauges {
            gauge.with_label_values(&[collection]).set(value);
        }
        self.sync_storage_counters(collection, counters);
    }

    /// Brings the storage counters of one collection up to the engine's
    /// values. The engine's counters only grow (they restart at zero when a
    /// collection is dropped and created again; such a step back is ignored).
    pub fn sync_storage_counters(&self, collection: &str, c: &glimpse_storage::StorageCounters) {
        let counts = [
            ("wal_bytes", c.wal_bytes_written),
            ("wal_records", c.wal_records_written),
            ("fsyncs", c.fsyncs),
            ("flushes", c.flushes),
            ("compactions", c.compactions),
            ("bulk_commits", c.bulk_commits),
            ("bulk_rows", c.bulk_rows),
            ("index_builds", c.index_builds),
        ];
        for (kind, value) in counts {
            let counter = self.storage_counts.with_label_values(&[collection, kind]);
            let seen = counter.get();
            if value > seen {
                counter.inc_by(value - seen);
            }
        }
        let seconds = [
            ("fsync", c.fsync_seconds),
            ("flush", c.flush_seconds),
            ("compaction", c.compaction_seconds),
            ("index_build", c.index_build_seconds),
        ];
        for (kind, value) in seconds {
            let counter = self.storage_seconds.with_label_values(&[collection, kind]);
            let seen = counter.get();
            if value > seen {
                counter.inc_by(value - seen);
            }
        }
    }
}

impl Metrics {
    /// Refreshes the object-storage metrics from the link's status.
    pub fn sync_remote(&self, s: &glimpse_remote::RemoteStatus) {
        use std::sync::atomic::Ordering::Relaxed;
        let gauges = [
            ("version", s.version() as f64),
            ("fenced", f64::from(u8::from(s.is_fenced()))),
            ("last_sync_timestamp_seconds", s.synced_at_ms() as f64 / 1e3),
            (
                "replica",
                f64::from(u8::from(s.role == glimpse_remote::Role::Replica)),
            ),
        ];
        for (field, v) in gauges {
            self.remote_gauges.with_label_values(&[field]).set(v);
        }
        let counts = [
            ("syncs", s.syncs.load(Relaxed)),
            ("errors", s.errors.load(Relaxed)),
            ("bytes_up", s.bytes_up.load(Relaxed)),
            ("bytes_down", s.bytes_down.load(Relaxed)),
            ("gc_deleted", s.gc_deleted.load(Relaxed)),
        ];
        for (kind, value) in counts {
            let counter = self.remote_events.with_label_values(&[kind]);
            let seen = counter.get();
            if value > seen {
                counter.inc_by(value - seen);
            }
        }
    }
}

/// The process-wide metrics. Static because Prometheus metrics are
/// process-wide by nature and handlers everywhere update them.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Resident set size from `/proc/self/status` (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_named_metrics() {
        METRICS
            .errors_total
            .with_label_values(&["bad_request"])
            .inc();
        METRICS.query_cache_hits_total.inc();
        let text = METRICS.render();
        assert!(text.contains("glimpse_errors_total{code=\"bad_request\"}"));
        assert!(text.contains("glimpse_query_cache_hits_total"));
        assert!(text.contains("glimpse_process_resident_memory_bytes"));
    }
}
