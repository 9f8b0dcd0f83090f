//! Hostile input against a real server (`--model none`, 127.0.0.1:0): every row of the
//! hardening issue that an HTTP client can send, each answered with a clear 4xx or 503 and
//! nothing stored changed.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use glimpse_e2e::{TestServer, unit_vector, write_shard};
use reqwest::blocking::Client;
use serde_json::{Value, json};

const DIM: usize = 16;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["import", "images", "outside"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Env { _tmp: tmp, root }
    }

    fn import(&self) -> PathBuf {
        self.root.join("import")
    }

    fn start(&self, extra: &[&str]) -> TestServer {
        let data = self.root.join("data");
        let import = self.import();
        let images = self.root.join("images");
        let mut flags = vec![
            "--data-dir",
            data.to_str().unwrap(),
            "--model",
            "none",
            "--import-root",
            import.to_str().unwrap(),
            "--images-dir",
            images.to_str().unwrap(),
        ];
        flags.extend_from_slice(extra);
        TestServer::start(&flags)
    }
}

fn answer(r: reqwest::blocking::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn post_json(c: &Client, url: &str, body: &Value) -> (u16, Value) {
    answer(c.post(url).json(body).send().unwrap())
}

fn assert_error(resp: &(u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
}

fn collection_exists(c: &Client, srv: &TestServer, name: &str) -> bool {
    let st = c
        .get(srv.at(&format!("/v1/collections/{name}")))
        .send()
        .unwrap()
        .status()
        .as_u16();
    st == 200
}

/// Row 3: a JSON body on the (otherwise unlimited) bulk-load route is held to --max-json-bytes.
#[test]
fn a_json_body_on_the_upload_route_is_held_to_the_json_limit() {
    let env = Env::new();
    let srv = env.start(&["--max-json-bytes", "4096"]);
    let c = client();
    let big = json!({"paths": vec!["x".repeat(100); 100]});
    let r = post_json(&c, &srv.at("/v1/collections/big/bulk-load"), &big);
    assert_error(&r, 413, "payload_too_large");
    assert!(!collection_exists(&c, &srv, "big"));
    // Under the limit, the same route still works.
    write_shard(&env.import(), "a.parquet", 0..10, DIM);
    let r = post_json(
        &c,
        &srv.at("/v1/collections/big/bulk-load"),
        &json!({"paths": ["a.parquet"]}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
}

/// Row 4: a symlink inside the import root that leads outside it is refused, even when it is
/// found by walking a folder; row 10: the failed load leaves no collection behind.
#[test]
fn a_symlink_found_in_a_walk_cannot_leave_the_import_root() {
    let env = Env::new();
    let outside = write_shard(&env.root.join("outside"), "secret.parquet", 0..20, DIM);
    let shards = env.import().join("shards");
    write_shard(&shards, "good.parquet", 100..110, DIM);
    std::os::unix::fs::symlink(&outside, shards.join("evil.parquet")).unwrap();
    let srv = env.start(&[]);
    let c = client();
    let r = post_json(
        &c,
        &srv.at("/v1/collections/walk/bulk-load"),
        &json!({"paths": ["shards"]}),
    );
    assert_error(&r, 403, "outside_import_root");
    let message = r.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("shards/evil.parquet"), "{message}");
    assert!(
        !message.contains(env.root.to_str().unwrap()),
        "server paths leak: {message}"
    );
    assert!(!collection_exists(&c, &srv, "walk"));
}

/// Row 5: read or write is decided from the matched route, not a path ending in `/search`.
#[test]
fn a_collection_or_point_named_search_is_still_protected_by_the_key() {
    let env = Env::new();
    let srv = env.start(&["--api-key", "sekret"]);
    let c = client();
    let auth = |r: reqwest::blocking::RequestBuilder| r.bearer_auth("sekret");
    for name in ["search", "images"] {
        let r = answer(
            auth(c.post(srv.at("/v1/collections")))
                .json(&json!({"name": name, "dim": DIM}))
                .send()
                .unwrap(),
        );
        assert!(r.0 == 200 || r.0 == 201, "{}", r.1);
    }
    let r = answer(
        auth(c.post(srv.at("/v1/collections/images/points")))
            .json(&json!({"points": [{"id": "search", "vector": unit_vector(1, DIM)}]}))
            .send()
            .unwrap(),
    );
    assert_eq!(r.0, 200, "{}", r.1);

    let r = answer(c.delete(srv.at("/v1/collections/search")).send().unwrap());
    assert_error(&r, 401, "unauthorized");
    let r = answer(
        c.delete(srv.at("/v1/collections/images/points/search"))
            .send()
            .unwrap(),
    );
    assert_error(&r, 401, "unauthorized");
    assert!(collection_exists(&c, &srv, "search"));
    let r = answer(
        c.get(srv.at("/v1/collections/images/points/search"))
            .send()
            .unwrap(),
    );
    assert_eq!(r.0, 200, "the point is still there: {}", r.1);
    // A real search is a read: no key needed.
    let r = post_json(
        &c,
        &srv.at("/v1/collections/images/search"),
        &json!({"vector": unit_vector(1, DIM), "k": 1}),
    );
    assert_eq!(r.0, 200, "{}", r.1);
}

/// Row 6: made-up HTTP methods fold into one metrics label.
#[test]
fn made_up_methods_do_not_grow_the_metrics() {
    let env = Env::new();
    let srv = env.start(&[]);
    let c = client();
    let size = |c: &Client| c.get(srv.at("/metrics")).send().unwrap().text().unwrap();
    let before = size(&c).len();
    for i in 0..300 {
        let m = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let st = c.request(m, srv.at("/v1/collections")).send().unwrap();
        assert!(st.status().is_client_error(), "{}", st.status());
    }
    let text = size(&c);
    assert!(!text.contains("BREW"), "a made-up method became a label");
    assert!(text.contains("method=\"other\""));
    assert!(
        text.len() < before + 4096,
        "/metrics grew from {before} to {} bytes",
        text.len()
    );
}

/// Row 7: a FIFO named in `paths` (or found by a walk) is refused at once, never opened.
#[test]
fn a_fifo_is_refused_at_once_named_or_found() {
    let env = Env::new();
    let pipe = env.import().join("pipe.parquet");
    let folder = env.import().join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    for p in [&pipe, &folder.join("x.parquet")] {
        let c_path = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    }
    let srv = env.start(&[]);
    let c = client();
    for paths in [json!(["pipe.parquet"]), json!(["folder"])] {
        let started = Instant::now();
        let r = post_json(
            &c,
            &srv.at("/v1/collections/fifo/bulk-load"),
            &json!({ "paths": paths }),
        );
        assert_error(&r, 400, "invalid_parquet");
        assert!(
            r.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{}",
            r.1
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert!(!collection_exists(&c, &srv, "fifo"));
}

/// Row 8: outside `--images-dir`, an existing and a missing absolute path answer alike.
#[test]
fn image_paths_outside_the_root_do_not_reveal_which_files_exist() {
    let env = Env::new();
    let srv = env.start(&[]);
    let c = client();
    let existing = answer(c.get(srv.at("/image//etc/passwd")).send().unwrap());
    let missing = answer(
        c.get(srv.at("/image//etc/no-such-file-here"))
            .send()
            .unwrap(),
    );
    assert_eq!(existing.0, missing.0, "{} vs {}", existing.1, missing.1);
    assert_eq!(existing.1["error"]["code"], missing.1["error"]["code"]);
    assert!(existing.0 >= 400 && existing.0 < 500);
}

/// Row 9: finite components whose norm overflows f32 are refused, in upserts and queries.
#[test]
fn vectors_with_an_overflowing_norm_are_refused() {
    let env = Env::new();
    let srv = env.start(&[]);
    let c = client();
    let r = post_json(
        &c,
        &srv.at("/v1/collections"),
        &json!({"name": "v", "dim": DIM}),
    );
    assert!(r.0 < 300, "{}", r.1);
    let huge = vec![3e38f32; DIM];
    let r = post_json(
        &c,
        &srv.at("/v1/collections/v/points"),
        &json!({"points": [{"id": "a", "vector": huge}]}),
    );
    assert_error(&r, 400, "invalid_argument");
    assert!(r.1["error"]["message"].as_str().unwrap().contains("norm"));
    let r = post_json(
        &c,
        &srv.at("/v1/collections/v/search"),
        &json!({"vector": huge, "k": 3}),
    );
    assert_eq!(r.0, 400, "{}", r.1);
}

/// Rows 2 and 10: metadata beyond the per-row bound is refused naming the column, and the
/// failed load into a new collection leaves nothing behind.
#[test]
fn oversized_metadata_fails_the_load_and_leaves_no_collection() {
    use glimpse_server::ingest::{
        ExtraColumn, MetaKind, MetaValue, ShardRecord, ShardWriterOptions, write_partition_atomic,
    };
    let env = Env::new();
    let mut opts = ShardWriterOptions::new("test", DIM);
    opts.extra_columns = vec![ExtraColumn {
        name: "caption".into(),
        kind: MetaKind::Str,
    }];
    // One 100 KB value repeated: the dictionary encoding keeps the file tiny.
    let value = "y".repeat(100_000);
    let records: Vec<ShardRecord> = (0..200)
        .map(|i| ShardRecord {
            id: i,
            image_path: None,
            vector: unit_vector(i as u64, DIM),
            extra: [("caption".to_string(), MetaValue::Str(value.clone()))]
                .into_iter()
                .collect(),
        })
        .collect();
    let file = write_partition_atomic(&env.import(), "meta.parquet", &records, opts).unwrap();
    assert!(std::fs::metadata(&file).unwrap().len() < 1 << 20);
    let srv = env.start(&[]);
    let c = client();
    let r = post_json(
        &c,
        &srv.at("/v1/collections/meta/bulk-load"),
        &json!({"paths": ["meta.parquet"]}),
    );
    assert_error(&r, 400, "invalid_argument");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("caption"),
        "{}",
        r.1
    );
    assert!(!collection_exists(&c, &srv, "meta"));
}

/// A request body that trickles in slowly, holding its heavy-request permit meanwhile.
struct SlowBody {
    left: usize,
    deadline: Instant,
}

impl Read for SlowBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || Instant::now() > self.deadline {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
        let n = buf.len().min(self.left).min(512);
        buf[..n].fill(b'P');
        self.left -= n;
        Ok(n)
    }
}

/// Row 12: heavy requests beyond --max-heavy-requests get 503 with Retry-After at once; light
/// requests are not held up.
#[test]
fn heavy_requests_beyond_the_limit_are_turned_away_with_retry_after() {
    let env = Env::new();
    let srv = env.start(&["--max-heavy-requests", "1"]);
    let url = srv.at("/v1/collections/slow/bulk-load");
    let slow = std::thread::spawn(move || {
        let body = SlowBody {
            left: 64 << 10,
            deadline: Instant::now() + Duration::from_secs(4),
        };
        client()
            .post(url)
            .header("content-type", "application/vnd.apache.parquet")
            .body(reqwest::blocking::Body::new(body))
            .send()
            .map(|r| r.status().as_u16())
    });
    std::thread::sleep(Duration::from_millis(800));
    let c = client();
    let r = c
        .post(srv.at("/v1/collections/other/bulk-load"))
        .header("content-type", "application/vnd.apache.parquet")
        .body(vec![b'P'; 4096])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "too_many_heavy_requests");
    // Light requests pass meanwhile.
    let st = c.get(srv.at("/v1/collections")).send().unwrap().status();
    assert_eq!(st.as_u16(), 200);
    // The slow upload is garbage: it fails on its own, and its permit comes back.
    let slow_status = slow.join().unwrap().unwrap();
    assert_eq!(slow_status, 400);
    let metrics = c.get(srv.at("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("glimpse_http_heavy_rejected_total 1"));
    let r = c
        .post(srv.at("/v1/collections/other/bulk-load"))
        .header("content-type", "application/vnd.apache.parquet")
        .body(vec![b'P'; 4096])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "the permit was returned");
}
