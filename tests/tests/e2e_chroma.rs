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
