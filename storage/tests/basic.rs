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

/// Waits (up to 60 s) until no segment waits for a deferred index build
/// (built, or given up after a failure).
fn wait_indexed(c: &glimpse_storage::Collection) {
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
fn deferral_opts(quiet: std::time::Duration, quiet_max: std::time::Duration) -> StoreOptions {
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

/// Bulk-loads ids `v{i}` for `ids`, each with version `version` (or `i`).
fn bulk_load(c: &glimpse_storage::Collection, ids: std::ops::Range<u64>, version: Option<u64>) {
    let mut w = c.bulk_writer().unwrap();
    for i in ids {
        w.push(point(&format!("v{i}"), version.unwrap_or(i), 16))
            .unwrap();
    }
    w.commit().unwrap();
}

/// The segment directory of collection `ix` in the store at `root` (the first one found).
fn only_segment_dir(root: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(root.join("collections").join("ix"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap()
}

/// Point `v{i}` (dimension 16, version `i`) is its own nearest neighbour.
fn assert_finds_itself(c: &glimpse_storage::Collection, i: u64) {
    let hits = c
        .search(
            &vec_for(&format!("v{i}"), i, 16),
            &SearchRequest {
                k: 3,
                nprobe: Some(100_000),
                refine: Some(1000),
                recall_target: None,
                filter: None,
            },
        )
        .unwrap();
    assert_eq!(hits[0].id, format!("v{i}"));
    assert_eq!(hits[0].score, 0.0);
}

#[test]
fn large_segments_get_an_ann_index_that_respects_deletes_and_filters() {
    for defer in [false, true] {
        ann_index_respects_deletes_and_filters(defer);
    }
}

fn ann_index_respects_deletes_and_filters(defer: bool) {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let opts = StoreOptions {
        index_min_rows: 1500,
        defer_bulk_index: defer,
        bulk_quiet: std::time::Duration::from_millis(20),
        ..StoreOptions::default()
    };
    let n = 3000u64;
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let c = store.create_collection("ix", dim, Metric::L2).unwrap();
        let mut w = c.bulk_writer().unwrap();
        for i in 0..n {
            w.push(point(&format!("v{i}"), i, dim)).unwrap();
        }
        w.commit().unwrap();
        if defer {
            wait_indexed(&c);
            assert_eq!(c.counters().index_builds, 1);
        } else {
            assert_eq!(c.counters().index_builds, 0);
        }
        assert_eq!(c.stats().indexed_segments, 1);
    }
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.collection("ix").unwrap();
    assert_eq!(c.stats().indexed_segments, 1);
    assert_eq!(c.stats().unindexed_rows, 0);
    let wide = |k: usize, filter: Option<Filter>| SearchRequest {
        k,
        nprobe: Some(100_000),
        refine: Some(1000),
        recall_target: None,
        filter,
    };
    for i in [0u64, 17, 2999] {
        let hits = c
            .search(&vec_for(&format!("v{i}"), i, dim), &wide(5, None))
            .unwrap();
        assert_eq!(hits[0].id, format!("v{i}"));
        assert_eq!(hits[0].score, 0.0);
        assert_eq!(hits.len(), 5);
    }
    // A deleted row and a row shadowed by a newer write are never returned.
    c.delete(&["v17".into()]).unwrap();
    c.upsert(vec![point("v18", 5000, dim)]).unwrap();
    let hits = c.search(&vec_for("v17", 17, dim), &wide(20, None)).unwrap();
    assert!(hits.iter().all(|h| h.id != "v17"));
    let hits = c
        .search(&vec_for("v18", 18, dim), &wide(3000, None))
        .unwrap();
    assert_eq!(hits.iter().filter(|h| h.id == "v18").count(), 1);
    assert_eq!(
        hits.iter().find(|h| h.id == "v18").unwrap().metadata["version"],
        MetaValue::Int(5000)
    );
    let even = Filter::Eq {
        key: "even".into(),
        value: MetaValue::Bool(true),
    };
    let hits = c
        .search(&vec_for("v3", 3, dim), &wide(50, Some(even)))
        .unwrap();
    assert_eq!(hits.len(), 50);
    assert!(
        hits.iter()
            .all(|h| h.metadata["even"] == MetaValue::Bool(true))
    );
    c.flush().unwrap();
    assert!(c.get("v17").is_none());
}

/// A deferred bulk segment is searchable exactly right after commit, gets
/// its index only once no bulk writer is open, keeps it across a reopen, and
/// a damaged index file is rebuilt rather than failing the open.
#[test]
fn deferred_index_waits_for_quiet_and_survives_damage() {
    let dir = tempfile::tempdir().unwrap();
    let opts = deferral_opts(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(10),
    );
    assert!(
        StoreOptions::default().defer_bulk_index,
        "deferral is the default"
    );
    let n = 3000u64;
    let exact = assert_finds_itself;
    let seg_dir;
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let c = store.create_collection("ix", 16, Metric::L2).unwrap();
        // A second writer stays open: loading is not quiet yet.
        let other = c.bulk_writer().unwrap();
        bulk_load(&c, 0..n, None);
        assert_eq!(c.len(), n);
        assert_eq!(c.stats().unindexed_rows, n);
        exact(&c, 7);
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(
            c.stats().indexed_segments,
            0,
            "built while a writer was open"
        );
        drop(other);
        wait_indexed(&c);
        assert_eq!(c.stats().indexed_segments, 1);
        assert_eq!(c.counters().index_builds, 1);
        exact(&c, 7);
        seg_dir = only_segment_dir(dir.path());
    }
    // Reopen: the index comes back from the manifest, no rebuild.
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let c = store.collection("ix").unwrap();
        assert_eq!(c.stats().indexed_segments, 1);
        assert_eq!(c.stats().unindexed_rows, 0);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(c.counters().index_builds, 0);
        exact(&c, 2999);
    }
    // Damage the index file (and leave a stray temp file): the open succeeds,
    // the segment is searched exactly, and the index is built again.
    let ix = seg_dir.join("index.ivfpq");
    let mut bytes = std::fs::read(&ix).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&ix, &bytes).unwrap();
    std::fs::write(seg_dir.join("index.ivfpq.tmp"), b"partial").unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.collection("ix").unwrap();
    assert!(!seg_dir.join("index.ivfpq.tmp").exists());
    exact(&c, 123);
    wait_indexed(&c);
    assert_eq!(c.stats().indexed_segments, 1);
    assert_eq!(c.counters().index_builds, 1);
    exact(&c, 123);
    assert_ne!(std::fs::read(&ix).unwrap(), bytes, "damaged file replaced");
}

