//! End-to-end test harness: a real Glimpse server on `127.0.0.1:0` over a
//! real data directory, driven over real HTTP.
//!
//! [`TestServer`] runs the server in-process (its own tokio runtime on a
//! thread) for speed; [`ChildServer`] runs it as a separate process (the test
//! binary re-executed) for SIGTERM/SIGKILL tests.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod s3;

use clap::Parser;
use glimpse_server::cli::ServeArgs;

/// Parses `glimpse serve` flags into [`ServeArgs`].
pub fn serve_args(flags: &[&str]) -> ServeArgs {
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ServeArgs,
    }
    let mut argv = vec!["glimpse-serve"];
    argv.extend_from_slice(flags);
    Wrap::try_parse_from(argv).unwrap().args
}

/// A server running in this process.
pub struct TestServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    model: std::sync::Arc<glimpse_server::model_slot::ModelSlot>,
}

impl TestServer {
    /// Starts a server with the given `glimpse serve` flags (`--bind` is
    /// forced to `127.0.0.1:0`).
    pub fn start(flags: &[&str]) -> TestServer {
        let server = Self::start_loading(flags);
        // The model loads in the background; these tests query text at once.
        server.wait_for_model();
        server
    }

    /// Starts a server without waiting for its model (which loads in the background).
    pub fn start_loading(flags: &[&str]) -> TestServer {
        let args = serve_args(flags);
        let state = glimpse_server::cli::build_state(&args).unwrap();
        let model = state.model.clone();
        glimpse_server::cli::start_background(&state, &args).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?).ok();
                glimpse_server::http::serve(listener, state, async {
                    let _ = rx.await;
                })
                .await
            })
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        TestServer {
            url: format!("http://{addr}"),
            shutdown: Some(tx),
            thread: Some(thread),
            model,
        }
    }

    /// Waits (up to 5 minutes) until the model has loaded or failed; `--model none` returns
    /// at once.
    pub fn wait_for_model(&self) {
        self.model.wait(Duration::from_secs(300));
    }

    /// `glimpse serve --photos PHOTOS` over data dir `data` with CLIP model directory `model`,
    /// plus `extra` flags.
    pub fn start_photos(data: &Path, model: &Path, photos: &Path, extra: &[&str]) -> TestServer {
        let mut flags = vec![
            "--data-dir",
            data.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--photos",
            photos.to_str().unwrap(),
        ];
        flags.extend_from_slice(extra);
        TestServer::start(&flags)
    }

    /// The loaded model (panics when there is none).
    pub fn model(&self) -> std::sync::Arc<glimpse_server::model::Model> {
        self.model.get().unwrap()
    }

    /// Full URL of a path.
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Graceful shutdown; returns once the store is synced and closed.
    pub fn stop(mut self) {
        self.shutdown_inner();
    }

    fn shutdown_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Environment variable that turns a re-executed test binary into a server.
pub const CHILD_ENV: &str = "GLIMPSE_E2E_CHILD_SERVE";

/// If this process was started by [`ChildServer::spawn`], runs the server
/// and exits; otherwise returns. Call it first in a test that spawns children.
pub fn maybe_run_child() {
    if let Ok(flags) = std::env::var(CHILD_ENV) {
        let flags: Vec<String> = serde_json::from_str(&flags).unwrap();
        let refs: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
        let args = serve_args(&refs);
        let code = match glimpse_server::cli::serve(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child server failed: {e:#}");
                1
            }
        };
        std::process::exit(code);
    }
}

/// A server in a separate process (this test binary re-executed).
pub struct ChildServer {
    /// Base URL.
    pub url: String,
    /// The process.
    pub child: Child,
}

impl ChildServer {
    /// Spawns the current test binary running only `test_name`, which must
    /// call [`maybe_run_child`] first. `flags` are `glimpse serve` flags.
    // A child that fails to start is left to the test process's exit: the
    // test has failed by then.
    #[allow(clippy::zombie_processes)]
    pub fn spawn(test_name: &str, flags: &[&str]) -> ChildServer {
        Self::spawn_with_env(test_name, flags, &[])
    }

