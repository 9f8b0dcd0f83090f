//! End-to-end tests of the HTTP API: a real server on 127.0.0.1:0 with the
//! tiny CLIP model and real Parquet files in a temporary data directory.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use base64::Engine;
use glimpse_e2e::{TestServer, png_bytes, tiny_dim, tiny_model, unit_vector, write_shard};
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn client() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

fn post_json(c: &Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn get_json(c: &Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn upload(c: &Client, url: &str, file: &Path) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", "application/vnd.apache.parquet")
        .body(std::fs::read(file).unwrap())
        .send()
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

/// Asserts a 4xx JSON error with the given code.
fn assert_error(resp: (u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    assert!(resp.1["error"]["message"].as_str().unwrap().len() > 5);
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    model: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let model = tiny_model(&root).to_string_lossy().into_owned();
    std::fs::create_dir_all(root.join("import")).unwrap();
    std::fs::create_dir_all(root.join("images")).unwrap();
    Setup {
        _tmp: tmp,
        root,
        model,
    }
}

fn start(s: &Setup, extra: &[&str]) -> TestServer {
    let data = s.root.join("data");
    let import = s.root.join("import");
    let images = s.root.join("images");
    let mut flags = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        &s.model,
        "--import-root",
        import.to_str().unwrap(),
        "--images-dir",
        images.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    TestServer::start(&flags)
}

#[test]
fn bulk_load_search_every_way_and_restart() {
    let s = setup();
    let dim = tiny_dim();
    let import = s.root.join("import");
    // Both folder layouts of the original pipeline, plus a plain file upload.
    write_shard(
        &import.join("shards"),
        "embeddings_0_50.parquet_part_0.parquet",
        0..50,
        dim,
    );
    write_shard(
        &import.join("shards/embeddings_50_100.parquet_part_0"),
        "data.parquet",
        50..100,
        dim,
    );
    let upload_file = write_shard(&s.root, "upload.parquet", 100..120, dim);
    for i in [0u32, 7, 100] {
        std::fs::write(
            s.root.join(format!("images/{i}.png")),
            png_bytes(20, 16, i as u8),
        )
        .unwrap();
    }

    let srv = start(&s, &[]);
    let c = client();

    // By path (folder with both layouts).
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/bulk-load"),
        &json!({"paths": ["shards"]}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], 100);
    assert_eq!(v["inserted"], 100);
    assert_eq!(v["replaced"], 0);
    assert_eq!(v["shards"], 2);
    // By upload.
    let (st, v) = upload(&c, &srv.at("/v1/collections/imgs/bulk-load"), &upload_file);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["inserted"], 20);
    // Loading the same data again leaves one copy per id.
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/bulk-load"),
        &json!({"paths": ["shards"]}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["inserted"], 0);
    assert_eq!(v["replaced"], 100);
    let (st, v) = get_json(&c, &srv.at("/v1/collections/imgs"));
    assert_eq!(st, 200);
    assert_eq!(v["count"], 120, "{v}");
    assert_eq!(v["dim"], dim);
    assert_eq!(v["metric"], "cosine");
    // Three loads made several segments; compaction merges them into one, same points.
    let (st, v) = post_json(&c, &srv.at("/v1/collections/imgs/compact"), &json!({}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["segments"], 1, "{v}");
    assert_eq!(v["count"], 120, "{v}");
    assert_eq!(v["memtable_rows"], 0, "{v}");

    // Vector search: a stored vector finds itself first with cosine 1.
    let q = unit_vector(42, dim);
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/search"),
        &json!({"vector": q, "k": 5}),
    );
    assert_eq!(st, 200, "{v}");
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 5);
    assert_eq!(res[0]["id"], "42");
    assert!((res[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    assert_eq!(res[0]["metadata"]["label"], 0);
    assert_eq!(res[0]["metadata"]["split"], "train");
    assert_eq!(res[0]["image_path"], "42.png");
    let scores: Vec<f64> = res.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // Filter inside the scan: only label 1, still k results.
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/search"),
        &json!({"vector": q, "k": 10, "filter": {"label": 1, "split": {"$in": ["val", "train"]}}}),
    );
    assert_eq!(st, 200, "{v}");
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 10);
    assert!(res.iter().all(|r| r["metadata"]["label"] == 1));
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/search"),
        &json!({"vector": q, "k": 100, "filter": {"id_num": {"$gte": 5}}}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["results"].as_array().unwrap().len(),
        0,
        "no point has id_num"
    );

    // More like this.
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/search"),
        &json!({"id": 7, "k": 3}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"][0]["id"], "7");

    // Text: the tiny model's text embedding, answered with k results.
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/search"),
        &json!({"text": "a photo of a cloud", "k": 4}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 4);
    assert!(v["took_ms"]["embed"].as_f64().unwrap() >= 0.0);
    let (st, v2) = get_json(&c, &srv.at("/search?q=a%20photo%20of%20a%20cloud&k=4"));
    assert_eq!(st, 200, "{v2}");
    assert_eq!(
        v["results"], v2["results"],
        "GET /search and POST search agree"
    );

    // Image, as base64 and as a multipart upload: same answer.
    let png = png_bytes(33, 21, 9);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/search"),
        &json!({"image_base64": b64, "k": 3}),
    );
    assert_eq!(st, 200, "{v}");
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "image",
            reqwest::blocking::multipart::Part::bytes(png).file_name("q.png"),
        )
        .text("k", "3");
    let r = c
        .post(srv.at("/v1/collections/imgs/search"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v2: Value = r.json().unwrap();
    assert_eq!(v["results"], v2["results"]);

    // The original pipeline's routes.
    let (st, v) = post_json(
        &c,
        &srv.at("/search"),
        &json!({"text": "a dog", "n_results": 3}),
    );
    assert_eq!(st, 200, "{v}");
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert!(arr[0]["image_path"].is_string() && arr[0]["similarity"].is_number());
    let (st, v) = get_json(&c, &srv.at("/health"));
    assert_eq!(st, 200);
    assert_eq!(v, json!({"status": "healthy", "collection_size": 120}));

    // Images: by id (file under --images-dir) and by path.
    let r = c.get(srv.at("/images/imgs/7")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    assert_eq!(r.bytes().unwrap().to_vec(), png_bytes(20, 16, 7));
    assert_eq!(
        c.get(srv.at("/image/100.png"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        c.get(srv.at("/images/imgs/8"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );

    // Points: upsert is acknowledged, read returns the exact vector.
    let exact: Vec<f32> = (0..dim)
        .map(|i| (i as f32).mul_add(0.123_456_79, -1.5))
        .collect();
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/imgs/points"),
        &json!({"points": [{"id": "new-1", "vector": exact, "metadata": {"label": 9, "ok": true, "w": 0.5}}]}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["inserted"], 1);
    let (st, v) = get_json(&c, &srv.at("/v1/collections/imgs/points/new-1"));
    assert_eq!(st, 200, "{v}");
    let got: Vec<f32> = serde_json::from_value(v["vector"].clone()).unwrap();
    assert_eq!(got, exact);
    assert_eq!(v["metadata"], json!({"label": 9, "ok": true, "w": 0.5}));
    let r = c
        .delete(srv.at("/v1/collections/imgs/points/5"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        get_json(&c, &srv.at("/v1/collections/imgs/points/5")).0,
        404
    );

    // Metrics and OpenAPI are served.
    let text = c.get(srv.at("/metrics")).send().unwrap().text().unwrap();
    assert!(text.contains("glimpse_http_requests_total"));
    assert!(
        text.contains("glimpse_collection_points{collection=\"imgs\"} 120"),
        "{text}"
    );
    assert!(text.contains("glimpse_search_stage_seconds_bucket"));
    assert!(
        text.contains("glimpse_storage_events_total{collection=\"imgs\",kind=\"bulk_rows\"} 220"),
        "{text}"
    );
    assert!(text.contains("glimpse_storage_events_total{collection=\"imgs\",kind=\"fsyncs\"}"));
    assert_error(get_json(&c, &srv.at("/v2/nothing")), 404, "not_found");
    let (st, v) = get_json(&c, &srv.at("/openapi.json"));
    assert_eq!(st, 200);
    assert!(v["paths"]["/v1/collections/{c}/search"].is_object());
    srv.stop();

    // Restart over the same data dir: everything is still there, exactly.
    let srv = start(&s, &[]);
    let (_, v) = get_json(&c, &srv.at("/v1/collections/imgs"));
    assert_eq!(v["count"], 120, "{v}");
    let (_, v) = get_json(&c, &srv.at("/v1/collections/imgs/points/new-1"));
    let got: Vec<f32> = serde_json::from_value(v["vector"].clone()).unwrap();
    assert_eq!(got, exact);
    assert_eq!(
        get_json(&c, &srv.at("/v1/collections/imgs/points/5")).0,
        404
    );
    let (_, v) = get_json(&c, &srv.at("/v1/collections/imgs/points/99"));
    let got: Vec<f32> = serde_json::from_value(v["vector"].clone()).unwrap();
    assert_eq!(got, unit_vector(99, dim));
}

#[test]
fn original_pipeline_shards_load_unchanged() {
    let s = setup();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/fixtures/ingest");
    let data = s.root.join("data");
    let srv = TestServer::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        "none",
        "--import-root",
        fixtures.to_str().unwrap(),
    ]);
    let c = client();
    for (coll, dir) in [
        ("a", "pipeline_dirs"),
        ("b", "pipeline_files"),
        ("c", "pipeline_base64"),
    ] {
        let (st, v) = post_json(
            &c,
            &srv.at(&format!("/v1/collections/{coll}/bulk-load")),
            &json!({"paths": [dir]}),
        );
        assert_eq!(st, 200, "{dir}: {v}");
        assert!(v["rows"].as_u64().unwrap() > 0);
        let (_, info) = get_json(&c, &srv.at(&format!("/v1/collections/{coll}")));
        assert_eq!(info["count"], v["inserted"]);
    }
    // The base64 variant keeps the image bytes and serves them.
    let (_, v) = post_json(
        &c,
        &srv.at("/v1/collections/c/search"),
        &json!({"vector": vec![0.1; 8], "k": 1}),
    );
    let id = v["results"][0]["id"].as_str().unwrap().to_string();
    let r = c.get(srv.at(&format!("/images/c/{id}"))).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    // Text search without a model: 503 naming the missing model.
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/a/search"),
        &json!({"text": "x"}),
    );
    assert_eq!(st, 503, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("model"));
}

#[test]
fn bad_inputs_get_clear_errors_and_change_nothing() {
    let s = setup();
    let dim = tiny_dim();
    let good = write_shard(&s.root.join("import"), "good.parquet", 0..10, dim);
    let wrong_dim = write_shard(&s.root.join("import"), "wrong.parquet", 10..20, dim + 1);
    std::fs::write(
        s.root.join("outside.parquet"),
        std::fs::read(&good).unwrap(),
    )
    .unwrap();
    std::fs::write(s.root.join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(s.root.join("secret.txt"), s.root.join("images/link.png")).unwrap();
    let srv = start(&s, &["--max-json-bytes", "20000", "--max-text-chars", "50"]);
    let c = client();
    let url = srv.at("/v1/collections/imgs/bulk-load");
    assert_eq!(upload(&c, &url, &good).0, 200);

    // Malformed and truncated Parquet.
    let r = c
        .post(&url)
        .body(b"not parquet at all".to_vec())
        .send()
        .unwrap();
    assert_error(
        (r.status().as_u16(), r.json().unwrap()),
        400,
        "invalid_parquet",
    );
    let bytes = std::fs::read(&good).unwrap();
    let r = c
        .post(&url)
        .body(bytes[..bytes.len() / 2].to_vec())
        .send()
        .unwrap();
    assert_error(
        (r.status().as_u16(), r.json().unwrap()),
        400,
        "invalid_parquet",
    );
    // Wrong dimension for the existing collection.
    assert_error(upload(&c, &url, &wrong_dim), 400, "dimension_mismatch");
    // Paths outside the import root.
    assert_error(
        post_json(&c, &url, &json!({"paths": ["../outside.parquet"]})),
        403,
        "outside_import_root",
    );
    let outside = s.root.join("outside.parquet");
    assert_error(
        post_json(&c, &url, &json!({"paths": [outside.to_str().unwrap()]})),
        403,
        "outside_import_root",
    );
    assert_error(
        post_json(&c, &url, &json!({"paths": ["missing.parquet"]})),
        404,
        "not_found",
    );

    let search = srv.at("/v1/collections/imgs/search");
    let q = unit_vector(1, dim);
    assert_error(
        post_json(&c, &search, &json!({"vector": q, "k": 0})),
        400,
        "invalid_k",
    );
    assert_error(
        post_json(&c, &search, &json!({"vector": q, "k": 5000})),
        400,
        "invalid_k",
    );
    assert_error(
        post_json(&c, &search, &json!({"vector": [1.0, 2.0]})),
        400,
        "dimension_mismatch",
    );
    assert_error(
        post_json(&c, &search, &json!({"text": "   "})),
        400,
        "invalid_text",
    );
    assert_error(
        post_json(&c, &search, &json!({"text": "x".repeat(51)})),
        400,
        "invalid_text",
    );
    assert_error(
        post_json(&c, &search, &json!({"text": "a", "vector": q})),
        400,
        "invalid_query",
    );
    assert_error(
        post_json(&c, &search, &json!({"image_base64": "aGVsbG8="})),
        400,
        "invalid_image",
    );
    assert_error(
        post_json(&c, &search, &json!({"image_base64": "***"})),
        400,
        "invalid_image",
    );
    assert_error(
        post_json(
            &c,
            &search,
            &json!({"vector": q, "filter": {"a": {"$regex": "x"}}}),
        ),
        400,
        "invalid_filter",
    );
    assert_error(
        post_json(&c, &search, &json!({"vector": q, "bogus": 1})),
        400,
        "invalid_json",
    );
    let r = c
        .post(&search)
        .header("content-type", "application/json")
        .body("{\"vector\": [1,")
        .send()
        .unwrap();
    assert_error(
        (r.status().as_u16(), r.json().unwrap()),
        400,
        "invalid_json",
    );
    assert_error(
        post_json(
            &c,
            &srv.at("/v1/collections/nope/search"),
            &json!({"vector": q}),
        ),
        404,
        "not_found",
    );
    // Oversized JSON body.
    let big = json!({"points": [{"id": "x", "vector": vec![0.5; 5000]}]});
    assert_error(
        post_json(&c, &srv.at("/v1/collections/imgs/points"), &big),
        413,
        "payload_too_large",
    );

    // Points: NaN/inf (1e39 overflows f32), wrong dim, bad id, bad metadata.
    let points = srv.at("/v1/collections/imgs/points");
    let mut inf = q.iter().map(|x| *x as f64).collect::<Vec<_>>();
    inf[0] = 1e39;
    assert_error(
        post_json(
            &c,
            &points,
            &json!({"points": [{"id": "a", "vector": inf}]}),
        ),
        400,
        "invalid_vector",
    );
    assert_error(
        post_json(
            &c,
            &points,
            &json!({"points": [{"id": "a", "vector": [1.0]}]}),
        ),
        400,
        "dimension_mismatch",
    );
    assert_error(
        post_json(
            &c,
            &points,
            &json!({"points": [{"id": "x".repeat(257), "vector": q}]}),
        ),
        400,
        "invalid_id",
    );
    assert_error(
        post_json(&c, &points, &json!({"points": [{"id": 1.5, "vector": q}]})),
        400,
        "invalid_id",
    );
    assert_error(
        post_json(
            &c,
            &points,
            &json!({"points": [{"id": "ok", "vector": q}, {"id": "m", "vector": q, "metadata": {"x": [1]}}]}),
        ),
        400,
        "invalid_metadata",
    );
    assert_error(
        post_json(
            &c,
            &srv.at("/v1/collections"),
            &json!({"name": "bad name!", "dim": 4}),
        ),
        400,
        "invalid_argument",
    );
    assert_error(
        post_json(
            &c,
            &srv.at("/v1/collections"),
            &json!({"name": "z", "dim": 0}),
        ),
        400,
        "invalid_dimension",
    );
    assert_error(
        post_json(
            &c,
            &srv.at("/v1/collections"),
            &json!({"name": "z", "dim": 4, "metric": "hamming"}),
        ),
        400,
        "invalid_metric",
    );
    assert_error(
        post_json(
            &c,
            &srv.at("/v1/collections"),
            &json!({"name": "imgs", "dim": 4}),
        ),
        409,
        "conflict",
    );

    // Image serving never leaves --images-dir.
    for path in [
        "/image/..%2Fsecret.txt",
        "/image/link.png",
        "/image/%2e%2e/secret.txt",
    ] {
        let r = c.get(srv.at(path)).send().unwrap();
        let st = r.status().as_u16();
        assert!((400..500).contains(&st), "{path}: {st}");
        assert_ne!(r.text().unwrap(), "secret");
    }

    // Nothing above changed what is stored.
    let (_, v) = get_json(&c, &srv.at("/v1/collections/imgs"));
    assert_eq!(v["count"], 10, "{v}");
    assert_eq!(
        get_json(&c, &srv.at("/v1/collections/imgs/points/ok")).0,
        404
    );
}

#[test]
fn api_key_protects_writes() {
    let s = setup();
    let srv = start(&s, &["--api-key", "s3cret"]);
    let c = client();
    let body = json!({"name": "k", "dim": 3});
    assert_error(
        post_json(&c, &srv.at("/v1/collections"), &body),
        401,
        "unauthorized",
    );
    let r = c
        .post(srv.at("/v1/collections"))
        .bearer_auth("wrong")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .post(srv.at("/v1/collections"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Reads stay open by default; searches are reads.
    assert_eq!(get_json(&c, &srv.at("/v1/collections")).0, 200);
    let (st, _) = post_json(
        &c,
        &srv.at("/v1/collections/k/search"),
        &json!({"vector": [1, 0, 0]}),
    );
    assert_eq!(st, 200);
    assert_eq!(
        c.delete(srv.at("/v1/collections/k"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_eq!(get_json(&c, &srv.at("/healthz")).0, 200);
}

#[test]
fn async_bulk_load_reports_progress() {
    let s = setup();
    let dim = tiny_dim();
    write_shard(
        &s.root.join("import/many"),
        "x.parquet_part_0.parquet",
        0..300,
        dim,
    );
    write_shard(
        &s.root.join("import/many"),
        "x.parquet_part_1.parquet",
        300..600,
        dim,
    );
    let srv = start(&s, &[]);
    let c = client();
    let (st, v) = post_json(
        &c,
        &srv.at("/v1/collections/big/bulk-load?async=true"),
        &json!({"paths": ["many"]}),
    );
    assert_eq!(st, 202, "{v}");
    let status_url = srv.at(v["status_url"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, j) = get_json(&c, &status_url);
        if j["state"] == "done" {
            assert_eq!(j["result"]["rows"], 600);
            assert_eq!(j["rows_done"], 600);
            assert_eq!(j["rows_total"], 600);
            assert_eq!(j["shards_done"], 2);
            break;
        }
        assert_ne!(j["state"], "failed", "{j}");
        assert!(
            std::time::Instant::now() < deadline,
            "job did not finish: {j}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (_, v) = get_json(&c, &srv.at("/v1/collections/big"));
    assert_eq!(v["count"], 600);
    assert_error(get_json(&c, &srv.at("/v1/jobs/nope")), 404, "not_found");
}
