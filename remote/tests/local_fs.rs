//! The writer, replicas, restores, fencing and garbage collection against
//! `object_store`'s local file system (`file://`): real files, real
//! conditional creates. The same paths against a real S3 API are exercised
//! end to end in `tests/tests/e2e_remote.rs` (moto's server).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use glimpse_remote::{
    Bucket, PublisherOptions, RemoteError, latest_manifest, open_replica, open_writer,
};
use glimpse_storage::{Metric, Point, SearchRequest, Store, StoreOptions};

const DIM: usize = 16;

fn point(i: usize, seed: u64) -> Point {
    let mut h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    Point {
        id: format!("p{i}"),
        vector: v,
        image_path: Some(format!("img/{i}.jpg")),
        image_bytes: None,
        metadata: BTreeMap::new(),
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        index_min_rows: 1_000_000,
        borrowed_index_min_rows: 1_000_000,
        ..StoreOptions::default()
    }
}

fn bucket(dir: &Path) -> Bucket {
    Bucket::open(&format!("file://{}", dir.display())).unwrap()
}

fn bulk_load(store: &Store, name: &str, range: std::ops::Range<usize>) {
    let c = store.create_collection(name, DIM, Metric::Cosine).unwrap();
    let mut w = c.bulk_writer().unwrap();
    for i in range {
        w.push(point(i, 7)).unwrap();
    }
    w.commit().unwrap();
}

fn top_ids(store: &Store, name: &str, q: usize) -> Vec<String> {
    let c = store.collection(name).unwrap();
    let req = SearchRequest {
        k: 10,
        ..SearchRequest::default()
    };
    c.search(&point(q, 99).vector, &req)
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect()
}