    /// [`spawn`](Self::spawn) with extra environment variables for the child.
    #[allow(clippy::zombie_processes)]
    pub fn spawn_with_env(test_name: &str, flags: &[&str], env: &[(&str, &str)]) -> ChildServer {
        let mut all: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        all.extend(["--bind".to_string(), "127.0.0.1:0".to_string()]);
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, serde_json::to_string(&all).unwrap())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).unwrap();
            assert!(n > 0, "child server exited before listening");
            // libtest prints "test NAME ... " on the same line first.
            if let Some(pos) = line.find("glimpse listening on ") {
                let url = line[pos + "glimpse listening on ".len()..]
                    .trim()
                    .to_string();
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                        sink.clear();
                    }
                });
                let srv = ChildServer { url, child };
                srv.wait_for_model();
                return srv;
            }
            assert!(Instant::now() < deadline, "child server did not start");
        }
    }

    /// Polls `/readyz` until the model (loading in the background) is ready or failed.
    pub fn wait_for_model(&self) {
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let model = client
                .get(format!("{}/readyz", self.url))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .and_then(|v| v["model"].as_str().map(str::to_string));
            if model.is_some_and(|m| m != "loading") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the child to exit and returns its status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

/// Writes the tiny random-weight CLIP model the e2e tests use into `dir`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let model_dir = dir.join("tiny-clip");
    glimpse_embedder::testing::write_tiny_clip(
        &model_dir,
        &glimpse_embedder::testing::TinyClipSpec::small(),
    )
    .unwrap();
    model_dir
}

/// Output width of the tiny model written by [`tiny_model`].
pub fn tiny_dim() -> usize {
    glimpse_embedder::testing::TinyClipSpec::small().projection_dim
}

/// A deterministic unit vector for point `i` (distinct directions).
pub fn unit_vector(i: u64, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim)
        .map(|j| {
            (((i + 1) as f32) * 0.6173 + (j as f32) * 1.3).sin()
                + if j as u64 == i % dim as u64 { 2.0 } else { 0.0 }
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Writes a shard in Glimpse's schema with ids `ids`, a `label` (id % 3)
/// and a `split` column, at `dir/file_name`.
pub fn write_shard(dir: &Path, file_name: &str, ids: std::ops::Range<i64>, dim: usize) -> PathBuf {
    use glimpse_server::ingest::{
        ExtraColumn, MetaKind, MetaValue, ShardRecord, ShardWriterOptions, write_partition_atomic,
    };
    let mut opts = ShardWriterOptions::new("test", dim);
    opts.extra_columns = vec![
        ExtraColumn {
            name: "label".into(),
            kind: MetaKind::Int,
        },
        ExtraColumn {
            name: "split".into(),
            kind: MetaKind::Str,
        },
    ];
    let records: Vec<ShardRecord> = ids
        .map(|i| ShardRecord {
            id: i,
            image_path: Some(format!("{i}.png")),
            vector: unit_vector(i as u64, dim),
            extra: [
                ("label".to_string(), MetaValue::Int(i % 3)),
                (
                    "split".to_string(),
                    MetaValue::Str(if i % 2 == 0 { "train" } else { "val" }.into()),
                ),
            ]
            .into_iter()
            .collect(),
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    write_partition_atomic(dir, file_name, &records, opts).unwrap()
}

/// A small PNG image (solid colour with a gradient) as bytes.
pub fn png_bytes(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(3).wrapping_add(seed),
            (y as u8).wrapping_mul(5),
            seed,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Waits (up to two minutes) for the newest `photo_sync` job of `server` to end and returns
/// its report; panics if it failed.
pub fn wait_for_photo_sync(server: &TestServer) -> serde_json::Value {
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body: serde_json::Value = client
            .get(server.at("/v1/jobs"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let job = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "photo_sync")
            .cloned();
        if let Some(job) = job {
            match job["state"].as_str().unwrap() {
                "done" => return job["result"].clone(),
                "failed" => panic!("photo sync failed: {job}"),
                _ => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "photo sync did not finish: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
