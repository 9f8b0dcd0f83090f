//! `glimpse serve --photos DIR`: from a folder of photos to a searchable page in one command,
//! and the folder kept in step across restarts (new, changed and removed photos).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use glimpse_e2e::{TestServer, png_bytes, tiny_model, wait_for_photo_sync};
use reqwest::blocking::Client;
use serde_json::Value;

fn get_json(c: &Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn search_ids(c: &Client, server: &TestServer) -> Vec<String> {
    let (status, body) = get_json(c, &server.at("/search?q=a%20photo&k=50"));
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Asserts the counters of a photo sync report.
fn expect_report(report: &Value, want: &[(&str, u64)]) {
    for (key, n) in want {
        assert_eq!(report[*key], *n, "{key} in {report}");
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn photo_folder_is_embedded_served_and_kept_in_step() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let photos = tmp.path().join("photos");
    let data = tmp.path().join("data");
    write(&photos.join("beach.png"), &png_bytes(40, 30, 1));
    write(&photos.join("2024/july/cat.png"), &png_bytes(30, 50, 2));
    write(&photos.join("dog.png"), &png_bytes(64, 64, 3));
    write(&photos.join("broken.jpg"), b"this is not a jpeg");
    write(&photos.join(".hidden/secret.png"), &png_bytes(8, 8, 4));
    write(&photos.join("notes.txt"), b"not a photo");
    let c = Client::new();

    let server = TestServer::start_photos(&data, &model, &photos, &[]);
    let report = wait_for_photo_sync(&server);
    expect_report(
        &report,
        &[("scanned", 4), ("added", 3), ("failed", 1), ("removed", 0)],
    );
    assert_eq!(
        search_ids(&c, &server),
        ["2024/july/cat.png", "beach.png", "dog.png"]
    );
    // The page's thumbnails: served from the folder by id, slashes and all.
    let r = c
        .get(server.at("/images/photos/2024%2Fjuly%2Fcat.png"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(
        r.bytes().unwrap().as_ref(),
        std::fs::read(photos.join("2024/july/cat.png")).unwrap()
    );
    let (status, _) = get_json(&c, &server.at("/images/photos/..%2Fdata"));
    assert_eq!(status, 404);
    // The stored vector is the image tower's embedding of the file.
    let (status, point) = get_json(&c, &server.at("/v1/collections/photos/points/dog.png"));
    assert_eq!(status, 200, "{point}");
    let direct = glimpse_server::model::Model::load(
        model.to_str().unwrap(),
        glimpse_server::model::DeviceArg::Cpu,
    )
    .unwrap()
    .embed_image(&std::fs::read(photos.join("dog.png")).unwrap())
    .unwrap();
    let stored: Vec<f32> = point["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let diff = stored
        .iter()
        .zip(&direct)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "stored vs direct embedding differ by {diff}");
    server.stop();

    // Unchanged folder: nothing is embedded again.
    let server = TestServer::start_photos(&data, &model, &photos, &[]);
    let report = wait_for_photo_sync(&server);
    expect_report(&report, &[("unchanged", 3), ("added", 0)]);
    server.stop();

    // A photo removed, one added, one replaced by a different picture.
    std::fs::remove_file(photos.join("beach.png")).unwrap();
    write(&photos.join("new/sunset.png"), &png_bytes(50, 20, 5));
    write(&photos.join("dog.png"), &png_bytes(70, 70, 9));
    let server = TestServer::start_photos(&data, &model, &photos, &[]);
    let report = wait_for_photo_sync(&server);
    expect_report(
        &report,
        &[
            ("added", 1),
            ("updated", 1),
            ("removed", 1),
            ("unchanged", 1),
        ],
    );
    assert_eq!(
        search_ids(&c, &server),
        ["2024/july/cat.png", "dog.png", "new/sunset.png"]
    );
    let (_, point) = get_json(&c, &server.at("/v1/collections/photos/points/dog.png"));
    assert_ne!(point["vector"][0].as_f64().unwrap() as f32, stored[0]);
    server.stop();

    // An emptied (or unmounted) folder deletes nothing.
    std::fs::rename(&photos, tmp.path().join("moved")).unwrap();
    std::fs::create_dir_all(&photos).unwrap();
    let server = TestServer::start_photos(&data, &model, &photos, &[]);
    let report = wait_for_photo_sync(&server);
    expect_report(&report, &[("scanned", 0), ("removed", 0)]);
    assert_eq!(search_ids(&c, &server).len(), 3);
    server.stop();
}

#[test]
fn photos_flag_needs_a_model_and_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let missing = tmp.path().join("missing");
    for (folder, why) in [
        (&photos, "needs a CLIP model"),
        (&missing, "is not a directory"),
    ] {
        let args = glimpse_e2e::serve_args(&[
            "--data-dir",
            data.to_str().unwrap(),
            "--model",
            "none",
            "--photos",
            folder.to_str().unwrap(),
        ]);
        let Err(err) = glimpse_server::cli::build_state(&args) else {
            panic!("build_state accepted {args:?}");
        };
        assert!(format!("{err:#}").contains(why), "{err:#}");
    }
}

#[test]
fn rescan_picks_up_photos_added_while_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let photos = tmp.path().join("photos");
    let data = tmp.path().join("data");
    write(&photos.join("first.png"), &png_bytes(20, 20, 1));
    let server = TestServer::start_photos(&data, &model, &photos, &["--photos-rescan-secs", "1"]);
    expect_report(&wait_for_photo_sync(&server), &[("added", 1)]);
    write(&photos.join("later/second.png"), &png_bytes(30, 20, 7));
    let c = Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while search_ids(&c, &server) != ["first.png", "later/second.png"] {
        assert!(
            std::time::Instant::now() < deadline,
            "the new photo was not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Every pass is a job; the one that found the new photo says so.
    let (_, jobs) = get_json(&c, &server.at("/v1/jobs"));
    let passes = jobs["jobs"].as_array().unwrap();
    assert!(passes.len() >= 2, "{jobs}");
    assert!(
        passes
            .iter()
            .any(|j| j["result"]["added"] == 1 && j["result"]["unchanged"] == 1),
        "{jobs}"
    );
    server.stop();
}
