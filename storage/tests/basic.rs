//! End-to-end behaviour of the public API on real files.
#![allow(clippy::unwrap_used)]

mod common;

use common::{point, small_opts, vec_for};
use glimpse_storage::{
    Filter, MetaValue, Metric, Point, SearchRequest, StorageError, Store, StoreOptions,
};

fn req(k: usize) -> SearchRequest {
    SearchRequest {
        k,
        ..SearchRequest::default()
    }
}

#[test]
fn crud_search_flush_compact_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 8;
    {
        let store = Store::open(dir.path(), small_opts()).unwrap();
        let c = store.create_collection("imgs", dim, Metric::L2).unwrap();
        let s = c
            .upsert((0..100).map(|i| point(&format!("p{i}"), 1, dim)).collect())
            .unwrap();
        assert_eq!((s.inserted, s.replaced), (100, 0));
        let s = c
            .upsert((0..10).map(|i| point(&format!("p{i}"), 2, dim)).collect())
            .unwrap();
        assert_eq!((s.inserted, s.replaced), (0, 10));
        assert_eq!(c.delete(&["p50".into(), "nope".into()]).unwrap(), 1);
        assert_eq!(c.len(), 99);
        assert_eq!(c.get("p3").unwrap(), point("p3", 2, dim));
        assert_eq!(c.get("p20").unwrap(), point("p20", 1, dim));
        assert!(c.get("p50").is_none());
        // Exact match is the best hit.
        let hits = c.search(&vec_for("p7", 2, dim), &req(3)).unwrap();
        assert_eq!(hits[0].id, "p7");
        assert_eq!(hits[0].score, 0.0);
        assert_eq!(hits[0].metadata.get("version"), Some(&MetaValue::Int(2)));
        // The replaced version is not found any more.
        let hits = c.search(&vec_for("p7", 1, dim), &req(100)).unwrap();
        assert_eq!(hits.iter().filter(|h| h.id == "p7").count(), 1);
        c.flush().unwrap();
        assert!(c.stats().segments >= 1);
        assert_eq!(c.stats().memtable_rows, 0);
        c.upsert(vec![point("p20", 5, dim)]).unwrap();
        c.delete(&["p21".into()]).unwrap();
        c.flush().unwrap();
        c.compact().unwrap();
        let st = c.stats();
        assert_eq!(st.segments, 1);
        assert_eq!(st.deleted_rows, 0);
        assert_eq!(st.points, 98);
        assert_eq!(c.get("p20").unwrap(), point("p20", 5, dim));
        c.upsert(vec![point("p22", 9, dim)]).unwrap();
        c.delete(&["p23".into()]).unwrap();
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let c = store.collection("imgs").unwrap();
    assert_eq!(c.len(), 97);
    assert_eq!(c.get("p22").unwrap(), point("p22", 9, dim));
    assert!(c.get("p23").is_none() && c.get("p21").is_none() && c.get("p50").is_none());
    assert_eq!(c.get("p3").unwrap(), point("p3", 2, dim));
    assert_eq!(c.image_bytes("p3"), None);
    assert_eq!(c.image_bytes("p30"), None);
    let all = c.search(&vec_for("x", 0, dim), &req(1000)).unwrap();
    assert_eq!(all.len(), 97);
    let mut ids: Vec<_> = all.iter().map(|h| h.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 97);
}

#[test]
fn filters_apply_inside_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let c = store.create_collection("f", 4, Metric::Cosine).unwrap();
    let pts: Vec<Point> = (0..200u64).map(|i| point(&format!("{i}"), i, 4)).collect();
    c.upsert(pts[..150].to_vec()).unwrap();
    c.flush().unwrap();
    c.upsert(pts[150..].to_vec()).unwrap();
    let q = vec_for("q", 0, 4);
    let f = Filter::And(vec![
        Filter::Eq {
            key: "even".into(),
            value: MetaValue::Bool(true),
        },
        Filter::Range {
            key: "version".into(),
            gt: None,
            gte: Some(100.0),
            lt: Some(180.0),
            lte: None,
        },
    ]);
    let hits = c
        .search(
            &q,
            &SearchRequest {
                k: 1000,
                filter: Some(f),
                ..SearchRequest::default()
            },
        )
        .unwrap();
    assert_eq!(hits.len(), 40);
    for h in &hits {
        let MetaValue::Int(v) = h.metadata["version"] else {
            panic!()
        };
        assert!(v % 2 == 0 && (100..180).contains(&v));
    }
    for w in hits.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    let not = Filter::Not(Box::new(Filter::In {
        key: "version".into(),
        values: vec![MetaValue::Int(1), MetaValue::Int(199)],
    }));
    let hits = c
        .search(
            &q,
            &SearchRequest {
                k: 1000,
                filter: Some(not),
                ..SearchRequest::default()
            },
        )
        .unwrap();
    assert_eq!(hits.len(), 198);
}

