//! Model-based property test: random sequences of upsert, delete, flush,
//! compact, reopen and bulk ingest against an in-memory model; every read
//! must match the model.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{point, vec_for};
use glimpse_storage::{CompactionOptions, Metric, Point, SearchRequest, Store, StoreOptions};
use proptest::prelude::*;

const DIM: usize = 4;
const IDS: u8 = 24;

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<(u8, u8)>),
    Delete(Vec<u8>),
    Flush,
    Compact,
    Reopen,
    Bulk(Vec<(u8, u8)>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..IDS, any::<u8>()), 1..8).prop_map(Op::Upsert),
        3 => prop::collection::vec(0..IDS, 1..4).prop_map(Op::Delete),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => prop::collection::vec((0..IDS, any::<u8>()), 0..12).prop_map(Op::Bulk),
    ]
}

fn opts() -> StoreOptions {
    StoreOptions {
        memtable_flush_rows: 6,
        wal_segment_bytes: 2048,
        compaction: CompactionOptions {
            min_merge: 2,
            ..CompactionOptions::default()
        },
        ..StoreOptions::default()
    }
}

fn id(i: u8) -> String {
    format!("id{i}")
}

fn check(store: &Store, model: &BTreeMap<String, Point>) -> Result<(), TestCaseError> {
    let c = store.collection("m").unwrap();
    for i in 0..IDS {
        let got = c.get(&id(i));
        prop_assert_eq!(got.as_ref(), model.get(&id(i)), "get {}", id(i));
    }
    prop_assert_eq!(c.len() as usize, model.len());
    let want_ids: Vec<String> = model.keys().cloned().collect();
    prop_assert_eq!(c.ids(), want_ids, "live ids");
    let q = vec_for("query", 0, DIM);
    let hits = c
        .search(
            &q,
            &SearchRequest {
                k: 100,
                ..SearchRequest::default()
            },
        )
        .unwrap();
    let mut want: Vec<(f32, String)> = model
        .values()
        .map(|p| (Metric::L2.score(&q, &p.vector), p.id.clone()))
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut got: Vec<(f32, String)> = hits.iter().map(|h| (h.score, h.id.clone())).collect();
    got.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), opts()).unwrap();
        store.create_collection("m", DIM, Metric::L2).unwrap();
        let mut model: BTreeMap<String, Point> = BTreeMap::new();
        for op in ops {
            let c = store.collection("m").unwrap();
            match op {
                Op::Upsert(items) => {
                    let batch: Vec<Point> = items.iter().map(|&(i, v)| point(&id(i), v as u64, DIM)).collect();
                    c.upsert(batch.clone()).unwrap();
                    for p in batch {
                        model.insert(p.id.clone(), p);
                    }
                }
                Op::Delete(ids) => {
                    let ids: Vec<String> = ids.into_iter().map(id).collect();
                    let mut existed = std::collections::BTreeSet::new();
                    for i in &ids {
                        if model.remove(i).is_some() {
                            existed.insert(i.clone());
                        }
                    }
                    let n = c.delete(&ids).unwrap();
                    prop_assert_eq!(n, existed.len());
                }
                Op::Flush => c.flush().unwrap(),
                Op::Compact => c.compact().unwrap(),
                Op::Reopen => {
                    drop(c);
                    drop(store);
                    store = Store::open(dir.path(), opts()).unwrap();
                }
                Op::Bulk(items) => {
                    let mut w = c.bulk_writer().unwrap();
                    for &(i, v) in &items {
                        w.push(point(&id(i), v as u64, DIM)).unwrap();
                    }
                    w.commit().unwrap();
                    for &(i, v) in &items {
                        model.insert(id(i), point(&id(i), v as u64, DIM));
                    }
                }
            }
            check(&store, &model)?;
        }
    }
}
