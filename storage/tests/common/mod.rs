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
