//! ChromaDB's own Python client against a real `glimpse serve`: `tests/chroma/` is a pytest
//! suite written against a real Chroma 1.5.9 server (`chroma run`) and passing there, run
//! here against Glimpse with `chromadb==1.5.9` and `langchain-chroma` from PyPI, plus the
//! Glimpse-only checks (`query_texts` embedded by the server's model, one collection seen by
//! both APIs), and once more with `--api-key` for both of the client's token headers.
//!
//! The Python side needs `tests/chroma/requirements.txt` installed: `GLIMPSE_CHROMA_PYTHON`
//! names that interpreter (`.ci/run` makes a virtual environment and sets it, together with
//! `GLIMPSE_REQUIRE_CHROMA=1`). Without it the tests say so and pass, unless required.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use glimpse_e2e::{TestServer, tiny_dim, tiny_model};

/// The Python with the Chroma client installed, or `None` (then the test is skipped, unless
/// `GLIMPSE_REQUIRE_CHROMA=1`).
fn chroma_python() -> Option<String> {
    let required = std::env::var("GLIMPSE_REQUIRE_CHROMA").as_deref() == Ok("1");
    let python = std::env::var("GLIMPSE_CHROMA_PYTHON").ok();
    let usable = python.as_deref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import chromadb, langchain_chroma, pytest"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !usable {
        assert!(
            !required,
            "GLIMPSE_REQUIRE_CHROMA=1 but GLIMPSE_CHROMA_PYTHON ({python:?}) cannot import \
             chromadb, langchain_chroma and pytest (pip install -r tests/chroma/requirements.txt)"
        );
        eprintln!(
            "skipped: set GLIMPSE_CHROMA_PYTHON to a python with tests/chroma/requirements.txt"
        );
        return None;
    }
    python
}

