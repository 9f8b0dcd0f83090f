//! Object storage as the source of truth, against a real S3 API (moto's
//! server on loopback) with real processes: a writer and two replicas, a
//! search loop through loads and a writer SIGKILL, a restore on an empty
//! directory, two writers racing on one prefix, a bucket that goes away and
//! comes back. Skipped when moto is not installed, unless
//! `GLIMPSE_REQUIRE_MOTO=1` (CI).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glimpse_e2e::s3::{Moto, Proxy};
use glimpse_e2e::{ChildServer, maybe_run_child, unit_vector, write_shard};
use reqwest::blocking::Client;
use serde_json::{Value, json};

const DIM: usize = 16;

fn spawn(test: &str, data: &Path, extra: &[&str], endpoint: &str, import: &Path) -> ChildServer {
    let mut flags = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        "none",
        "--import-root",
        import.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    let env = Moto::env(endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ChildServer::spawn_with_env(test, &flags, &env)
}

fn get(c: &Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn wait_ready(c: &Client, srv: &ChildServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, v) = get(c, &format!("{}/readyz", srv.url));
        if st == 200 {
            return v;
        }
        assert!(Instant::now() < deadline, "never ready: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bulk_load(c: &Client, srv: &ChildServer, file: &str) -> (u16, Value) {
    let r = c
        .post(format!("{}/v1/collections/imgs/bulk-load", srv.url))
        .json(&json!({"paths": [file]}))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn search(c: &Client, url: &str, q: u64) -> (u16, Value) {
    let r = c
        .post(format!("{url}/v1/collections/imgs/search"))
        .json(&json!({"vector": unit_vector(q, DIM), "k": 10}))
        .send();
    match r {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn hits(v: &Value) -> Vec<(String, f64)> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the collection at `url` reports `version` >= `min` and `count`; returns how long.
fn wait_for_version(c: &Client, url: &str, min: u64, count: u64) -> Duration {
    let started = Instant::now();
    loop {
        let (st, v) = get(c, &format!("{url}/v1/collections/imgs"));
        if st == 200 && v["version"].as_u64().unwrap_or(0) >= min && v["count"] == count {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replica stuck at {v} (want version {min}, count {count})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn replicas_follow_a_writer_through_loads_a_sigkill_and_a_restore() {
    maybe_run_child();
    let Some(moto) = Moto::start("glimpse-e2e") else {
        eprintln!("moto_server not installed: skipped");
        return;
    };
    let test = "replicas_follow_a_writer_through_loads_a_sigkill_and_a_restore";
    let tmp = tempfile::tempdir().unwrap();
    let import = tmp.path().join("import");
    let remote = format!("s3://{}/db", moto.bucket);
    let c = Client::new();
    write_shard(&import, "first.parquet", 0..2000, DIM);
    for i in 0..11 {
        let from = 10_000 + i * 200;
        write_shard(&import, &format!("more-{i}.parquet"), from..from + 200, DIM);
    }
    let writer_flags = ["--remote", remote.as_str(), "--remote-flush-secs", "1"];
    let writer = spawn(
        test,
        &tmp.path().join("w"),
        &writer_flags,
        &moto.endpoint,
        &import,
    );
    let ready = wait_ready(&c, &writer);
    assert_eq!(ready["remote"]["role"], "writer", "{ready}");
    let replica_flags = [
        "--remote",
        remote.as_str(),
        "--replica",
        "--sync-secs",
        "0.5",
    ];
    let r1 = spawn(
        test,
        &tmp.path().join("r1"),
        &replica_flags,
        &moto.endpoint,
        &import,
    );
    let r2 = spawn(
        test,
        &tmp.path().join("r2"),
        &replica_flags,
        &moto.endpoint,
        &import,
    );
    for r in [&r1, &r2] {
        let v = wait_ready(&c, r);
        assert_eq!(v["remote"]["role"], "replica", "{v}");
    }

    // A bulk load answers once it is in the bucket, and reaches both replicas within
    // --sync-secs plus the transfer.
    let (st, v) = bulk_load(&c, &writer, "first.parquet");
    assert_eq!(st, 200, "{v}");
    let version = v["remote_version"].as_u64().unwrap();
    for r in [&r1, &r2] {
        let took = wait_for_version(&c, &r.url, version, 2000);
        assert!(took < Duration::from_secs(10), "visible after {took:?}");
    }
    for q in [0u64, 7, 1999, 50_000] {
        let (_, w) = search(&c, &writer.url, q);
        for r in [&r1, &r2] {
            let (st, v) = search(&c, &r.url, q);
            assert_eq!(st, 200);
            assert_eq!(hits(&v), hits(&w), "query {q}");
        }
    }
    // Replicas take no writes, in the JSON shape every error has.
    let r = c
        .post(format!("{}/v1/collections/imgs/points", r1.url))
        .json(&json!({"points": [{"id": "x", "vector": unit_vector(1, DIM)}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "read_only_replica", "{v}");
    let metrics = c
        .get(format!("{}/metrics", r1.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("glimpse_remote{field=\"replica\"} 1"),
        "{metrics}"
    );

    // The Chroma namespace travels too: a collection made and filled through Chroma's API on
    // the writer is counted through Chroma's API on a replica (point writes reach the bucket
    // within --remote-flush-secs).
    let base = "/api/v2/tenants/default_tenant/databases/default_database/collections";
    let created: Value = c
        .post(format!("{}{base}", writer.url))
        .json(&json!({"name": "notes"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let r = c
        .post(format!("{}{base}/{id}/add", writer.url))
        .json(
            &json!({"ids": ["n1", "n2"], "embeddings": [unit_vector(1, DIM), unit_vector(2, DIM)]}),
        )
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, v) = get(&c, &format!("{}{base}/{id}/count", r2.url));
        if st == 200 && v == json!(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never counted the Chroma records: {st} {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A search loop on a replica while ten loads land and the writer is killed mid-load.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let looper = {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        let url = r1.url.clone();
        std::thread::spawn(move || {
            let c = Client::new();
            let mut q = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (st, v) = search(&c, &url, q % 3000);
                if st != 200 || v["results"].as_array().is_none_or(|a| a.len() != 10) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed search: {st} {v}");
                }
                done.fetch_add(1, Ordering::Relaxed);
                q += 1;
            }
        })
    };
    let mut acknowledged = 2000u64;
    for i in 0..10 {
        let (st, v) = bulk_load(&c, &writer, &format!("more-{i}.parquet"));
        assert_eq!(st, 200, "{v}");
        acknowledged += 200;
    }
    // The eleventh load is cut short by SIGKILL, somewhere in its commit or upload.
    let url = writer.url.clone();
    let last = std::thread::spawn(move || {
        Client::new()
            .post(format!("{url}/v1/collections/imgs/bulk-load"))
            .json(&json!({"paths": ["more-10.parquet"]}))
            .send()
            .ok()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(30));
    writer.signal(libc::SIGKILL);
    writer.wait();
    let last_ok = last.join().unwrap() == Some(200);
    if last_ok {
        acknowledged += 200;
    }
    // The replicas catch up with everything acknowledged, and keep answering throughout.
    let bucket_url = format!("{}/db", moto.bucket);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env: Vec<(String, String)> = Moto::env(&moto.endpoint)
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bucket = glimpse_remote::Bucket::open_with(&format!("s3://{bucket_url}"), &env).unwrap();
    let latest = rt
        .block_on(glimpse_remote::latest_version(&bucket))
        .unwrap()
        .unwrap();
    let missing = rt
        .block_on(glimpse_remote::missing_objects(&bucket, latest))
        .unwrap();
    assert!(
        missing.is_empty(),
        "manifest {latest} names missing objects: {missing:?}"
    );
    let in_bucket: u64 = rt
        .block_on(glimpse_remote::read_manifest(&bucket, latest))
        .unwrap()
        .collections["imgs"]
        .manifest
        .segments
        .iter()
        .map(|s| u64::from(s.rows))
        .sum();
    assert!(
        in_bucket >= acknowledged,
        "{in_bucket} rows in the bucket, {acknowledged} acknowledged"
    );
    wait_for_version(&c, &r1.url, latest, in_bucket);
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "searches failed during syncs"
    );
    assert!(done.load(Ordering::Relaxed) > 20, "the loop ran");

    // A new writer on an empty directory restores every bulk-loaded row and writes on.
    let writer = spawn(
        test,
        &tmp.path().join("w-new"),
        &writer_flags,
        &moto.endpoint,
        &import,
    );
    wait_ready(&c, &writer);
    let (_, v) = get(&c, &format!("{}/v1/collections/imgs", writer.url));
    assert_eq!(v["count"], in_bucket, "{v}");
    for id in [0u64, 1999, 10_000, 11_999] {
        let (st, p) = get(
            &c,
            &format!("{}/v1/collections/imgs/points/{id}", writer.url),
        );
        assert_eq!(st, 200, "{id}: {p}");
    }
    let (st, v) = bulk_load(&c, &writer, "more-10.parquet");
    assert_eq!(st, 200, "{v}");
    wait_for_version(&c, &r2.url, v["remote_version"].as_u64().unwrap(), 4200);
    writer.signal(libc::SIGTERM);
    assert!(writer.wait().success());
    for r in [r1, r2] {
        r.signal(libc::SIGTERM);
        assert!(r.wait().success());
    }
}

#[test]
fn sigterm_publishes_point_writes_before_the_writer_exits() {
    maybe_run_child();
    let Some(moto) = Moto::start("glimpse-sigterm") else {
        eprintln!("moto_server not installed: skipped");
        return;
    };
    let test = "sigterm_publishes_point_writes_before_the_writer_exits";
    let tmp = tempfile::tempdir().unwrap();
    let import = tmp.path().join("import");
    std::fs::create_dir_all(&import).unwrap();
    let remote = format!("s3://{}/db", moto.bucket);
    let c = Client::new();
    // The flush bound is far away: only the shutdown can have published these writes.
    let writer = spawn(
        test,
        &tmp.path().join("w"),
        &["--remote", remote.as_str(), "--remote-flush-secs", "3600"],
        &moto.endpoint,
        &import,
    );
    wait_ready(&c, &writer);
    let r = c
        .post(format!("{}/v1/collections", writer.url))
        .json(&json!({"name": "imgs", "dim": DIM}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let points: Vec<Value> = (0..5u64)
        .map(|i| json!({"id": i, "vector": unit_vector(i, DIM)}))
        .collect();
    let r = c
        .post(format!("{}/v1/collections/imgs/points", writer.url))
        .json(&json!({ "points": points }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    writer.signal(libc::SIGTERM);
    assert!(writer.wait().success());
    let replica = spawn(
        test,
        &tmp.path().join("r"),
        &["--remote", remote.as_str(), "--replica"],
        &moto.endpoint,
        &import,
    );
    wait_ready(&c, &replica);
    let (_, v) = get(&c, &format!("{}/v1/collections/imgs", replica.url));
    assert_eq!(v["count"], 5, "{v}");
    replica.signal(libc::SIGKILL);
    replica.wait();
}

#[test]
fn of_two_writers_on_one_prefix_exactly_one_keeps_writing() {
    maybe_run_child();
    let Some(moto) = Moto::start("glimpse-fence") else {
        eprintln!("moto_server not installed: skipped");
        return;
    };
    let test = "of_two_writers_on_one_prefix_exactly_one_keeps_writing";
    let tmp = tempfile::tempdir().unwrap();
    let import = tmp.path().join("import");
    write_shard(&import, "a.parquet", 0..100, DIM);
    write_shard(&import, "b.parquet", 100..200, DIM);
    let remote = format!("s3://{}/db", moto.bucket);
    let flags = ["--remote", remote.as_str()];
    let c = Client::new();
    let first = spawn(test, &tmp.path().join("1"), &flags, &moto.endpoint, &import);
    wait_ready(&c, &first);
    assert_eq!(bulk_load(&c, &first, "a.parquet").0, 200);
    // The second takes over the prefix (a replacement machine started on an empty disk).
    let second = spawn(test, &tmp.path().join("2"), &flags, &moto.endpoint, &import);
    wait_ready(&c, &second);
    let (st, v) = bulk_load(&c, &first, "b.parquet");
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "fenced", "{v}");
    let (st, v) = get(&c, &format!("{}/readyz", first.url));
    assert_eq!((st, v["status"].as_str()), (503, Some("fenced")), "{v}");
    let metrics = c
        .get(format!("{}/metrics", first.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("glimpse_remote{field=\"fenced\"} 1"));
    let r = c
        .post(format!("{}/v1/collections/imgs/points", first.url))
        .json(&json!({"points": [{"id": "x", "vector": unit_vector(1, DIM)}]}))
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        503,
        "a fenced writer acknowledges no more writes"
    );
    let (st, v) = bulk_load(&c, &second, "b.parquet");
    assert_eq!(st, 200, "{v}");
    let (_, v) = get(&c, &format!("{}/v1/collections/imgs", second.url));
    assert_eq!(v["count"], 200, "{v}");
    for s in [first, second] {
        s.signal(libc::SIGKILL);
        s.wait();
    }
}

#[test]
fn an_unreachable_bucket_fails_writes_with_503_and_replicas_serve_then_catch_up() {
    maybe_run_child();
    let Some(moto) = Moto::start("glimpse-outage") else {
        eprintln!("moto_server not installed: skipped");
        return;
    };
    let test = "an_unreachable_bucket_fails_writes_with_503_and_replicas_serve_then_catch_up";
    let proxy = Proxy::start(moto.endpoint.trim_start_matches("http://"));
    let tmp = tempfile::tempdir().unwrap();
    let import = tmp.path().join("import");
    write_shard(&import, "a.parquet", 0..300, DIM);
    write_shard(&import, "b.parquet", 300..600, DIM);
    let remote = format!("s3://{}/db", moto.bucket);
    let c = Client::new();
    let writer = spawn(
        test,
        &tmp.path().join("w"),
        &["--remote", remote.as_str(), "--remote-flush-secs", "1"],
        &proxy.endpoint,
        &import,
    );
    wait_ready(&c, &writer);
    let replica = spawn(
        test,
        &tmp.path().join("r"),
        &[
            "--remote",
            remote.as_str(),
            "--replica",
            "--sync-secs",
            "0.3",
        ],
        &proxy.endpoint,
        &import,
    );
    wait_ready(&c, &replica);
    let (st, v) = bulk_load(&c, &writer, "a.parquet");
    assert_eq!(st, 200, "{v}");
    wait_for_version(&c, &replica.url, v["remote_version"].as_u64().unwrap(), 300);

    proxy.down();
    let started = Instant::now();
    let (st, v) = bulk_load(&c, &writer, "b.parquet");
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "remote_unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("durable on this server's disk")
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let r = c
        .post(format!("{}/v1/collections/imgs/points", writer.url))
        .json(&json!({"points": [{"id": "x", "vector": unit_vector(1, DIM)}]}))
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        503,
        "point writes are refused while the bucket is away"
    );
    // The replica keeps serving what it has and says what is wrong, once its next sync has
    // failed (polled: on a loaded machine that sync can come later than one interval).
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (st, v) = get(&c, &format!("{}/readyz", replica.url));
        assert_eq!(st, 200, "{v}");
        if v["remote"]["error"].is_string() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(v["remote"]["error"].is_string(), "{v}");
    let (st, v) = search(&c, &replica.url, 3);
    assert_eq!(st, 200, "{v}");

    // Back: the writer publishes the load it committed meanwhile, the replica catches up.
    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = get(&c, &format!("{}/v1/collections/imgs", replica.url));
        if v["count"] == 600 {
            break;
        }
        assert!(Instant::now() < deadline, "replica did not catch up: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c
        .post(format!("{}/v1/collections/imgs/points", writer.url))
        .json(&json!({"points": [{"id": "x", "vector": unit_vector(1, DIM)}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "writes are taken again");
    for s in [writer, replica] {
        s.signal(libc::SIGKILL);
        s.wait();
    }
}
