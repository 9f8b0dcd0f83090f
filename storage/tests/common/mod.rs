//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use glimpse_storage::{MetaValue, Point, StoreOptions};

/// A deterministic vector for (`id`, `version`).
pub fn vec_for(id: &str, version: u64, dim: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325 ^ version.wrapping_mul(0x9E3779B97F4A7C15);
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    (0..dim)
        .map(|i| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            let _ = i;
            ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

pub fn point(id: &str, version: u64, dim: usize) -> Point {
    let mut metadata = BTreeMap::new();
    metadata.insert("version".to_string(), MetaValue::Int(version as i64));
    metadata.insert(
        "even".to_string(),
        MetaValue::Bool(version.is_multiple_of(2)),
    );
    Point {
        id: id.to_string(),
        vector: vec_for(id, version, dim),
        image_path: Some(format!("/img/{id}.jpg")),
        image_bytes: if version.is_multiple_of(3) {
            Some(id.as_bytes().to_vec())
        } else {
            None
        },
        metadata,
    }
}

/// Small thresholds so tests exercise flushes and compactions.
pub fn small_opts() -> StoreOptions {
    StoreOptions {
        memtable_flush_rows: 64,
        wal_segment_bytes: 16 << 10,
        ..StoreOptions::default()
    }
}

/// Waits (up to 60 s) until no segment waits for a deferred index build
/// (built, or given up after a failure).
pub fn wait_indexed(c: &glimpse_storage::Collection) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while c.stats().unindexed_rows > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "deferred index never built"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Options for the deferred-index tests: small index threshold, no
/// background compaction, the given quiet period and bound.
pub fn deferral_opts(quiet: std::time::Duration, quiet_max: std::time::Duration) -> StoreOptions {
    StoreOptions {
        index_min_rows: 1500,
        bulk_quiet: quiet,
        bulk_quiet_max: quiet_max,
        compaction: glimpse_storage::CompactionOptions {
            enabled: false,
            ..Default::default()
        },
        ..StoreOptions::default()
    }
}

/// Deferral options whose deferred work starts 1 ms after a load.
pub fn prompt_opts() -> StoreOptions {
    deferral_opts(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_secs(10),
    )
}

/// The segment directory of collection `ix` in the store at `root` (the first one found).
pub fn only_segment_dir(root: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(root.join("collections").join("ix"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap()
}