/// A deferred build that cannot write its file is given up until the next
/// start (no retry loop burning the cores); the segment stays searchable
/// exactly, and after a restart the index is built.
#[test]
fn failed_deferred_build_leaves_the_segment_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let opts = deferral_opts(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(10),
    );
    let seg_dir = {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let c = store.create_collection("ix", 16, Metric::L2).unwrap();
        let hold = c.bulk_writer().unwrap();
        bulk_load(&c, 0..3000, None);
        let seg_dir = only_segment_dir(dir.path());
        // A directory where the build writes its temp file: the write fails (even as root).
        std::fs::create_dir(seg_dir.join("index.ivfpq.tmp")).unwrap();
        drop(hold);
        // No longer pending once the failed attempt gave up.
        wait_indexed(&c);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let s = c.stats();
        assert_eq!(
            (s.indexed_segments, c.counters().index_builds),
            (0, 0),
            "{s:?}"
        );
        assert_finds_itself(&c, 1234);
        seg_dir
    };
    std::fs::remove_dir(seg_dir.join("index.ivfpq.tmp")).unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.collection("ix").unwrap();
    wait_indexed(&c);
    assert_eq!(c.stats().indexed_segments, 1);
    assert_finds_itself(&c, 1234);
}

/// Loads ids `w0..w{n}` of dimension 128 in one bulk commit: enough rows that
/// training their index takes seconds in a test build.
fn bulk_load_wide(c: &glimpse_storage::Collection, ids: std::ops::Range<u64>) {
    let mut w = c.bulk_writer().unwrap();
    for i in ids {
        w.push(point(&format!("w{i}"), i, 128)).unwrap();
    }
    w.commit().unwrap();
}

