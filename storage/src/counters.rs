//! Cheap monotonic counters (atomics), exported by the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::types::StorageCounters;

/// Atomic counters of one collection.
#[derive(Default)]
pub(crate) struct Counters {
    pub wal_bytes_written: AtomicU64,
    pub wal_records_written: AtomicU64,
    pub wal_groups: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_nanos: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_nanos: AtomicU64,
    pub bulk_commits: AtomicU64,
    pub bulk_rows: AtomicU64,
    pub index_builds: AtomicU64,
    pub index_build_nanos: AtomicU64,
    pub write_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn record_fsync(&self, d: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_flush(&self, d: Duration) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_compaction(&self, d: Duration) {
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.compaction_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_index_build(&self, d: Duration) {
        self.index_builds.fetch_add(1, Ordering::Relaxed);
        self.index_build_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StorageCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = |a: &AtomicU64| g(a) as f64 / 1e9;
        StorageCounters {
            wal_bytes_written: g(&self.wal_bytes_written),
            wal_records_written: g(&self.wal_records_written),
            wal_groups: g(&self.wal_groups),
            fsyncs: g(&self.fsyncs),
            fsync_seconds: secs(&self.fsync_nanos),
            flushes: g(&self.flushes),
            flush_seconds: secs(&self.flush_nanos),
            compactions: g(&self.compactions),
            compaction_seconds: secs(&self.compaction_nanos),
            bulk_commits: g(&self.bulk_commits),
            bulk_rows: g(&self.bulk_rows),
            index_builds: g(&self.index_builds),
            index_build_seconds: secs(&self.index_build_nanos),
            write_errors: g(&self.write_errors),
        }
    }
}

impl StorageCounters {
    /// Adds `other` into `self` (to aggregate collections).
    pub fn add(&mut self, other: &StorageCounters) {
        self.wal_bytes_written += other.wal_bytes_written;
        self.wal_records_written += other.wal_records_written;
        self.wal_groups += other.wal_groups;
        self.fsyncs += other.fsyncs;
        self.fsync_seconds += other.fsync_seconds;
        self.flushes += other.flushes;
        self.flush_seconds += other.flush_seconds;
        self.compactions += other.compactions;
        self.compaction_seconds += other.compaction_seconds;
        self.bulk_commits += other.bulk_commits;
        self.bulk_rows += other.bulk_rows;
        self.index_builds += other.index_builds;
        self.index_build_seconds += other.index_build_seconds;
        self.write_errors += other.write_errors;
    }
}
