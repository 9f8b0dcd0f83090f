//! Searching by recall target end to end: a bulk-loaded collection is indexed and calibrated
//! in the background, its description reports the recall table's choice, and a search over
//! HTTP or with `glimpse query` gets at least the recall it asked for (measured against the
//! exact answer, `recall_target` 1) on queries the calibration never saw.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use glimpse_e2e::TestServer;
use glimpse_index::synthetic::{SyntheticData, SyntheticSpec, generate};
use glimpse_server::cli::{QueryArgs, query};
use glimpse_server::ingest::read_query_results;
use glimpse_storage::{Metric, Point, Store, StoreOptions};
use serde_json::{Value, json};

const DIM: usize = 32;
const ROWS: usize = 24_000;
const QUERIES: usize = 60;

/// A data dir with one bulk-loaded, indexed (and so calibrated) collection `c` of the hard
/// mixture, whose ids are the row numbers.
fn indexed_data_dir(dir: &Path) -> SyntheticData {
    let data = generate(&SyntheticSpec::hard(ROWS, QUERIES, DIM, 11));
    load_indexed(dir, &data, DIM, StoreOptions::default());
    data
}

/// Bulk-loads `data` (rows of `dim`) into collection `c` of a data dir opened with `opts`, ids
/// the row numbers, and waits until it is indexed (and so calibrated).
fn load_indexed(dir: &Path, data: &SyntheticData, dim: usize, opts: StoreOptions) {
    let store = Store::open(dir, opts).unwrap();
    let c = store.create_collection("c", dim, Metric::Cosine).unwrap();
    let mut w = c.bulk_writer().unwrap();
    for (i, v) in data.vectors.chunks_exact(dim).enumerate() {
        w.push(Point {
            id: i.to_string(),
            vector: v.to_vec(),
            ..Point::default()
        })
        .unwrap();
    }
    w.commit().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while c.unindexed_rows() > 0 {
        assert!(Instant::now() < deadline, "the index was never built");
        std::thread::sleep(Duration::from_millis(50));
    }
    store.close().unwrap();
}

fn search(srv: &TestServer, body: Value) -> (reqwest::StatusCode, Value) {
    let r = reqwest::blocking::Client::new()
        .post(srv.at("/v1/collections/c/search"))
        .json(&body)
        .send()
        .unwrap();
    (r.status(), r.json().unwrap())
}