/// Deferral options whose deferred work starts 1 ms after a load.
fn prompt_opts() -> StoreOptions {
    deferral_opts(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_secs(10),
    )
}

/// Closing a collection while its deferred index is being trained does not
/// wait out the training: the build stops at its next step, nothing is saved,
/// the segment stays pending, and the next open builds it.
#[test]
fn closing_interrupts_a_deferred_index_build() {
    let dir = tempfile::tempdir().unwrap();
    let opts = prompt_opts();
    let n = 100_000u64;
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let c = store.create_collection("ix", 128, Metric::Cosine).unwrap();
        bulk_load_wide(&c, 0..n);
        // The background thread starts training at once (1 ms quiet); close while it runs.
        std::thread::sleep(std::time::Duration::from_millis(300));
        c.close().unwrap();
        assert_eq!(
            c.counters().index_builds,
            0,
            "the build ran to the end instead of stopping"
        );
    }
    let seg_dir = only_segment_dir(dir.path());
    assert!(!seg_dir.join("index.ivfpq").exists());
    assert!(!seg_dir.join("index.ivfpq.tmp").exists());
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.collection("ix").unwrap();
    assert_eq!(c.len(), n);
    wait_indexed(&c);
    assert_eq!(c.stats().indexed_segments, 1);
    let hits = c
        .search(
            &vec_for("w4321", 4321, 128),
            &SearchRequest {
                k: 1,
                ..SearchRequest::default()
            },
        )
        .unwrap();
    assert_eq!(hits[0].id, "w4321");
}

/// A compaction that is training the merged segment's index when the
/// collection closes stops and fails with `Interrupted`; its sources stay,
/// no temp segment is left behind, and nothing is lost.
#[test]
fn closing_interrupts_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        // Indexed inside the commits, so the compaction's index build is the one slow step.
        defer_bulk_index: false,
        ..prompt_opts()
    };
    let half = 60_000u64;
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        let c = store.create_collection("ix", 128, Metric::Cosine).unwrap();
        bulk_load_wide(&c, 0..half);
        bulk_load_wide(&c, half..2 * half);
        assert_eq!(c.stats().segments, 2);
        let compacting = c.clone();
        let merge = std::thread::spawn(move || compacting.compact());
        std::thread::sleep(std::time::Duration::from_millis(300));
        c.close().unwrap();
        let r = merge.join().unwrap();
        assert!(
            matches!(r, Err(StorageError::Interrupted(_))),
            "the compaction was not interrupted: {r:?}"
        );
        assert_eq!(c.counters().compactions, 0);
    }
    let coll_dir = dir.path().join("collections").join("ix");
    let names: Vec<String> = std::fs::read_dir(&coll_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("tmp-")),
        "temp segment left: {names:?}"
    );
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.collection("ix").unwrap();
    assert_eq!(c.len(), 2 * half);
    assert_eq!(c.stats().segments, 2);
    c.compact().unwrap();
    assert_eq!(c.stats().segments, 1);
    assert_eq!(c.len(), 2 * half);
}