#[test]
fn rejects_bad_input_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(matches!(
        store.create_collection("bad name", 4, Metric::L2),
        Err(StorageError::InvalidName(_))
    ));
    assert!(
        store
            .create_collection(&"a".repeat(65), 4, Metric::L2)
            .is_err()
    );
    assert!(store.create_collection("", 4, Metric::L2).is_err());
    assert!(store.create_collection("zero", 0, Metric::L2).is_err());
    let c = store.create_collection("ok-1_A", 4, Metric::L2).unwrap();
    assert!(store.create_collection("ok-1_A", 4, Metric::L2).is_ok());
    assert!(matches!(
        store.create_collection("ok-1_A", 5, Metric::L2),
        Err(StorageError::CollectionMismatch { .. })
    ));
    assert!(store.create_collection("ok-1_A", 4, Metric::Dot).is_err());
    let good = point("g", 1, 4);
    let mut nan = point("n", 1, 4);
    nan.vector[2] = f32::NAN;
    let mut long = point(&"x".repeat(257), 1, 4);
    long.vector = vec![0.0; 4];
    let short = Point {
        id: "s".into(),
        vector: vec![1.0; 3],
        ..Point::default()
    };
    let empty = Point {
        id: String::new(),
        vector: vec![1.0; 4],
        ..Point::default()
    };
    for bad in [nan, long, short, empty] {
        let e = c.upsert(vec![good.clone(), bad]).unwrap_err();
        assert!(
            matches!(e, StorageError::InvalidPoint { index: 1, .. }),
            "{e}"
        );
    }
    assert!(c.get("g").is_none());
    assert_eq!(c.len(), 0);
    assert!(c.search(&[1.0, 2.0], &req(1)).is_err());
    assert!(c.search(&[1.0; 4], &req(0)).is_err());
    assert!(c.search(&[f32::INFINITY; 4], &req(1)).is_err());
    assert_eq!(c.upsert(vec![]).unwrap().inserted, 0);
    let id256 = "y".repeat(256);
    c.upsert(vec![Point {
        id: id256.clone(),
        vector: vec![1.0; 4],
        ..Point::default()
    }])
    .unwrap();
    assert!(c.get(&id256).is_some());
}

