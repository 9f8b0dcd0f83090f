//! Hostile input at the engine's edge: values that would poison scores, metadata that would
//! blow up every hit, and a collection dropped under a running bulk load.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{point, small_opts, vec_for};
use glimpse_storage::{
    MAX_META_BYTES_PER_POINT, MetaValue, Metric, Point, SearchRequest, StorageError, Store,
};

const DIM: usize = 8;

#[test]
fn vectors_whose_norm_overflows_f32_are_refused_and_queries_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let c = store.create_collection("v", DIM, Metric::Cosine).unwrap();
    // Every component finite, the norm not: scores would turn into NaN or infinities.
    let mut p = point("huge", 1, DIM);
    p.vector = vec![3e38; DIM];
    let e = c.upsert(vec![p.clone()]).unwrap_err();
    assert!(matches!(e, StorageError::InvalidPoint { .. }), "{e}");
    assert!(e.to_string().contains("norm"), "{e}");
    let mut w = c.bulk_writer().unwrap();
    assert!(w.push(p).is_err());
    drop(w);
    // Large but representable: accepted.
    let mut ok = point("big", 1, DIM);
    ok.vector = vec![1e18; DIM];
    c.upsert(vec![ok]).unwrap();
    let e = c
        .search(
            &[3e38; DIM],
            &SearchRequest {
                k: 5,
                nprobe: None,
                refine: None,
                recall_target: None,
                filter: None,
                rescore: Default::default(),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("norm"), "{e}");
    assert_eq!(c.len(), 1);
}

#[test]
fn metadata_beyond_the_per_point_limit_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let c = store.create_collection("m", DIM, Metric::Cosine).unwrap();
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "caption".to_string(),
        MetaValue::Str("x".repeat(MAX_META_BYTES_PER_POINT)),
    );
    let p = Point {
        id: "a".into(),
        vector: vec_for("a", 1, DIM),
        image_path: None,
        image_bytes: None,
        metadata,
    };
    let e = c.upsert(vec![p.clone()]).unwrap_err();
    assert!(e.to_string().contains("\"caption\""), "{e}");
    let mut w = c.bulk_writer().unwrap();
    let e = w.push(p).unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
}

#[test]
fn a_collection_dropped_under_a_bulk_load_never_loses_its_successor() {
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), small_opts()).unwrap();
        let old = store.create_collection("c", DIM, Metric::Cosine).unwrap();
        let mut w = old.bulk_writer().unwrap();
        for i in 0..50 {
            w.push(point(&format!("old{i}"), 1, DIM)).unwrap();
        }
        assert!(store.drop_collection("c").unwrap());
        // The successor reuses the name and numbers its segments from 1 again.
        let new = store.create_collection("c", DIM, Metric::Cosine).unwrap();
        let mut nw = new.bulk_writer().unwrap();
        for i in 0..30 {
            nw.push(point(&format!("new{i}"), 1, DIM)).unwrap();
        }
        if round % 2 == 0 {
            nw.commit().unwrap();
            assert!(w.commit().is_err(), "a dropped collection takes no commit");
        } else {
            // The old writer finishes first, while the new one is still loading.
            assert!(w.commit().is_err(), "a dropped collection takes no commit");
            nw.commit().unwrap();
        }
        assert_eq!(new.len(), 30, "round {round}");
        new.verify().unwrap();
        assert!(new.get("new7").is_some());
        assert!(new.get("old7").is_none());
        drop(new);
        drop(old);
        store.close().unwrap();
        drop(store);
        // Reopened: the successor's data is intact and nothing of the dropped one came back.
        let store = Store::open(dir.path(), small_opts()).unwrap();
        let c = store.collection("c").unwrap();
        assert_eq!(c.len(), 30, "round {round}");
        assert!(c.get("new29").is_some());
    }
}