/// A bulk writer that stays open (a steady stream of loads) holds deferred
/// builds back for at most `bulk_quiet_max`; a segment whose rows were all
/// replaced is not indexed at all.
#[test]
fn deferred_index_is_built_within_the_bound_under_steady_loading() {
    let dir = tempfile::tempdir().unwrap();
    let opts = deferral_opts(
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_millis(300),
    );
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.create_collection("ix", 16, Metric::L2).unwrap();
    let _steady = c.bulk_writer().unwrap();
    let load = |version: u64| bulk_load(&c, 0..2000, Some(version));
    load(1);
    // Replaced entirely before its build was due: never indexed.
    load(2);
    assert_eq!(
        c.stats().unindexed_rows,
        2000,
        "only the live segment counts"
    );
    let started = std::time::Instant::now();
    wait_indexed(&c);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(c.counters().index_builds, 1);
    let s = c.stats();
    assert_eq!((s.segments, s.indexed_segments), (2, 1), "{s:?}");
}

/// Once a collection has a trained index, a bulk load of up to twice its
/// rows is indexed inside the commit with those quantizers (no deferral, no
/// exact scans); a much larger one is deferred and trained on its own.
#[test]
fn bulk_loads_reuse_a_trained_index() {
    let dir = tempfile::tempdir().unwrap();
    let opts = deferral_opts(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(10),
    );
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.create_collection("ix", 16, Metric::L2).unwrap();
    let load = |ids: std::ops::Range<u64>| bulk_load(&c, ids, None);
    load(0..2000);
    wait_indexed(&c);
    assert_eq!(c.counters().index_builds, 1);
    // Up to twice the template: indexed at commit.
    load(2000..6000);
    let s = c.stats();
    assert_eq!(
        (s.segments, s.indexed_segments, s.unindexed_rows),
        (2, 2, 0),
        "{s:?}"
    );
    assert_eq!(c.counters().index_builds, 1, "no background build needed");
    for i in [2000u64, 4321, 5999] {
        assert_finds_itself(&c, i);
    }
    // Far larger than any trained index: deferred, then trained on its own.
    load(6000..20_000);
    assert_eq!(c.stats().unindexed_rows, 14_000);
    wait_indexed(&c);
    assert_eq!(c.counters().index_builds, 2);
    assert_eq!(c.stats().indexed_segments, 3);
}

/// The trained quantizers of the index file in segment directory `seg`.
fn quantizers_of(seg: &std::path::Path) -> glimpse_index::IvfPqIndex {
    let bytes = std::fs::read(seg.join("index.ivfpq")).unwrap();
    glimpse_index::IvfPqView::from_bytes(&bytes)
        .unwrap()
        .empty_like()
}

