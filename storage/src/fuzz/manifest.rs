//! The manifest: `Manifest::load` over mutated files (raw, and JSON re-sealed in a valid frame,
//! byte-wise and field-wise), and a whole store opened over such a manifest.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{INTERESTING, apply, config, copy_dir, corpus, edits, open_and_use, seeded_store};
use crate::fsutil::{decode_framed, encode_framed};
use crate::manifest::{IndexFileRef, MANIFEST_FILE, Manifest, ManifestSegment};

const MAGIC: &[u8; 8] = b"GLIMPMAN";

fn sample() -> Manifest {
    Manifest {
        name: "c".to_string(),
        dim: 4,
        metric: "l2".to_string(),
        checkpoint_seq: 7,
        next_segment_id: 3,
        segments: vec![
            ManifestSegment {
                id: 1,
                rows: 200,
                tombstone_gen: 2,
                index: None,
            },
            ManifestSegment {
                id: 2,
                rows: 5,
                tombstone_gen: 0,
                index: Some(IndexFileRef {
                    kind: "ivfpq-v1".to_string(),
                    len: 4096,
                    crc32: 0xdead_beef,
                }),
            },
        ],
    }
}

/// Heap bytes a loaded manifest holds.
fn held_bytes(m: &Manifest) -> usize {
    m.name.capacity()
        + m.metric.capacity()
        + m.segments.capacity() * std::mem::size_of::<ManifestSegment>()
        + m.segments
            .iter()
            .map(|s| s.index.as_ref().map_or(0, |i| i.kind.capacity()))
            .sum::<usize>()
}

/// Loads `bytes` as a collection's `MANIFEST`: an error, or a manifest within a small multiple
/// of the file's size.
fn load_bytes(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MANIFEST_FILE), bytes).unwrap();
    if let Ok(m) = Manifest::load(dir.path()) {
        assert!(
            held_bytes(&m) <= 8 * bytes.len() + 1024,
            "{} bytes held for a {}-byte manifest",
            held_bytes(&m),
            bytes.len()
        );
    }
}

fn frame(json: &[u8]) -> Vec<u8> {
    encode_framed(MAGIC, 1, json)
}

/// Fields a manifest edit may overwrite (JSON pointers; absent ones are skipped).
const FIELDS: &[&str] = &[
    "/name",
    "/dim",
    "/metric",
    "/checkpoint_seq",
    "/next_segment_id",
    "/segments",
    "/segments/0",
    "/segments/0/id",
    "/segments/0/rows",
    "/segments/0/tombstone_gen",
    "/segments/0/index",
    "/segments/1/id",
    "/segments/1/rows",
    "/segments/1/tombstone_gen",
    "/segments/1/index",
];

/// A value to put in a field: boundary integers, wrong types, other metrics.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::sample::select(INTERESTING).prop_map(Value::from),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(Value::Null),
        Just(json!("cosine")),
        Just(json!("")),
        Just(json!([])),
        Just(json!({})),
        Just(json!({"kind": "ivfpq-v1", "len": 0, "crc32": 0})),
        Just(json!({"id": 1, "rows": 200, "tombstone_gen": 0})),
    ]
}

fn field_edits() -> impl Strategy<Value = Vec<(usize, Value)>> {
    proptest::collection::vec((0..FIELDS.len(), field_value()), 1..4)
}

fn set_fields(json: &mut Value, edits: &[(usize, Value)]) {
    for (field, value) in edits {
        if let Some(slot) = json.pointer_mut(FIELDS[*field]) {
            *slot = value.clone();
        }
    }
}

/// The seeded store's manifest payload.
fn store_manifest_json(root: &Path) -> Vec<u8> {
    let path = root.join("collections/c").join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).unwrap();
    decode_framed(&path, &bytes, MAGIC, 1).unwrap().1.to_vec()
}

/// A copy of the seeded store with `manifest` as its collection's `MANIFEST`, opened and used.
fn open_with_manifest(manifest: &[u8]) {
    let root = tempfile::tempdir().unwrap();
    copy_dir(seeded_store(), root.path());
    std::fs::write(
        root.path().join("collections/c").join(MANIFEST_FILE),
        manifest,
    )
    .unwrap();
    open_and_use(root.path());
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_manifest_files_load_or_fail(edits in edits()) {
        let mut bytes = frame(&serde_json::to_vec_pretty(&sample()).unwrap());
        apply(&mut bytes, &edits);
        load_bytes(&bytes);
    }

    #[test]
    fn mutated_manifest_json_in_a_valid_frame_loads_or_fails(edits in edits()) {
        let mut json = serde_json::to_vec_pretty(&sample()).unwrap();
        apply(&mut json, &edits);
        load_bytes(&frame(&json));
    }

    #[test]
    fn manifest_fields_set_to_odd_values_load_or_fail(edits in field_edits()) {
        let mut json = serde_json::to_value(sample()).unwrap();
        set_fields(&mut json, &edits);
        load_bytes(&frame(&serde_json::to_vec(&json).unwrap()));
    }
}

proptest! {
    // Copies and opens a whole store per case: fewer cases.
    #![proptest_config(config(64))]

    #[test]
    fn a_store_opens_over_a_manifest_with_odd_fields(edits in field_edits()) {
        let mut json: Value =
            serde_json::from_slice(&store_manifest_json(seeded_store())).unwrap();
        set_fields(&mut json, &edits);
        open_with_manifest(&frame(&serde_json::to_vec(&json).unwrap()));
    }

    #[test]
    fn a_store_opens_over_mutated_manifest_json(edits in edits()) {
        let mut json = store_manifest_json(seeded_store());
        apply(&mut json, &edits);
        open_with_manifest(&frame(&json));
    }
}

#[test]
fn corpus_replays() {
    for (_, bytes) in corpus("manifest") {
        load_bytes(&bytes);
        open_with_manifest(&bytes);
    }
}

#[test]
fn a_manifest_dimension_outside_the_limits_is_corruption() {
    // A collection of dimension 0 accepted empty vectors and wrote segments of them; one of
    // 2^64-1 opened and refused every vector. Kept as
    // `tests/fuzz-corpus/manifest/{zero,huge}-dimension-no-segments.manifest`.
    for dim in [0, crate::store::MAX_DIM as u64 + 1, u64::MAX] {
        let root = tempfile::tempdir().unwrap();
        copy_dir(seeded_store(), root.path());
        let mut json: Value = serde_json::from_slice(&store_manifest_json(seeded_store())).unwrap();
        json["dim"] = json!(dim);
        json["segments"] = json!([]);
        let c = root.path().join("collections/c");
        std::fs::write(
            c.join(MANIFEST_FILE),
            frame(&serde_json::to_vec(&json).unwrap()),
        )
        .unwrap();
        for e in std::fs::read_dir(c.join("wal")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let err = crate::Store::open(root.path(), super::store_options())
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains(&format!("dimension {dim} outside")),
            "{err}"
        );
    }
}
