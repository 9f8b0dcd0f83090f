//! ANN index builds on real files: deferred builds of bulk loads and their bounds, borrowed
//! quantizers, merges, cancellation, recall tables and the compact re-rank tier.
#![allow(clippy::unwrap_used)]

mod common;

use common::{deferral_opts, only_segment_dir, point, prompt_opts, vec_for, wait_indexed};
use glimpse_storage::{
    Filter, MetaValue, Metric, Rescore, SearchRequest, StorageError, Store, StoreOptions,
};

/// Bulk-loads ids `v{i}` for `ids`, each with version `version` (or `i`).
fn bulk_load(c: &glimpse_storage::Collection, ids: std::ops::Range<u64>, version: Option<u64>) {
    let mut w = c.bulk_writer().unwrap();
    for i in ids {
        w.push(point(&format!("v{i}"), version.unwrap_or(i), 16))
            .unwrap();
    }
    w.commit().unwrap();
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
                rescore: Default::default(),
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
        rescore: Default::default(),
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
    let report = c.recall_report(None, Rescore::Always);
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
    let report = c.recall_report(Some(0.9), Rescore::Always);
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
