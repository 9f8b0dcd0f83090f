//! The server as a real process: SIGTERM finishes gracefully, SIGKILL after
//! an acknowledged write loses nothing.

#![allow(clippy::unwrap_used)]

use glimpse_e2e::{ChildServer, maybe_run_child, unit_vector};
use reqwest::blocking::Client;
use serde_json::{Value, json};

#[test]
fn sigterm_and_sigkill_keep_acknowledged_writes() {
    maybe_run_child();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = ["--data-dir", data.to_str().unwrap(), "--model", "none"];
    let c = Client::new();
    let dim = 8;

    let srv = ChildServer::spawn("sigterm_and_sigkill_keep_acknowledged_writes", &flags);
    let r = c
        .post(format!("{}/v1/collections", srv.url))
        .json(&json!({"name": "p", "dim": dim}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    for i in 0..20u64 {
        let r = c
            .post(format!("{}/v1/collections/p/points", srv.url))
            .json(&json!({"points": [{"id": i, "vector": unit_vector(i, dim)}]}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    srv.signal(libc::SIGTERM);
    assert!(srv.wait().success(), "graceful shutdown exits 0");

    let srv = ChildServer::spawn("sigterm_and_sigkill_keep_acknowledged_writes", &flags);
    for i in 20..40u64 {
        let r = c
            .post(format!("{}/v1/collections/p/points", srv.url))
            .json(&json!({"points": [{"id": i, "vector": unit_vector(i, dim)}]}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    srv.signal(libc::SIGKILL);
    srv.wait();

    let srv = ChildServer::spawn("sigterm_and_sigkill_keep_acknowledged_writes", &flags);
    let v: Value = c
        .get(format!("{}/v1/collections/p", srv.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["count"], 40, "{v}");
    for i in [0u64, 19, 20, 39] {
        let v: Value = c
            .get(format!("{}/v1/collections/p/points/{i}", srv.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let got: Vec<f32> = serde_json::from_value(v["vector"].clone()).unwrap();
        assert_eq!(got, unit_vector(i, dim));
    }
    srv.signal(libc::SIGTERM);
    assert!(srv.wait().success());
}

/// A bulk load answers once its data is durable, before its ANN index is
/// built: SIGKILL right after the answer loses nothing, and the restarted
/// server searches the segment exactly, then builds the index itself.
#[test]
fn sigkill_before_the_deferred_index_build_loses_nothing() {
    maybe_run_child();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let import = tmp.path().join("import");
    std::fs::create_dir_all(&import).unwrap();
    let dim = 8;
    // Enough rows for an index (StoreOptions::index_min_rows is 20 000).
    let n = 20_000i64;
    glimpse_e2e::write_shard(&import, "big.parquet", 0..n, dim);
    let flags = [
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        "none",
        "--import-root",
        import.to_str().unwrap(),
    ];
    let name = "sigkill_before_the_deferred_index_build_loses_nothing";
    let c = Client::new();
    let get = |url: &str| -> Value { c.get(url).send().unwrap().json().unwrap() };
    let first_hit = |url: &str, i: u64| -> String {
        let v: Value = c
            .post(format!("{url}/v1/collections/big/search"))
            .json(&json!({"vector": unit_vector(i, dim), "k": 3, "nprobe": 64, "refine": 300}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["results"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // Which stages a search ran, as its answer reports them.
    let took = |url: &str| -> Value {
        let v: Value = c
            .post(format!("{url}/v1/collections/big/search"))
            .json(&json!({"vector": unit_vector(7, dim), "k": 3}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["took_ms"].clone()
    };
    let srv = ChildServer::spawn(name, &flags);
    let v: Value = c
        .post(format!("{}/v1/collections/big/bulk-load", srv.url))
        .json(&json!({"paths": ["big.parquet"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["rows"], n, "{v}");
    // The index waits for a quiet second after the load: not built yet.
    assert_eq!(v["unindexed_rows"], n, "{v}");
    assert_eq!(first_hit(&srv.url, 4321), "4321");
    // Searched exactly until the index is built (a quiet second from now).
    let t = took(&srv.url);
    assert!(t["exact_scan"].as_f64().unwrap() > 0.0, "{t}");
    assert_eq!(t["ann_scan"].as_f64(), Some(0.0), "{t}");
    let metrics = c
        .get(format!("{}/metrics", srv.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("glimpse_search_stage_seconds_count{stage=\"exact_scan\"}"),
        "{metrics}"
    );
    srv.signal(libc::SIGKILL);
    srv.wait();

    let srv = ChildServer::spawn(name, &flags);
    let url = srv.url.clone();
    let v = get(&format!("{url}/v1/collections/big"));
    assert_eq!(v["count"], n, "{v}");
    assert_eq!(first_hit(&url, 123), "123");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let v = get(&format!("{url}/v1/collections/big"));
        if v["unindexed_rows"] == 0 {
            assert_eq!(v["indexed_segments"], 1, "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "index never built: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(first_hit(&url, 123), "123");
    assert_eq!(first_hit(&url, 19_999), "19999");
    let t = took(&url);
    assert!(t["ann_scan"].as_f64().unwrap() > 0.0, "{t}");
    assert!(t["rerank"].as_f64().unwrap() > 0.0, "{t}");
    assert_eq!(t["exact_scan"].as_f64(), Some(0.0), "{t}");
    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("glimpse_collection_unindexed_rows{collection=\"big\"} 0"),
        "{metrics}"
    );
    for stage in ["ann_scan", "rerank"] {
        assert!(
            metrics.contains(&format!(
                "glimpse_search_stage_seconds_count{{stage=\"{stage}\"}}"
            )),
            "no {stage} stage in {metrics}"
        );
    }
    srv.signal(libc::SIGTERM);
    assert!(srv.wait().success());
}