fn ids(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn recall_targets_are_honoured_over_http_and_by_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let data = indexed_data_dir(&dir);
    let srv = TestServer::start(&["--data-dir", dir.to_str().unwrap(), "--model", "none"]);

    // The description says what a default search does in each segment.
    let info: Value = reqwest::blocking::get(srv.at("/v1/collections/c"))
        .unwrap()
        .json()
        .unwrap();
    let recall = &info["recall"];
    assert_eq!(recall["target"], 0.95, "{info}");
    assert_eq!(recall["uncalibrated_segments"], 0, "{info}");
    assert!(
        recall["expected_recall"].as_f64().unwrap() >= 0.95,
        "{info}"
    );
    let seg = &recall["segments"][0];
    assert_eq!(seg["indexed"], true, "{info}");
    assert_eq!(seg["calibrated"], true, "{info}");
    assert!(seg["nprobe"].as_u64().unwrap() >= 1 && seg["refine"].as_u64().unwrap() >= 1);

    // Truth: recall_target 1 scans exactly.
    let truth: Vec<Vec<String>> = (0..QUERIES)
        .map(|i| {
            let (st, a) = search(
                &srv,
                json!({"vector": data.query(i), "k": 10, "recall_target": 1.0}),
            );
            assert_eq!(st, 200, "{a}");
            assert_eq!(a["recall"]["expected"], 1.0, "{a}");
            // An exact scan is reported as one.
            assert!(a["took_ms"]["exact_scan"].as_f64().unwrap() > 0.0, "{a}");
            ids(&a)
        })
        .collect();
    let measure = |target: f64| -> (f64, f64) {
        let mut hits = 0;
        let mut promised = f64::INFINITY;
        for (i, want) in truth.iter().enumerate() {
            let (st, a) = search(
                &srv,
                json!({"vector": data.query(i), "k": 10, "recall_target": target}),
            );
            assert_eq!(st, 200, "{a}");
            assert_eq!(
                a["recall"]["target"].as_f64().unwrap() as f32,
                target as f32
            );
            promised = promised.min(a["recall"]["expected"].as_f64().unwrap());
            hits += ids(&a).iter().filter(|id| want.contains(id)).count();
        }
        (hits as f64 / (10 * truth.len()) as f64, promised)
    };
    for target in [0.8, 0.95] {
        let (got, promised) = measure(target);
        assert!(
            promised >= target,
            "target {target}: the table promised {promised}"
        );
        // 60 queries: a few points of sampling noise on top of the calibration's own.
        assert!(
            got >= target - 0.03,
            "target {target}: measured recall {got}"
        );
    }
    // A low target is answered with cheaper parameters, promising less, than a high one.
    let (_, a5) = search(
        &srv,
        json!({"vector": data.query(0), "k": 10, "recall_target": 0.5}),
    );
    let (_, a99) = search(
        &srv,
        json!({"vector": data.query(0), "k": 10, "recall_target": 0.99}),
    );
    assert!(
        a5["recall"]["expected"].as_f64() < a99["recall"]["expected"].as_f64(),
        "{a5} {a99}"
    );

    // The table was measured at k = 10: a smaller k keeps the promise, a larger one has none.
    let (_, one) = search(&srv, json!({"vector": data.query(0), "k": 1}));
    assert!(one["recall"]["expected"].as_f64().unwrap() >= 0.95, "{one}");
    let (_, many) = search(&srv, json!({"vector": data.query(0), "k": 50}));
    assert_eq!(many["recall"]["expected"], Value::Null, "{many}");
    assert_eq!(many["results"].as_array().unwrap().len(), 50);

    // nprobe/refine by hand override the table and make no promise.
    let (st, a) = search(
        &srv,
        json!({"vector": data.query(0), "k": 10, "nprobe": 1, "refine": 1}),
    );
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["recall"]["by_hand"], true);
    assert_eq!(a["recall"]["expected"], Value::Null);

    // Out of range: a named 400.
    for bad in [
        json!(0),
        json!(-0.5),
        json!(1.01),
        json!("high"),
        json!(1e300),
        json!(1e-46),
    ] {
        let (st, a) = search(&srv, json!({"vector": data.query(0), "recall_target": bad}));
        assert_eq!(st, 400, "{bad}: {a}");
        assert!(a.to_string().contains("recall_target"), "{bad}: {a}");
    }
    srv.stop();

    // The CLI: --recall-target 1 is exact, 0.95 reaches its target.
    let qdir = tmp.path().join("q");
    std::fs::create_dir_all(&qdir).unwrap();
    let qfile = qdir.join("q.parquet");
    write_queries(&qfile, &data);
    let run = |target: f32, out: &str| {
        let out = tmp.path().join(out);
        run_query(&dir, &qfile, &out, target, Default::default())
    };
    let exact = run(1.0, "exact.parquet");
    for (r, want) in exact.iter().zip(&truth) {
        assert_eq!(&r.ids, want);
    }
    let approx = run(0.95, "approx.parquet");
    let hits: usize = approx
        .iter()
        .zip(&truth)
        .map(|(r, want)| r.ids.iter().filter(|id| want.contains(id)).count())
        .sum();
    let got = hits as f64 / (10 * truth.len()) as f64;
    assert!(
        got >= 0.92,
        "glimpse query --recall-target 0.95 measured {got}"
    );
}