#[test]
fn bulk_ingest_is_atomic_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    {
        let store = Store::open(dir.path(), small_opts()).unwrap();
        let c = store.create_collection("bulk", dim, Metric::Dot).unwrap();
        c.upsert(vec![point("a", 1, dim), point("b", 1, dim)])
            .unwrap();
        let mut w = c.bulk_writer().unwrap();
        for i in 0..1000u64 {
            w.push(point(&format!("k{i}"), i, dim)).unwrap();
        }
        w.push(point("a", 7, dim)).unwrap();
        w.push(point("k5", 99, dim)).unwrap(); // duplicate inside the bulk: last wins
        let s = w.commit().unwrap();
        assert_eq!((s.inserted, s.replaced), (1000, 1));
        assert_eq!(c.len(), 1002);
        assert_eq!(c.get("a").unwrap(), point("a", 7, dim));
        assert_eq!(c.get("k5").unwrap(), point("k5", 99, dim));
        // Loading the same data again leaves one copy per id.
        let mut w = c.bulk_writer().unwrap();
        for i in 0..1000u64 {
            w.push(point(&format!("k{i}"), i, dim)).unwrap();
        }
        let s = w.commit().unwrap();
        assert_eq!((s.inserted, s.replaced), (0, 1000));
        assert_eq!(c.len(), 1002);
        assert_eq!(c.get("k5").unwrap(), point("k5", 5, dim));
        let hits = c.search(&vec_for("k3", 3, dim), &req(2000)).unwrap();
        assert_eq!(hits.len(), 1002);
        // A dropped writer leaves nothing behind.
        let mut w = c.bulk_writer().unwrap();
        w.push(point("zzz", 1, dim)).unwrap();
        drop(w);
        assert!(c.get("zzz").is_none());
        let leftovers = std::fs::read_dir(dir.path().join("collections/bulk"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let c = store.collection("bulk").unwrap();
    assert_eq!(c.len(), 1002);
    assert_eq!(c.get("k999").unwrap(), point("k999", 999, dim));
    assert_eq!(c.get("k3").unwrap().image_bytes, Some(b"k3".to_vec()));
    assert_eq!(c.image_bytes("k3"), Some(b"k3".to_vec()));
}

#[test]
fn drop_collection_is_durable_and_lock_excludes_second_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert!(matches!(
            Store::open(dir.path(), StoreOptions::default()),
            Err(StorageError::Locked(_))
        ));
        let c = store.create_collection("gone", 2, Metric::L2).unwrap();
        c.upsert(vec![Point {
            id: "1".into(),
            vector: vec![1.0, 2.0],
            ..Point::default()
        }])
        .unwrap();
        store.create_collection("kept", 2, Metric::L2).unwrap();
        assert!(store.drop_collection("gone").unwrap());
        assert!(!store.drop_collection("gone").unwrap());
        assert!(c.upsert(vec![]).is_ok());
        assert!(matches!(
            c.upsert(vec![Point {
                id: "2".into(),
                vector: vec![1.0, 2.0],
                ..Point::default()
            }]),
            Err(StorageError::Closed(_))
        ));
        let names: Vec<_> = store.list().into_iter().map(|i| i.name).collect();
        assert_eq!(names, vec!["kept".to_string()]);
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(store.collection("gone").is_none());
    assert!(store.collection("kept").is_some());
    let c = store.create_collection("gone", 3, Metric::Cosine).unwrap();
    assert_eq!(c.len(), 0);
}

#[test]
fn concurrent_writers_share_fsyncs_and_readers_see_consistent_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let c = store.create_collection("conc", 8, Metric::L2).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let c = c.clone();
            s.spawn(move || {
                for i in 0..50 {
                    c.upsert(vec![point(&format!("t{t}-{i}"), 1, 8)]).unwrap();
                }
            });
        }
        let c2 = c.clone();
        s.spawn(move || {
            for _ in 0..50 {
                let hits = c2.search(&vec_for("q", 0, 8), &req(1000)).unwrap();
                let mut ids: Vec<_> = hits.iter().map(|h| h.id.clone()).collect();
                let n = ids.len();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), n, "a search returned an id twice");
            }
        });
    });
    assert_eq!(c.len(), 400);
    let counters = c.counters();
    assert_eq!(counters.wal_records_written, 400);
    assert!(counters.fsyncs <= 400);
    c.flush().unwrap();
    assert!(c.counters().flushes >= 1);
    assert_eq!(c.stats().memtable_rows, 0);
    for t in 0..8 {
        for i in 0..50 {
            assert_eq!(
                c.get(&format!("t{t}-{i}")).unwrap(),
                point(&format!("t{t}-{i}"), 1, 8)
            );
        }
    }
}

#[test]
fn periodic_durability_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        durability: glimpse_storage::Durability::Periodic(std::time::Duration::from_millis(20)),
        ..StoreOptions::default()
    };
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let c = store.create_collection("p", 4, Metric::Dot).unwrap();
        for i in 0..20 {
            c.upsert(vec![point(&format!("q{i}"), 1, 4)]).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.counters().fsyncs == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no background fsync happened"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(c.counters().fsyncs < 20);
    }
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.collection("p").unwrap();
    assert_eq!(c.len(), 20);
    assert_eq!(c.get("q19").unwrap(), point("q19", 1, 4));
}