fn publisher_opts() -> PublisherOptions {
    PublisherOptions {
        gc_grace: Duration::ZERO,
        retain_versions: 2,
        extras: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_loads_deletes_and_drops_and_answers_like_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    let (store, publisher) = open_writer(
        bucket(&remote),
        &tmp.path().join("writer"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    let claimed = publisher.status().version();
    assert_eq!(claimed, 1, "a new writer claims the prefix with version 1");

    bulk_load(&store, "images", 0..500);
    let v = publisher.publish(&store, false).await.unwrap();
    assert_eq!(v, 2);
    // Nothing new: no new version.
    assert_eq!(publisher.publish(&store, false).await.unwrap(), 2);

    let (replica, mut follower) = open_replica(
        bucket(&remote),
        &tmp.path().join("replica"),
        opts(),
        Vec::new(),
        Duration::ZERO,
    )
    .unwrap();
    let out = follower.sync_once().await.unwrap();
    assert_eq!(out.applied, Some(2));
    assert!(out.bytes > 500 * DIM as u64 * 4, "fetched the vectors");
    assert_eq!(replica.collection("images").unwrap().len(), 500);
    for q in 0..5 {
        assert_eq!(top_ids(&store, "images", q), top_ids(&replica, "images", q));
    }
    assert!(
        replica
            .collection("images")
            .unwrap()
            .upsert(vec![point(1, 1)])
            .is_err()
    );

    // Point writes reach the bucket when their memtable flushes.
    let c = store.collection("images").unwrap();
    c.upsert(vec![point(1000, 3)]).unwrap();
    c.delete(&["p0".to_string()]).unwrap();
    assert_eq!(
        publisher.publish(&store, false).await.unwrap(),
        2,
        "unflushed writes are not published"
    );
    c.flush().unwrap();
    assert_eq!(publisher.publish(&store, false).await.unwrap(), 3);
    bulk_load(&store, "other", 0..50);
    publisher.publish(&store, false).await.unwrap();

    let out = follower.sync_once().await.unwrap();
    assert_eq!(out.applied, Some(4));
    let rc = replica.collection("images").unwrap();
    assert_eq!(rc.len(), 500);
    assert!(rc.get("p0").is_none(), "the delete reached the replica");
    assert!(rc.get("p1000").is_some());
    assert_eq!(replica.collection("other").unwrap().len(), 50);
    for q in 0..5 {
        assert_eq!(top_ids(&store, "images", q), top_ids(&replica, "images", q));
    }

    store.drop_collection("other").unwrap();
    publisher.publish(&store, false).await.unwrap();
    follower.sync_once().await.unwrap();
    assert!(
        replica.collection("other").is_none(),
        "a dropped collection leaves the replica"
    );

    // A replica restarted on its directory serves at once from its cache and fetches nothing.
    drop(follower);
    drop(rc);
    drop(replica);
    let (replica, mut follower) = open_replica(
        bucket(&remote),
        &tmp.path().join("replica"),
        opts(),
        Vec::new(),
        Duration::ZERO,
    )
    .unwrap();
    assert_eq!(replica.collection("images").unwrap().len(), 500);
    let out = follower.sync_once().await.unwrap();
    assert_eq!(out.bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_on_an_empty_directory_restores_every_row_and_writes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    {
        let (store, publisher) = open_writer(
            bucket(&remote),
            &tmp.path().join("a"),
            opts(),
            publisher_opts(),
        )
        .await
        .unwrap();
        bulk_load(&store, "images", 0..300);
        let c = store.collection("images").unwrap();
        c.upsert(vec![point(5000, 1)]).unwrap();
        c.flush().unwrap();
        publisher.publish(&store, false).await.unwrap();
    }
    // The first machine is gone; a new one starts on an empty directory.
    let (store, publisher) = open_writer(
        bucket(&remote),
        &tmp.path().join("b"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    let c = store.collection("images").unwrap();
    assert_eq!(c.len(), 301);
    assert!(c.get("p5000").is_some());
    // It writes on; after a restart its WAL replays (sequence numbers went on from the
    // restored checkpoint, so nothing is taken as already flushed).
    c.upsert(vec![point(6000, 1)]).unwrap();
    drop(c);
    store.close().unwrap();
    drop(store);
    drop(publisher);
    let (store, _p) = open_writer(
        bucket(&remote),
        &tmp.path().join("b"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    let c = store.collection("images").unwrap();
    assert_eq!(c.len(), 302);
    assert!(
        c.get("p6000").is_some(),
        "a write after a restore survives a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_writers_on_one_prefix_exactly_one_keeps_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    let (store_a, a) = open_writer(
        bucket(&remote),
        &tmp.path().join("a"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    bulk_load(&store_a, "images", 0..100);
    a.publish(&store_a, false).await.unwrap();
    // B starts on an empty directory: it restores and claims the prefix.
    let (store_b, b) = open_writer(
        bucket(&remote),
        &tmp.path().join("b"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    bulk_load(&store_a, "images", 100..200);
    let err = a.publish(&store_a, false).await.unwrap_err();
    assert!(matches!(err, RemoteError::Fenced { .. }), "{err}");
    assert!(a.status().is_fenced());
    assert!(a.status().write_refusal().is_some());
    // Fenced for good: later rounds refuse at once.
    assert!(matches!(
        a.publish(&store_a, false).await,
        Err(RemoteError::Fenced { .. })
    ));
    // B goes on.
    bulk_load(&store_b, "images", 200..250);
    b.publish(&store_b, false).await.unwrap();
    let m = latest_manifest(&bucket(&remote)).await.unwrap().unwrap();
    assert_eq!(
        m.collections["images"]
            .manifest
            .segments
            .iter()
            .map(|s| s.rows)
            .sum::<u32>(),
        150
    );
    // A restarted on its own directory refuses: the bucket moved on without it.
    drop(a);
    store_a.close().unwrap();
    drop(store_a);
    let err = open_writer(
        bucket(&remote),
        &tmp.path().join("a"),
        opts(),
        publisher_opts(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, RemoteError::Diverged(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_keeps_what_recent_versions_name_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    let (store, p) = open_writer(
        bucket(&remote),
        &tmp.path().join("w"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    for round in 0..4 {
        bulk_load(&store, "images", round * 100..(round + 1) * 100);
        store.collection("images").unwrap().compact().unwrap();
        p.publish(&store, false).await.unwrap();
    }
    // GC runs at most every 30 s: the first publication ran it, so run a fresh writer's.
    drop(p);
    store.close().unwrap();
    drop(store);
    let (store, p) = open_writer(
        bucket(&remote),
        &tmp.path().join("w"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    assert!(
        p.status()
            .gc_deleted
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let files: Vec<_> = walk(&remote);
    let manifests = files.iter().filter(|f| f.contains("/manifests/")).count();
    assert_eq!(manifests, 2, "retain_versions = 2: {files:?}");
    // Every object left is named by a kept manifest, and a fresh restore works.
    drop(store);
    drop(p);
    let (restored, _p) = open_writer(
        bucket(&remote),
        &tmp.path().join("fresh"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    assert_eq!(restored.collection("images").unwrap().len(), 400);
    let _ = Arc::new(());
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_manifest_is_refused_and_the_replica_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    let (store, p) = open_writer(
        bucket(&remote),
        &tmp.path().join("w"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    bulk_load(&store, "images", 0..100);
    p.publish(&store, false).await.unwrap();
    let (replica, mut f) = open_replica(
        bucket(&remote),
        &tmp.path().join("r"),
        opts(),
        Vec::new(),
        Duration::ZERO,
    )
    .unwrap();
    f.sync_once().await.unwrap();
    let version = f.status().version();
    // Someone writes a manifest whose file name climbs out of the data directory.
    let mut m = latest_manifest(&bucket(&remote)).await.unwrap().unwrap();
    m.version += 1;
    let files = m
        .collections
        .get_mut("images")
        .unwrap()
        .files
        .values_mut()
        .next()
        .unwrap();
    let f0 = files.values().next().unwrap().clone();
    files.insert("../../escape".into(), f0);
    std::fs::write(
        remote.join(glimpse_remote::manifest_key(m.version)),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    let err = f.sync_once().await.unwrap_err();
    assert!(matches!(err, RemoteError::BadManifest { .. }), "{err}");
    assert_eq!(f.status().version(), version);
    assert!(f.status().last_error().is_some());
    assert_eq!(replica.collection("images").unwrap().len(), 100);
    assert!(!tmp.path().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_dropped_and_made_again_gets_new_objects_and_replicas_see_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    let (store, p) = open_writer(
        bucket(&remote),
        &tmp.path().join("w"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    bulk_load(&store, "images", 0..200);
    p.publish(&store, false).await.unwrap();
    let (replica, mut f) = open_replica(
        bucket(&remote),
        &tmp.path().join("r"),
        opts(),
        Vec::new(),
        Duration::ZERO,
    )
    .unwrap();
    f.sync_once().await.unwrap();
    let before = latest_manifest(&bucket(&remote)).await.unwrap().unwrap();
    // Same name, same segment id 1, same row count: only the data differs.
    store.drop_collection("images").unwrap();
    bulk_load(&store, "images", 1000..1200);
    p.publish(&store, false).await.unwrap();
    let after = latest_manifest(&bucket(&remote)).await.unwrap().unwrap();
    let keys = |m: &glimpse_remote::RemoteManifest| -> Vec<String> {
        m.keys().map(str::to_string).collect()
    };
    assert!(
        keys(&after).iter().all(|k| !keys(&before).contains(k)),
        "no key of the old collection is reused"
    );
    f.sync_once().await.unwrap();
    let c = replica.collection("images").unwrap();
    assert!(c.get("p0").is_none(), "the old collection's rows are gone");
    assert!(c.get("p1000").is_some());
    assert_eq!(top_ids(&store, "images", 3), top_ids(&replica, "images", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_recognised_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    let dir = tmp.path().join("w");
    let (store, p) = open_writer(bucket(&remote), &dir, opts(), publisher_opts())
        .await
        .unwrap();
    bulk_load(&store, "images", 0..100);
    let v = p.publish(&store, false).await.unwrap();
    drop(p);
    store.close().unwrap();
    drop(store);
    // As if the process died after the create went through but before its answer arrived:
    // the record still says `pending`.
    let m = latest_manifest(&bucket(&remote)).await.unwrap().unwrap();
    let record = glimpse_remote::WriterRecord {
        url: bucket(&remote).url().to_string(),
        version: v - 1,
        session: m.writer.clone(),
        pending: Some(v),
    };
    std::fs::write(
        dir.join(glimpse_remote::WRITER_RECORD),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let (store, p) = open_writer(bucket(&remote), &dir, opts(), publisher_opts())
        .await
        .unwrap();
    assert_eq!(store.collection("images").unwrap().len(), 100);
    assert!(p.status().version() > v);
    // Someone else's session in the record: that is a rival's version, refused.
    drop(p);
    store.close().unwrap();
    drop(store);
    let m = latest_manifest(&bucket(&remote)).await.unwrap().unwrap();
    let record = glimpse_remote::WriterRecord {
        url: bucket(&remote).url().to_string(),
        version: m.version - 1,
        session: "someone-else".into(),
        pending: Some(m.version),
    };
    std::fs::write(
        dir.join(glimpse_remote::WRITER_RECORD),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let err = open_writer(bucket(&remote), &dir, opts(), publisher_opts())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, RemoteError::Diverged(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_refuse_directories_that_are_not_theirs_and_restores_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("bucket");
    let (store, p) = open_writer(
        bucket(&remote),
        &tmp.path().join("w"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    bulk_load(&store, "images", 0..150);
    p.publish(&store, false).await.unwrap();
    // A writer's directory.
    let err = open_replica(
        bucket(&remote),
        &tmp.path().join("w"),
        opts(),
        Vec::new(),
        Duration::ZERO,
    )
    .err()
    .unwrap();
    assert!(matches!(err, RemoteError::Diverged(_)), "{err}");
    // A plain local store with collections of its own.
    {
        let local = Store::open(&tmp.path().join("local"), opts()).unwrap();
        bulk_load(&local, "mine", 0..10);
    }
    let err = open_replica(
        bucket(&remote),
        &tmp.path().join("local"),
        opts(),
        Vec::new(),
        Duration::ZERO,
    )
    .err()
    .unwrap();
    assert!(matches!(err, RemoteError::Diverged(_)), "{err}");
    let mine = Store::open(&tmp.path().join("local"), opts()).unwrap();
    assert_eq!(mine.collection("mine").unwrap().len(), 10, "left untouched");
    drop(mine);
    // A restore cut short (here: its follower's state, then no claim) resumes at the next start.
    {
        let (_r, mut f) = open_replica(
            bucket(&remote),
            &tmp.path().join("x"),
            opts(),
            Vec::new(),
            Duration::ZERO,
        )
        .unwrap();
        f.sync_once().await.unwrap();
    }
    let (restored, _p) = open_writer(
        bucket(&remote),
        &tmp.path().join("x"),
        opts(),
        publisher_opts(),
    )
    .await
    .unwrap();
    assert_eq!(restored.collection("images").unwrap().len(), 150);
    assert!(
        !tmp.path()
            .join("x")
            .join(glimpse_remote::APPLIED_RECORD)
            .exists()
    );
}