/// `rescore` end to end: on a collection whose index has the compact tier, a server started
/// with `--rescore auto` ranks on the codes alone (no raw vector read) where the recall table
/// says they reach the target, and says so in the description and each answer; a request's
/// `rescore` overrides the server's; a bad value is a named 400; `glimpse query --rescore auto`
/// does the same.
#[test]
fn rescore_auto_reads_no_raw_vectors_where_the_codes_suffice() {
    const WIDE: usize = 384;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let data = generate(&SyntheticSpec::clip_like(6000, 20, WIDE, 5));
    let opts = StoreOptions {
        compact_rerank: glimpse_storage::CompactRerank::On,
        index_min_rows: 1500,
        ..StoreOptions::default()
    };
    load_indexed(&dir, &data, WIDE, opts);
    let srv = TestServer::start(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--model",
        "none",
        "--rescore",
        "auto",
    ]);
    let q = |i: usize| data.query(i).to_vec();
    // The lowest target at which the codes alone suffice.
    let target = [0.5, 0.7, 0.8, 0.85, 0.9, 0.95]
        .into_iter()
        .find(|&t| {
            let (st, a) = search(&srv, json!({"vector": q(0), "recall_target": t}));
            assert_eq!(st, 200, "{a}");
            a["recall"]["raw_rows_read"] == 0
        })
        .expect("the codes alone reach some target on clustered data");
    for i in 0..data.n_queries() {
        let (_, auto) = search(&srv, json!({"vector": q(i), "recall_target": target}));
        assert_eq!(auto["recall"]["rescore"], "auto", "{auto}");
        assert_eq!(auto["recall"]["raw_rows_read"], 0, "{auto}");
        assert!(
            auto["recall"]["expected"].as_f64().unwrap() >= target,
            "{auto}"
        );
        let (_, exact) = search(
            &srv,
            json!({"vector": q(i), "recall_target": target, "rescore": "always"}),
        );
        assert_eq!(exact["recall"]["rescore"], "always", "{exact}");
        assert!(
            exact["recall"]["raw_rows_read"].as_u64().unwrap() > 0,
            "{exact}"
        );
        assert_eq!(ids(&auto).len(), 10);
    }
    // The table was measured at k = 10: another k re-ranks exactly, promising the usual recall.
    let (_, one) = search(
        &srv,
        json!({"vector": q(0), "k": 1, "recall_target": target}),
    );
    assert!(
        one["recall"]["raw_rows_read"].as_u64().unwrap() > 0,
        "{one}"
    );
    for bad in [json!("sometimes"), json!(1), json!("")] {
        let (st, a) = search(&srv, json!({"vector": q(0), "rescore": bad}));
        assert_eq!(st, 400, "{bad}: {a}");
        assert!(a.to_string().contains("rescore"), "{bad}: {a}");
    }
    // The description reports the server's default, segment by segment.
    let info: Value = reqwest::blocking::get(srv.at("/v1/collections/c"))
        .unwrap()
        .json()
        .unwrap();
    let seg = &info["recall"]["segments"][0];
    assert_eq!(seg["indexed"], true, "{info}");
    assert!(seg["codes_only"].is_boolean(), "{info}");
    srv.stop();

    let qdir = tmp.path().join("q");
    std::fs::create_dir_all(&qdir).unwrap();
    let qfile = qdir.join("q.parquet");
    write_queries_of(&qfile, &data, WIDE);
    let run = |rescore: glimpse_storage::Rescore| {
        let out = tmp.path().join(format!("{}.parquet", rescore.as_str()));
        run_query(&dir, &qfile, &out, target as f32, rescore)
    };
    let (auto, always) = (
        run(glimpse_storage::Rescore::Auto),
        run(glimpse_storage::Rescore::Always),
    );
    // Codes-only scores are estimates: they differ from the exact ones, by little.
    let mut differ = 0;
    for (a, b) in auto.iter().zip(&always) {
        for (id, s) in a.ids.iter().zip(&a.scores) {
            if let Some(j) = b.ids.iter().position(|x| x == id) {
                assert!((s - b.scores[j]).abs() < 0.02, "{s} vs {}", b.scores[j]);
                differ += usize::from(*s != b.scores[j]);
            }
        }
    }
    assert!(
        differ > 0,
        "glimpse query --rescore auto returned the exact scores"
    );
}

/// `glimpse query` of collection `c` in `dir` for the queries in `qfile` at `target`, written
/// to and read back from `out`.
fn run_query(
    dir: &Path,
    qfile: &Path,
    out: &Path,
    target: f32,
    rescore: glimpse_storage::Rescore,
) -> Vec<glimpse_server::ingest::QueryResult> {
    query(QueryArgs {
        data_dir: Some(dir.to_path_buf()),
        remote: None,
        collection: "c".into(),
        vectors: qfile.to_path_buf(),
        k: 10,
        recall_target: target,
        nprobe: None,
        refine: None,
        out: out.to_path_buf(),
        exact_scan: false,
        rescore,
    })
    .unwrap();
    read_query_results(out).unwrap()
}

/// The queries as a shard of `embedding` rows (what `glimpse query` reads), in order.
fn write_queries(path: &Path, data: &SyntheticData) {
    write_queries_of(path, data, DIM);
}

/// [`write_queries`] for queries of `dim` dimensions.
fn write_queries_of(path: &Path, data: &SyntheticData, dim: usize) {
    use glimpse_server::ingest::{ShardRecord, ShardWriterOptions, write_partition_atomic};
    let records: Vec<ShardRecord> = (0..data.n_queries())
        .map(|i| ShardRecord {
            id: i as i64,
            image_path: None,
            vector: data.query(i).to_vec(),
            extra: Default::default(),
        })
        .collect();
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    write_partition_atomic(dir, name, &records, ShardWriterOptions::new("q", dim)).unwrap();
}
