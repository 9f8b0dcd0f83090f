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
