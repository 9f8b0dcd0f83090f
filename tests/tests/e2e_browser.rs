//! The search page in a real headless Chromium: `glimpse serve --photos DIR` with the tiny
//! CLIP model, then `tests/browser/drive_page.py` types a query, uploads an image, clicks a
//! result, follows a link, provokes an error and renders on a phone screen. Screenshots are
//! kept under the cargo target directory (`browser-screenshots/`).
//!
//! Without Chromium on PATH the test says so and passes, unless `GLIMPSE_REQUIRE_BROWSER=1`
//! (set by `.ci/run`, which installs Debian's `chromium`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use glimpse_e2e::{TestServer, png_bytes, tiny_model, wait_for_photo_sync};
use serde_json::Value;

fn has_chromium() -> bool {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|exe| {
            Command::new(exe)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

fn scores(v: &Value) -> Vec<f32> {
    v["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().parse().unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn search_page_works_in_headless_chromium() {
    if !has_chromium() {
        assert!(
            std::env::var("GLIMPSE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "GLIMPSE_REQUIRE_BROWSER=1 but no chromium on PATH"
        );
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(photos.join("trips")).unwrap();
    for i in 0..6u8 {
        let name = if i % 2 == 0 {
            format!("photo-{i}.png")
        } else {
            format!("trips/photo-{i}.png")
        };
        std::fs::write(
            photos.join(name),
            png_bytes(40 + u32::from(i) * 7, 60, i * 40),
        )
        .unwrap();
    }
    let data = tmp.path().join("data");
    let server = TestServer::start_photos(&data, &model, &photos, &[]);
    let report = wait_for_photo_sync(&server);
    assert_eq!(report["added"], 6, "{report}");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/drive_page.py");
    let upload = photos.join("trips/photo-3.png");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&server.url)
        .arg(&upload)
        .arg(&shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("screenshots in {}", shots.display());

    // Typed query: the grid shows every photo with a thumbnail and a descending score, and
    // the URL now links to this search.
    let text = &r["text"];
    assert_eq!(ids(text).len(), 6, "{text}");
    assert_eq!(text["images_loaded"], 6, "{text}");
    let s = scores(text);
    assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
    assert_eq!(text["status_is_error"], false);
    assert!(
        text["url"].as_str().unwrap().contains("q=a+photo+of+a+dog"),
        "{text}"
    );

    // Uploaded image: itself first, with cosine similarity 1.
    let upload_r = &r["upload"];
    assert_eq!(ids(upload_r)[0], "trips/photo-3.png", "{upload_r}");
    assert!((scores(upload_r)[0] - 1.0).abs() < 1e-3, "{upload_r}");

    // Clicked result: its own nearest neighbour.
    let more = &r["more_like_this"];
    assert_eq!(ids(more)[0], r["clicked"].as_str().unwrap(), "{more}");
    assert!((scores(more)[0] - 1.0).abs() < 1e-3, "{more}");

    // A link opens the search: the box is filled and k is honoured.
    let linked = &r["linked"];
    assert_eq!(linked["query_box"], "a photo of a cat");
    assert_eq!(ids(linked).len(), 2, "{linked}");

    // An error is shown in words.
    let error = &r["error"];
    assert_eq!(error["status_is_error"], true, "{error}");
    assert!(
        error["status"]
            .as_str()
            .unwrap()
            .contains("no_such_collection"),
        "{error}"
    );

    // On a phone screen nothing overflows sideways.
    let phone = &r["phone"];
    assert!(phone["cards"].as_u64().unwrap() > 0, "{phone}");
    assert!(
        phone["scroll_width"].as_u64().unwrap() <= phone["viewport_width"].as_u64().unwrap(),
        "{phone}"
    );
    for name in [
        "02-text-results.png",
        "03-upload-results.png",
        "06-phone.png",
    ] {
        let len = std::fs::metadata(shots.join(name)).unwrap().len();
        assert!(len > 1000, "{name} is {len} bytes");
    }
    server.stop();
}
