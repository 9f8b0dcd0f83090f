//! Segments: `SegmentReader::open` over a segment directory one of whose files (footer, id and
//! row archives, blobs, vectors, index, tombstones) is mutated, raw or re-sealed (the footer's
//! length and crc32 for the file updated, the footer re-framed), then every read of what opened.

use std::path::Path;

use glimpse_index::Metric;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{DIM, INTERESTING, apply, config, copy_dir, corpus, edits, seeded_store};
use crate::fsutil::{decode_framed, encode_framed};
use crate::segment::{SegmentMeta, SegmentReader, Tombstones};
use crate::types::{SearchTimings, VerifyPolicy};

const FOOTER: &str = "SEGMENT";
const MAGIC: &[u8; 8] = b"GLIMPSEG";

/// The seeded store's segment `id` (1: 200 rows, an index file and a tombstone generation;
/// 2: 5 rows, searched exactly).
fn seed_dir(id: u64) -> std::path::PathBuf {
    seeded_store()
        .join("collections/c")
        .join(crate::segment::dir_name(id))
}

/// File names of a segment directory, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read_footer(dir: &Path) -> Value {
    let path = dir.join(FOOTER);
    let bytes = std::fs::read(&path).unwrap();
    serde_json::from_slice(decode_framed(&path, &bytes, MAGIC, 1).unwrap().1).unwrap()
}

fn write_footer(dir: &Path, json: &[u8]) {
    std::fs::write(dir.join(FOOTER), encode_framed(MAGIC, 1, json)).unwrap();
}

/// Records `name`'s current length and crc32 in the footer, as if it had been written so.
fn reseal(dir: &Path, name: &str) {
    let Ok(bytes) = std::fs::read(dir.join(name)) else {
        return;
    };
    let mut footer = read_footer(dir);
    if let Some(files) = footer["files"].as_array_mut() {
        for f in files.iter_mut().filter(|f| f["name"] == name) {
            f["len"] = json!(bytes.len());
            f["crc32"] = json!(crc32fast::hash(&bytes));
        }
    }
    write_footer(dir, &serde_json::to_vec(&footer).unwrap());
}

/// Opens `dir` as segment `id` and, when it opens, reads every row, looks every id up, searches
/// and verifies it, and reads its tombstone files: an error or a value, never a panic.
fn open_and_read(dir: &Path, id: u64) {
    let Ok(r) = SegmentReader::open(dir, id, DIM, Metric::L2, VerifyPolicy::default(), None) else {
        return;
    };
    for row in 0..r.rows {
        let p = r.point(row);
        assert!(p.vector.len() == DIM || p.vector.is_empty());
        let _ = r.find_row(&p.id);
        let _ = r.metadata_entries(row);
    }
    let _ = r.find_row("no such id");
    let _ = r.sorted_ids().count();
    let mut timings = SearchTimings::default();
    let hits = r.search(
        Metric::L2,
        &[0.5; DIM],
        5,
        &crate::ann::AnnKnobs::default(),
        &|_| true,
        &mut timings,
    );
    assert!(hits.len() <= 5);
    let _ = r.verify(true);
    for name in files(dir).iter().filter(|n| n.starts_with("del-")) {
        let _ = Tombstones::read(&dir.join(name), r.rows);
    }
}

/// A copy of seed segment `id` in a fresh directory.
fn copy_segment(id: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&seed_dir(id), dir.path());
    dir
}

/// Footer fields an edit may overwrite (JSON pointers; absent ones are skipped).
const FIELDS: &[&str] = &[
    "/segment_id",
    "/dim",
    "/metric",
    "/rows",
    "/distinct_ids",
    "/index",
    "/files",
    "/files/0/name",
    "/files/0/len",
    "/files/1/name",
    "/files/1/len",
    "/files/2/name",
    "/files/3/name",
];

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::sample::select(INTERESTING).prop_map(Value::from),
        Just(json!(-1)),
        Just(Value::Null),
        Just(json!("ivfpq-v1")),
        Just(json!("../../etc/passwd")),
        Just(json!("ids.rkyv")),
        Just(json!("index.ivfpq")),
        Just(json!([])),
    ]
}

proptest! {
    #![proptest_config(config(160))]

    #[test]
    fn a_segment_with_one_mutated_file_opens_or_fails(
        id in 1u64..3,
        pick in any::<prop::sample::Index>(),
        edits in edits(),
        resealed in any::<bool>(),
    ) {
        let dir = copy_segment(id);
        let names = files(dir.path());
        let name = pick.get(&names).clone();
        let path = dir.path().join(&name);
        if name == FOOTER && resealed {
            let frame = std::fs::read(&path).unwrap();
            let mut json = decode_framed(&path, &frame, MAGIC, 1).unwrap().1.to_vec();
            apply(&mut json, &edits);
            write_footer(dir.path(), &json);
        } else {
            let mut bytes = std::fs::read(&path).unwrap();
            apply(&mut bytes, &edits);
            std::fs::write(&path, &bytes).unwrap();
            if resealed {
                reseal(dir.path(), &name);
            }
        }
        open_and_read(dir.path(), id);
    }

    #[test]
    fn a_segment_footer_with_odd_fields_opens_or_fails(
        id in 1u64..3,
        edits in proptest::collection::vec((0..FIELDS.len(), field_value()), 1..4),
    ) {
        let dir = copy_segment(id);
        let mut footer = read_footer(dir.path());
        for (field, value) in &edits {
            if let Some(slot) = footer.pointer_mut(FIELDS[*field]) {
                *slot = value.clone();
            }
        }
        write_footer(dir.path(), &serde_json::to_vec(&footer).unwrap());
        open_and_read(dir.path(), id);
    }
}

#[test]
fn seed_segments_open_with_what_the_tests_expect() {
    let with_index = files(&seed_dir(1));
    assert!(
        with_index.iter().any(|n| n == "index.ivfpq"),
        "{with_index:?}"
    );
    assert!(
        with_index.iter().any(|n| n.starts_with("del-")),
        "{with_index:?}"
    );
    for id in [1, 2] {
        let r = SegmentReader::open(
            &seed_dir(id),
            id,
            DIM,
            Metric::L2,
            VerifyPolicy::default(),
            None,
        )
        .unwrap();
        assert!(r.rows > 0);
        let footer: SegmentMeta = serde_json::from_value(read_footer(&seed_dir(id))).unwrap();
        assert_eq!(footer.rows, u64::from(r.rows));
    }
}

/// Each corpus file is named `<segment file>--<what it is>`: it replaces that file of seed
/// segment 1, resealed in the footer unless it is the footer itself.
#[test]
fn corpus_replays() {
    for (path, bytes) in corpus("segment") {
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (name, _) = file_name.split_once("--").unwrap();
        let dir = copy_segment(1);
        std::fs::write(dir.path().join(name), &bytes).unwrap();
        if name != FOOTER {
            reseal(dir.path(), name);
        }
        open_and_read(dir.path(), 1);
    }
}