/// Runs the pytest suite against `server`; `extra` are pytest arguments, `env` more
/// variables. Panics with pytest's output when anything fails.
fn pytest(python: &str, server: &TestServer, extra: &[&str], env: &[(&str, &str)]) -> String {
    let port = server.url.rsplit(':').next().unwrap();
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("chroma");
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"])
        .arg(&suite)
        .args(extra)
        .env("CHROMA_HOST", "127.0.0.1")
        .env("CHROMA_PORT", port)
        .env("CHROMA_SERVER", "glimpse")
        .env("GLIMPSE_TEXT_DIM", tiny_dim().to_string())
        .env("ANONYMIZED_TELEMETRY", "False");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pytest failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The number before `word` in pytest's summary line (`91 passed, 3 skipped`).
fn count(summary: &str, word: &str) -> usize {
    let line = summary
        .lines()
        .rev()
        .find(|l| l.contains(" passed"))
        .unwrap_or("");
    line.split(',')
        .filter_map(|part| {
            let mut it = part.split_whitespace();
            let n = it.next()?.parse::<usize>().ok()?;
            (it.next()? == word).then_some(n)
        })
        .next()
        .unwrap_or(0)
}

#[test]
fn the_chroma_client_works_against_glimpse_unchanged() {
    let Some(python) = chroma_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = tmp.path().join("data");
    let server = TestServer::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    let out = pytest(&python, &server, &[], &[]);
    // Everything ran except the three token tests (no --api-key here).
    assert_eq!(count(&out, "skipped"), 3, "{out}");
    assert!(count(&out, "passed") >= 90, "{out}");
    // The Chroma namespace survives a restart: same UUIDs, metadata and records.
    let http = reqwest::blocking::Client::new();
    let collections = |s: &TestServer| {
        s.at("/api/v2/tenants/default_tenant/databases/default_database/collections")
    };
    let made: serde_json::Value = http
        .post(collections(&server))
        .json(
            &serde_json::json!({"name": "kept", "metadata": {"hnsw:space": "ip", "owner": "e2e"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    let add = http
        .post(format!("{}/{id}/add", collections(&server)))
        .json(&serde_json::json!({
            "ids": ["a", "b"],
            "embeddings": [[1.0, 0.0], [0.0, 1.0]],
            "documents": ["first", "second"],
        }))
        .send()
        .unwrap();
    assert_eq!(add.status(), 201);
    let listing = |s: &TestServer| -> serde_json::Value {
        http.get(collections(s)).send().unwrap().json().unwrap()
    };
    let before = listing(&server);
    assert!(
        before
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str()),
        "{before}"
    );
    server.stop();
    let server = TestServer::start(&["--data-dir", data.to_str().unwrap(), "--model", "none"]);
    assert_eq!(listing(&server), before);
    let got: serde_json::Value = http
        .post(format!("{}/{id}/query", collections(&server)))
        .json(&serde_json::json!({"query_embeddings": [[0.0, 2.0]], "n_results": 1}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(got["ids"], serde_json::json!([["b"]]), "{got}");
    assert_eq!(got["documents"], serde_json::json!([["second"]]), "{got}");
    // ip: 1 - dot
    assert!(
        (got["distances"][0][0].as_f64().unwrap() + 1.0).abs() < 1e-6,
        "{got}"
    );
}

#[test]
fn the_chroma_client_authenticates_with_either_token_header() {
    let Some(python) = chroma_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        "none",
        "--api-key",
        "chroma-secret",
    ]);
    for header in ["Authorization", "X-Chroma-Token"] {
        let out = pytest(
            &python,
            &server,
            &["-k", "auth or pipeline or langchain"],
            &[
                ("CHROMA_TOKEN", "chroma-secret"),
                ("CHROMA_TOKEN_HEADER", header),
            ],
        );
        assert_eq!(count(&out, "passed"), 5, "{header}: {out}");
    }
}

/// Hostile or broken requests on the Chroma routes: each is refused with a 4xx and a body in
/// Chroma's shape naming the problem, and nothing is written (no Python needed).
#[test]
fn hostile_chroma_requests_get_bounded_chroma_shaped_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        "none",
        "--max-json-bytes",
        "1048576",
    ]);
    let http = reqwest::blocking::Client::new();
    let base = server.at("/api/v2/tenants/default_tenant/databases/default_database/collections");
    let refused = |resp: reqwest::blocking::Response, status: u16, needle: &str| {
        let got = resp.status().as_u16();
        let body: serde_json::Value = resp.json().unwrap();
        assert_eq!(got, status, "{body}");
        let name = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(name.ends_with("Error"), "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle:?} not in {body}");
    };
    let post = |url: String, body: serde_json::Value| http.post(url).json(&body).send().unwrap();

    refused(
        http.post(&base)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .unwrap(),
        400,
        "JSON",
    );
    refused(
        post(base.clone(), serde_json::json!({"name": "ab"})),
        400,
        "3-512",
    );
    refused(
        post(
            base.clone(),
            serde_json::json!({"name": "big", "metadata": {"k": "x".repeat(70_000)}}),
        ),
        400,
        "limit",
    );
    refused(
        post(
            base.clone(),
            serde_json::json!({"name": "odd", "metadata": {"hnsw:space": "manhattan"}}),
        ),
        400,
        "space",
    );
    let made: serde_json::Value = post(base.clone(), serde_json::json!({"name": "target"}))
        .json()
        .unwrap();
    let col = format!("{base}/{}", made["id"].as_str().unwrap());

    // A batch past pre-flight's max_batch_size (1 MiB / 16 KiB = 64 records).
    let ids: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let vecs = vec![vec![1.0f32, 0.0]; 65];
    refused(
        post(
            format!("{col}/add"),
            serde_json::json!({"ids": ids, "embeddings": vecs}),
        ),
        400,
        "64",
    );
    // Base64 that is not whole f32 values, and one that decodes to NaN.
    refused(
        post(
            format!("{col}/add"),
            serde_json::json!({"ids": ["a"], "embeddings": ["AAAAAAA="]}),
        ),
        400,
        "float32",
    );
    refused(
        post(
            format!("{col}/add"),
            serde_json::json!({"ids": ["a"], "embeddings": ["AADAfwAAgD8="]}),
        ),
        400,
        "finite",
    );
    refused(
        post(
            format!("{col}/add"),
            serde_json::json!({"ids": ["a", "b"], "embeddings": [[1.0, 0.0]]}),
        ),
        400,
        "must match",
    );
    refused(
        post(
            format!("{col}/add"),
            serde_json::json!({"ids": ["a"], "embeddings": [[1.0, 0.0]], "metadatas": [{"chroma:document": "x"}]}),
        ),
        400,
        "reserved",
    );
    // Nothing was written by any of those, and the refused first adds fixed no dimension.
    let info: serde_json::Value = http
        .get(format!("{base}/target"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["dimension"], serde_json::Value::Null, "{info}");
    let n: serde_json::Value = http
        .get(format!("{col}/count"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(n, 0);

    let ok = post(
        format!("{col}/add"),
        serde_json::json!({"ids": ["a"], "embeddings": [[1.0, 0.0]], "documents": ["doc"]}),
    );
    assert_eq!(ok.status(), 201);
    refused(
        post(
            format!("{col}/query"),
            serde_json::json!({"query_embeddings": [[1.0, 0.0]], "n_results": 0}),
        ),
        400,
        "n_results",
    );
    refused(
        post(
            format!("{col}/query"),
            serde_json::json!({"query_embeddings": vec![vec![1.0f32, 0.0]; 1001]}),
        ),
        400,
        "1000",
    );
    let no_model = post(
        format!("{col}/query"),
        serde_json::json!({"query_texts": ["a cat"]}),
    );
    assert_eq!(no_model.headers()["retry-after"], "1");
    refused(no_model, 503, "model");
    let mut deep = serde_json::json!({"$contains": "doc"});
    for _ in 0..40 {
        deep = serde_json::json!({"$and": [deep]});
    }
    refused(
        post(
            format!("{col}/get"),
            serde_json::json!({"where_document": deep}),
        ),
        400,
        "deeper",
    );
    refused(
        post(
            format!("{col}/get"),
            serde_json::json!({"where_document": {"$regex": "(a|b)*".repeat(2000)}}),
        ),
        400,
        "limit",
    );
    refused(
        post(
            format!("{col}/get"),
            serde_json::json!({"include": ["distances"]}),
        ),
        400,
        "include",
    );
    refused(
        post(format!("{base}/not-a-uuid/get"), serde_json::json!({})),
        400,
        "UUID",
    );
    refused(
        post(
            format!("{base}/00000000-0000-0000-0000-000000000000/get"),
            serde_json::json!({}),
        ),
        404,
        "does not exist",
    );
    refused(
        post(format!("{col}/delete"), serde_json::json!({})),
        400,
        "needs ids",
    );
    // A body over --max-json-bytes, and a method the route does not take.
    // Just over the limit, so the server's answer is not raced by the rest of the upload;
    // on a connection of its own, which the server closes afterwards.
    refused(
        reqwest::blocking::Client::new()
            .post(format!("{col}/add"))
            .header("content-type", "application/json")
            .body(vec![b' '; (1 << 20) + 16])
            .send()
            .unwrap(),
        413,
        "too large",
    );
    refused(http.patch(&col).send().unwrap(), 405, "PATCH");
    refused(
        post(server.at("/api/v2/reset"), serde_json::json!({})),
        403,
        "Resetting",
    );
    let n: serde_json::Value = http
        .get(format!("{col}/count"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(n, 1);
}
