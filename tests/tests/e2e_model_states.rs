//! The server answers before its model is loaded: a model directory that appears late, one
//! that is broken, and none at all. Vector routes work throughout; text queries answer 503
//! with the reason; `/readyz` reports the state, and holds readiness back with
//! `--wait-for-model`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use glimpse_e2e::{TestServer, tiny_dim, tiny_model, unit_vector};
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn answer(r: reqwest::blocking::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn get(c: &Client, url: &str) -> (u16, Value) {
    answer(c.get(url).send().unwrap())
}

/// Creates a collection, upserts a few vectors and checks a vector search answers.
fn vector_routes_work(c: &Client, srv: &TestServer) {
    let dim = tiny_dim();
    let r = answer(
        c.post(srv.at("/v1/collections"))
            .json(&json!({"name": "v", "dim": dim}))
            .send()
            .unwrap(),
    );
    assert!(r.0 < 300, "{}", r.1);
    let points: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("p{i}"), "vector": unit_vector(i, dim)}))
        .collect();
    let r = answer(
        c.post(srv.at("/v1/collections/v/points"))
            .json(&json!({ "points": points }))
            .send()
            .unwrap(),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    let r = answer(
        c.post(srv.at("/v1/collections/v/search"))
            .json(&json!({"vector": unit_vector(3, dim), "k": 1}))
            .send()
            .unwrap(),
    );
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["results"][0]["id"], "p3");
    assert_eq!(get(c, &srv.at("/")).0, 200, "the page");
    assert_eq!(get(c, &srv.at("/healthz")).0, 200);
}

fn flags<'a>(data: &'a Path, model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut f = vec!["--data-dir", data.to_str().unwrap(), "--model", model];
    f.extend_from_slice(extra);
    f
}

#[test]
fn a_model_directory_that_appears_late_is_picked_up_while_the_server_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let model_dir = tmp.path().join("models/clip");
    let model = model_dir.to_str().unwrap();
    let srv = TestServer::start_loading(&flags(
        &data,
        model,
        &["--model-wait-secs", "120", "--wait-for-model"],
    ));
    let c = Client::new();

    let (st, ready) = get(&c, &srv.at("/readyz"));
    assert_eq!(st, 503, "--wait-for-model holds readiness back: {ready}");
    assert_eq!(ready["model"], "loading");
    vector_routes_work(&c, &srv);
    let (st, err) = get(&c, &srv.at("/search?q=a%20cat&collection=v"));
    assert_eq!(st, 503, "{err}");
    assert_eq!(err["error"]["code"], "model_loading");

    // The volume is filled: written aside, then moved into place whole.
    let staged = tiny_model(&tmp.path().join("staging"));
    std::fs::create_dir_all(model_dir.parent().unwrap()).unwrap();
    std::fs::rename(&staged, &model_dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, ready) = get(&c, &srv.at("/readyz"));
        if st == 200 {
            assert_eq!(ready["model"], "ready");
            break;
        }
        assert!(Instant::now() < deadline, "never became ready: {ready}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (st, out) = get(&c, &srv.at("/search?q=a%20cat&collection=v&k=2"));
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["results"].as_array().unwrap().len(), 2);
}

#[test]
fn a_broken_model_fails_with_its_reason_and_vector_search_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let model_dir = tiny_model(tmp.path());
    std::fs::write(model_dir.join("config.json"), b"{ this is not json").unwrap();
    let model = model_dir.to_str().unwrap();
    let srv = TestServer::start(&flags(&data, model, &[]));
    let c = Client::new();
    let (st, ready) = get(&c, &srv.at("/readyz"));
    assert_eq!(st, 200, "ready for vector search: {ready}");
    let state = ready["model"].as_str().unwrap();
    assert!(state.starts_with("failed: "), "{state}");
    assert!(state.contains("config.json"), "{state}");
    vector_routes_work(&c, &srv);
    let (st, err) = get(&c, &srv.at("/search?q=a%20cat&collection=v"));
    assert_eq!(st, 503, "{err}");
    assert_eq!(err["error"]["code"], "model_unavailable");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("--model DIR"), "{message}");
    drop(srv);
    // With --wait-for-model a broken model never becomes ready.
    let srv = TestServer::start(&flags(&data, model, &["--wait-for-model"]));
    assert_eq!(get(&c, &srv.at("/readyz")).0, 503);
}

#[test]
fn without_a_model_text_search_says_how_to_get_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let e = glimpse_server::cli::build_state(&glimpse_e2e::serve_args(&flags(
        &data,
        "none",
        &["--wait-for-model"],
    )))
    .err()
    .unwrap();
    assert!(e.to_string().contains("--wait-for-model"), "{e}");
    let c = Client::new();
    let srv = TestServer::start(&flags(&data, "none", &[]));
    let (st, ready) = get(&c, &srv.at("/readyz"));
    assert_eq!((st, ready["model"].as_str()), (200, Some("none")));
    vector_routes_work(&c, &srv);
    let (st, err) = get(&c, &srv.at("/search?q=a%20cat&collection=v"));
    assert_eq!(st, 503, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--model"),
        "{err}"
    );
}
