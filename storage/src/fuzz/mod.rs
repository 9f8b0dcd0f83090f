//! Fuzzing on stable Rust: property tests that feed mutated on-disk structures (WAL files,
//! manifests, segment directories) to the decoders that read them back, asserting "an error or
//! a value, never a panic" and, for decoders that return owned data, a size bounded by a small
//! multiple of the input.
//!
//! Every on-disk structure is checksummed, so raw mutations mostly stop at the checksum; each
//! property therefore also mutates the checksummed content and re-seals it with a valid checksum,
//! which is what reaches the parsers behind it. Inputs that once broke something live in
//! `tests/fuzz-corpus/<decoder>/` at the workspace root and are replayed by each module's
//! `corpus_replays` test.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(super) use glimpse_index::byte_edits::{INTERESTING, apply, edits};
use proptest::prelude::*;

use crate::types::{CompactionOptions, MetaValue, Point, SearchRequest, StoreOptions};
use crate::{Metric, Store};

mod manifest;
mod segment;
mod wal;

/// `cases` cases, no regression files in the source tree (kept inputs go to the corpus).
pub(super) fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The files of `tests/fuzz-corpus/<decoder>/`, sorted; at least two.
pub(super) fn corpus(decoder: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz-corpus")
        .join(decoder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 2, "corpus {} is nearly empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Dimension of every collection these tests build.
pub(super) const DIM: usize = 4;

/// A point with every kind of payload, deterministic in `seed`.
pub(super) fn point(id: &str, seed: u32) -> Point {
    let mut metadata = BTreeMap::new();
    metadata.insert("n".to_string(), MetaValue::Int(i64::from(seed)));
    metadata.insert("f".to_string(), MetaValue::Float(0.5));
    metadata.insert("b".to_string(), MetaValue::Bool(seed.is_multiple_of(2)));
    metadata.insert("s".to_string(), MetaValue::Str(format!("v{seed}")));
    Point {
        id: id.to_string(),
        vector: (0..DIM)
            .map(|i| (seed as f32 * 0.37 + i as f32 * 1.3).sin())
            .collect(),
        image_path: seed.is_multiple_of(2).then(|| format!("/img/{id}.jpg")),
        image_bytes: seed.is_multiple_of(3).then(|| vec![0xff, 0xd8, seed as u8]),
        metadata,
    }
}

/// Options of every store opened here: indexes from 128 rows, no background compaction
/// (each case stays deterministic and short).
pub(super) fn store_options() -> StoreOptions {
    StoreOptions {
        index_min_rows: 128,
        compaction: CompactionOptions {
            enabled: false,
            ..CompactionOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// Opens the store at `root` and reads, searches, writes and flushes its collection `c`
/// (dimension [`DIM`]): an error or a value, never a panic.
pub(super) fn open_and_use(root: &Path) {
    let Ok(store) = Store::open(root, store_options()) else {
        return;
    };
    if let Some(c) = store.collection("c") {
        for id in c.ids() {
            let _ = c.get(&id);
        }
        let _ = c.get("p1");
        let req = SearchRequest {
            k: 3,
            nprobe: None,
            refine: None,
            recall_target: None,
            filter: None,
            rescore: Default::default(),
        };
        let _ = c.search(&[0.5; DIM], &req);
        let _ = c.verify();
        let _ = c.upsert(vec![point("new", 7)]);
        let _ = c.flush();
        let _ = c.search(&[0.5; DIM], &req);
        let _ = c.stats();
    }
    let _ = store.close();
}

/// Copies the store at `from` (without its lock file) to `to`.
pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A closed store whose collection `c` has two segments (the first with an index file and
/// tombstones) and a WAL tail; built once, copied by each case.
pub(super) fn seeded_store() -> &'static Path {
    static ROOT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), store_options()).unwrap();
        let c = store.create_collection("c", DIM, Metric::L2).unwrap();
        c.upsert((0..200).map(|i| point(&format!("p{i}"), i)).collect())
            .unwrap();
        c.flush().unwrap();
        c.delete(&["p3".to_string(), "p4".to_string()]).unwrap();
        c.upsert((0..5).map(|i| point(&format!("q{i}"), i)).collect())
            .unwrap();
        c.flush().unwrap();
        c.upsert(vec![point("p1", 9), point("w", 2)]).unwrap();
        store.close().unwrap();
        root
    })
    .path()
}
