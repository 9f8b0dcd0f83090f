//! The client subcommands against a real server and data dir: `glimpse
//! load` uploads every shard, `glimpse query` answers a Parquet of queries
//! offline, in input order.

#![allow(clippy::unwrap_used)]

use glimpse_e2e::{TestServer, write_shard};
use glimpse_server::cli::{LoadArgs, QueryArgs, load, query};
use glimpse_server::ingest::read_query_results;

#[test]
fn load_then_offline_query() {
    let tmp = tempfile::tempdir().unwrap();
    let dim = 16;
    let shards = tmp.path().join("shards");
    write_shard(
        &shards.join("e_0_40.parquet_part_0"),
        "data.parquet",
        0..40,
        dim,
    );
    write_shard(&shards, "e_40_90.parquet_part_0.parquet", 40..90, dim);
    let data = tmp.path().join("data");
    let srv = TestServer::start(&["--data-dir", data.to_str().unwrap(), "--model", "none"]);
    load(LoadArgs {
        url: srv.url.clone(),
        collection: "pics".into(),
        api_key: None,
        paths: vec![shards.clone()],
    })
    .unwrap();
    // Loading again is idempotent.
    load(LoadArgs {
        url: srv.url.clone(),
        collection: "pics".into(),
        api_key: None,
        paths: vec![shards],
    })
    .unwrap();
    let v: serde_json::Value = reqwest::blocking::get(srv.at("/v1/collections/pics"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["count"], 90, "{v}");
    srv.stop();

    // Queries are the stored vectors of ids 70..75: each finds itself first, in input order.
    let queries = tmp.path().join("q");
    let qfile = write_shard(&queries, "q.parquet", 70..75, dim);
    let out = tmp.path().join("results.parquet");
    query(QueryArgs {
        data_dir: Some(data.clone()),
        remote: None,
        collection: "pics".into(),
        vectors: qfile,
        k: 3,
        recall_target: glimpse_storage::DEFAULT_RECALL_TARGET,
        nprobe: None,
        refine: None,
        out: out.clone(),
        exact_scan: false,
        rescore: Default::default(),
    })
    .unwrap();
    let results = read_query_results(&out).unwrap();
    assert_eq!(results.len(), 5);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.query, i as i64);
        assert_eq!(r.ids.len(), 3);
        assert_eq!(r.ids[0], (70 + i).to_string());
        assert!((r.scores[0] - 1.0).abs() < 1e-4);
        assert!(r.scores.windows(2).all(|w| w[0] >= w[1]));
    }

    // The same data dir moved to a bucket (a writer started with --remote on it publishes
    // what it has), then queried straight from the bucket through a cache of its own.
    let bucket_dir = tmp.path().join("bucket");
    let url = format!("file://{}", bucket_dir.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bucket = glimpse_remote::Bucket::open(&url).unwrap();
        let (store, publisher) = glimpse_remote::open_writer(
            bucket,
            &data,
            glimpse_storage::StoreOptions::default(),
            glimpse_remote::PublisherOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(publisher.status().version(), 1);
        store.close().unwrap();
    });
    let remote_out = tmp.path().join("remote-results.parquet");
    query(QueryArgs {
        data_dir: Some(tmp.path().join("cache")),
        remote: Some(url),
        collection: "pics".into(),
        vectors: queries.join("q.parquet"),
        k: 3,
        recall_target: glimpse_storage::DEFAULT_RECALL_TARGET,
        nprobe: None,
        refine: None,
        out: remote_out.clone(),
        exact_scan: false,
        rescore: Default::default(),
    })
    .unwrap();
    let from_bucket = read_query_results(&remote_out).unwrap();
    assert_eq!(from_bucket.len(), results.len());
    for (a, b) in from_bucket.iter().zip(&results) {
        assert_eq!((&a.ids, &a.scores), (&b.ids, &b.scores));
    }
}

/// `glimpse query` on a data dir whose bulk-loaded segment still waits for its index builds
/// that index first (rather than scanning it exactly without a word): afterwards the segment is
/// indexed on disk.
#[test]
fn offline_query_builds_pending_indexes_first() {
    use glimpse_storage::{Metric, Point, Store, StoreOptions};
    use std::time::Duration;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dim = 16;
    let rows = 20_000;
    {
        // A bulk load whose index build is held back (as while more shards keep coming).
        let opts = StoreOptions {
            bulk_quiet: Duration::from_secs(3600),
            bulk_quiet_max: Duration::from_secs(3600),
            ..StoreOptions::default()
        };
        assert!(
            rows >= opts.index_min_rows,
            "the segment must be big enough to index"
        );
        let store = Store::open(&data, opts).unwrap();
        let c = store.create_collection("big", dim, Metric::Cosine).unwrap();
        let mut w = c.bulk_writer().unwrap();
        for i in 0..rows {
            w.push(Point {
                id: i.to_string(),
                vector: glimpse_e2e::unit_vector(i as u64, dim),
                ..Point::default()
            })
            .unwrap();
        }
        w.commit().unwrap();
        assert_eq!(c.unindexed_rows(), rows as u64);
        store.close().unwrap();
    }
    let queries = tmp.path().join("q");
    let qfile = write_shard(&queries, "q.parquet", 10..13, dim);
    let out = tmp.path().join("results.parquet");
    query(QueryArgs {
        data_dir: Some(data.clone()),
        remote: None,
        collection: "big".into(),
        vectors: qfile,
        k: 5,
        recall_target: glimpse_storage::DEFAULT_RECALL_TARGET,
        nprobe: None,
        refine: None,
        out: out.clone(),
        exact_scan: false,
        rescore: Default::default(),
    })
    .unwrap();
    assert_eq!(read_query_results(&out).unwrap().len(), 3);
    let store = Store::open(&data, StoreOptions::default()).unwrap();
    let c = store.collection("big").unwrap();
    assert_eq!(
        c.unindexed_rows(),
        0,
        "the query run built the pending index"
    );
    assert_eq!(c.stats().indexed_segments, 1);
}