/// Segment directories of collection `ix`, oldest first.
fn segment_dirs(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("collections").join("ix"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    dirs.sort();
    dirs
}

/// Under a steady stream of loads, the shards committed before any index
/// existed are indexed at the short bound: the first is trained, the next
/// borrow its quantizers (one assignment pass each); the merge of those
/// shards waits for the longer compaction bound or for quiet, so it never
/// stalls the loads' commits half way.
#[test]
fn steady_loading_indexes_shards_early_and_merges_them_after() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        bulk_compaction_quiet_max: std::time::Duration::from_secs(3600),
        compaction: glimpse_storage::CompactionOptions {
            min_merge: 3,
            ..Default::default()
        },
        ..deferral_opts(
            std::time::Duration::from_millis(300),
            std::time::Duration::from_millis(200),
        )
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let c = store.create_collection("ix", 16, Metric::L2).unwrap();
    let steady = c.bulk_writer().unwrap();
    for shard in 0..3u64 {
        bulk_load(&c, shard * 2000..(shard + 1) * 2000, None);
    }
    wait_indexed(&c);
    let s = c.stats();
    assert_eq!((s.segments, s.indexed_segments), (3, 3), "{s:?}");
    assert_eq!(c.counters().index_builds, 3);
    let dirs = segment_dirs(dir.path());
    let first = quantizers_of(&dirs[0]);
    for d in &dirs[1..] {
        assert!(
            quantizers_of(d) == first,
            "{} was trained instead of borrowing",
            d.display()
        );
    }
    // Trained and borrowed indexes alike carry their own recall table.
    let report = c.recall_report(None);
    assert_eq!(report.uncalibrated_segments, 0, "{report:?}");
    assert!(report.segments.iter().all(|s| s.calibrated), "{report:?}");
    assert!(
        report.expected_recall.is_some_and(|r| r >= 0.95),
        "{report:?}"
    );
    // Still loading: no merge yet, although three segments share a tier.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(c.stats().segments, 3);
    assert_eq!(c.counters().compactions, 0);
    drop(steady);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while c.stats().segments > 1 {
        assert!(std::time::Instant::now() < deadline, "never merged");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(c.counters().compactions, 1);
    // So does the merged one.
    let report = c.recall_report(Some(0.9));
    assert_eq!(report.segments.len(), 1);
    assert!(report.segments[0].calibrated, "{report:?}");
    for i in [0u64, 2345, 5999] {
        assert_finds_itself(&c, i);
    }
}

/// `search_with_stats` says which path a search took: an exact scan while the
/// segment waits for its index, the ANN scan and re-rank once it has one.
#[test]
fn search_timings_say_which_path_ran() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), prompt_opts()).unwrap();
    let c = store.create_collection("ix", 16, Metric::L2).unwrap();
    let hold = c.bulk_writer().unwrap();
    bulk_load(&c, 0..3000, None);
    let req = SearchRequest {
        k: 5,
        refine: Some(4),
        recall_target: None,
        ..SearchRequest::default()
    };
    let (hits, t) = c.search_with_stats(&vec_for("v42", 42, 16), &req).unwrap();
    assert_eq!(hits[0].id, "v42");
    assert_eq!(
        (t.indexed_segments, t.exact_rows, t.reranked),
        (0, 3000, 0),
        "{t:?}"
    );
    drop(hold);
    wait_indexed(&c);
    let (hits, t) = c.search_with_stats(&vec_for("v42", 42, 16), &req).unwrap();
    assert_eq!(hits[0].id, "v42");
    assert_eq!(
        (t.indexed_segments, t.exact_rows, t.reranked),
        (1, 0, 20),
        "{t:?}"
    );
    assert!(t.ann_scan > std::time::Duration::ZERO && t.exact_scan.is_zero());
    // A write in the memtable adds its exact scan.
    c.upsert(vec![point("fresh", 1, 16)]).unwrap();
    let (_, t) = c.search_with_stats(&vec_for("v42", 42, 16), &req).unwrap();
    assert_eq!((t.indexed_segments, t.exact_rows), (1, 1), "{t:?}");
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

/// With `compact_rerank`, a cosine index carries the compact tier: searches score their
/// candidates on its codes and read far fewer raw rows, with exactly the results (ids and
/// scores) of a store without it.
#[test]
fn the_compact_rerank_tier_changes_reads_not_results() {
    let run = |compact: bool| {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            compact_rerank: compact,
            ..prompt_opts()
        };
        let store = Store::open(dir.path(), opts).unwrap();
        let c = store.create_collection("ix", 16, Metric::Cosine).unwrap();
        bulk_load(&c, 0..4000, None);
        wait_indexed(&c);
        let req = SearchRequest {
            k: 10,
            refine: Some(40),
            ..SearchRequest::default()
        };
        let (mut out, mut scored, mut reranked) = (Vec::new(), 0, 0);
        for i in 0..50u64 {
            let (hits, t) = c
                .search_with_stats(&vec_for(&format!("q{i}"), i + 7, 16), &req)
                .unwrap();
            scored += t.compact_scored;
            reranked += t.reranked;
            out.push(
                hits.into_iter()
                    .map(|h| (h.id, h.score))
                    .collect::<Vec<_>>(),
            );
        }
        (out, scored, reranked)
    };
    let (with, scored_with, reranked_with) = run(true);
    let (without, scored_without, reranked_without) = run(false);
    assert_eq!(with, without);
    assert_eq!(scored_without, 0);
    assert_eq!(scored_with, reranked_without);
    assert!(
        reranked_with * 2 < reranked_without,
        "{reranked_with} raw rows with the tier, {reranked_without} without"
    );
}
