//! The README's commands, run as written (with the tiny model, temp folders and the port the
//! server really bound substituted in), so they cannot rot: the set-up command's `serve`, the
//! pipeline's `embed`, `load` and `curl` search, and `serve --photos`.

#![allow(clippy::unwrap_used)]

mod embed_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use embed_support::tiny_model;

const README: &str = include_str!("../../README.md");

/// Every line of a ```sh block of the README that starts with `prefix`, comments dropped.
fn commands(prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in README.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            continue;
        }
        if in_sh && t.starts_with(prefix) {
            let cmd = t.split(" #").next().unwrap_or(t).trim().to_string();
            out.push(cmd);
        }
    }
    out
}

/// Splits a shell command line into words (single and double quotes, no expansions).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The README's words with this test's stand-ins.
fn substitute(words: Vec<String>, subs: &[(&str, String)]) -> Vec<String> {
    words
        .into_iter()
        .map(|w| {
            subs.iter()
                .fold(w, |w, (from, to)| w.replace(from, to.as_str()))
        })
        .collect()
}

/// Starts `glimpse` with `args` (a `serve` command) and returns it with the URL it listens on.
// The caller reaps the child (`kill`); a child that fails to start is left to the test's exit.
#[allow(clippy::zombie_processes)]
fn spawn_server(args: &[String]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "server exited");
        if let Some(url) = line.trim().strip_prefix("glimpse listening on ") {
            return (child, url.to_string());
        }
        assert!(Instant::now() < deadline);
    }
}

fn run(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "glimpse {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get_json(url: &str) -> serde_json::Value {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client.get(url).send().unwrap();
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().unwrap_or_default();
        // Text search answers 503 while the model still loads in the background.
        if status == 200 || Instant::now() > deadline {
            assert_eq!(status, 200, "{url}: {v}");
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_photos(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let (bytes, ext) = embed_support::image_bytes(i * 9 + 1);
        std::fs::write(dir.join(format!("photo-{i:02}.{ext}")), bytes).unwrap();
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model: PathBuf = tiny_model(root);
    write_photos(&root.join("photos"), 12);

    // 1. The set-up command: `cargo run --release --bin glimpse -- serve ...`.
    let setup = commands("cargo run --release --bin glimpse -- serve");
    assert_eq!(setup.len(), 1, "the README's serve set-up command");
    let serve_words: Vec<String> = words(&setup[0])
        .into_iter()
        .skip_while(|w| w != "serve")
        .collect();
    let subs = [
        ("./glimpse-data", root.join("data").display().to_string()),
        ("127.0.0.1:8000", "127.0.0.1:0".to_string()),
    ];
    let mut serve_args = substitute(serve_words, &subs);
    serve_args.extend(["--model".into(), model.display().to_string()]);
    let (server, url) = spawn_server(&serve_args);

    // 2. The pipeline in three commands, against that server.
    let subs = [
        ("openai/clip-vit-base-patch32", model.display().to_string()),
        ("./photos", root.join("photos").display().to_string()),
        (
            "./embeddings",
            root.join("embeddings").display().to_string(),
        ),
        ("http://127.0.0.1:8000", url.clone()),
    ];
    let embed = commands("glimpse embed ");
    let load = commands("glimpse load ");
    let curl = commands("curl ");
    assert!(!embed.is_empty() && !load.is_empty() && !curl.is_empty());
    run(&substitute(words(&embed[0]), &subs)[1..]);
    run(&substitute(words(&load[0]), &subs)[1..]);
    let curl_url = substitute(words(&curl[0]), &subs)
        .into_iter()
        .find(|w| w.starts_with("http"))
        .unwrap();
    let out = get_json(&curl_url);
    let hits = out["results"].as_array().unwrap();
    assert_eq!(hits.len(), 12, "{out}");
    // The page answers too.
    let page = reqwest::blocking::get(format!("{url}/"))
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("<html"));
    kill(server);

    // 2b. The writer and replica on object storage, with a local path for the bucket: the
    // embeddings loaded into the writer are served by the replica.
    let remote: Vec<String> = commands("glimpse serve --data-dir ")
        .into_iter()
        .filter(|c| c.contains(" --remote "))
        .collect();
    assert_eq!(remote.len(), 2, "the README's writer and replica commands");
    let bucket = format!("file://{}", root.join("bucket").display());
    let subs = [
        ("s3://my-bucket/glimpse", bucket),
        ("./w", root.join("w").display().to_string()),
        ("./r", root.join("r").display().to_string()),
    ];
    let mut running = Vec::new();
    for cmd in &remote {
        let mut args = substitute(words(cmd), &subs)[1..].to_vec();
        args.extend([
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--model".into(),
            "none".into(),
        ]);
        running.push(spawn_server(&args));
    }
    let (writer_url, replica_url) = (running[0].1.clone(), running[1].1.clone());
    let load_subs = [
        (
            "./embeddings",
            root.join("embeddings").display().to_string(),
        ),
        ("http://127.0.0.1:8000", writer_url.clone()),
    ];
    run(&substitute(words(&load[0]), &load_subs)[1..]);
    let written = get_json(&format!("{writer_url}/v1/collections/images"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_json(&format!("{replica_url}/v1/collections"));
        if v["collections"][0]["count"] == written["count"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never caught up: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (child, _) in running {
        kill(child);
    }

    // 3. One command from a folder of photos to a search page.
    let photos_cmd = commands("glimpse serve --photos");
    assert_eq!(photos_cmd.len(), 1);
    let subs = [("~/Pictures", root.join("photos").display().to_string())];
    let mut args = substitute(words(&photos_cmd[0]), &subs)[1..].to_vec();
    args.extend([
        "--data-dir".into(),
        root.join("photo-data").display().to_string(),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--model".into(),
        model.display().to_string(),
    ]);
    let (server, url) = spawn_server(&args);
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        let jobs = get_json(&format!("{url}/v1/jobs"));
        let job = jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "photo_sync" && j["state"] != "running")
            .cloned();
        if let Some(job) = job {
            assert_eq!(job["state"], "done", "{job}");
            break job["result"].clone();
        }
        assert!(Instant::now() < deadline, "photos never synced: {jobs}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(report["scanned"], 12, "{report}");
    let added = report["added"].as_u64().unwrap();
    assert!(added >= 3, "{report}");
    let v = get_json(&format!("{url}/v1/collections"));
    assert_eq!(v["collections"][0]["count"], added, "{v}");
    let out = get_json(&format!("{url}/search?q=a%20photo&k=3"));
    assert_eq!(out["results"].as_array().unwrap().len(), 3);
    kill(server);
}

#[test]
fn words_split_like_a_shell() {
    assert_eq!(
        words("curl 'http://x/search?q=a%20b&k=1' --flag \"two words\""),
        ["curl", "http://x/search?q=a%20b&k=1", "--flag", "two words"]
    );
}
