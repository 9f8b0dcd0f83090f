//! Query batching under load: text and image searches over HTTP against `glimpse serve` with a
//! ViT-B/32-shaped model (formula weights written to a temporary directory, no download), one
//! client and N concurrent clients, the batched server (`--batch-window-ms 2`, the default) and
//! the unbatched one (`--batch-window-ms 0`) in the same run, the query cache off and every
//! query text distinct.
//!
//! Each client is a thread with its own keep-alive connection sending searches back to back
//! (closed loop). Printed per workload: searches/s, p50 and p99 per server and client count,
//! the mean batch size, mean pass and the share of time the tower computed (from `/metrics`),
//! and the ratios the issue's goals are stated in.
//!
//! Build and run (the server is the release `glimpse` binary next to this one, or `--glimpse
//! PATH`):
//! `cargo build --release -p glimpse-server --bin glimpse -p glimpse-benches --bin
//! query_batching_bench && target/release/query_batching_bench [--clients 16] [--text-secs 15]
//! [--image-secs 20] [--model-dir DIR] [--quick] [--tower-only] [--torch PYTHON]
//! [--windows 0,2] [--workloads short,caption,image] [--text-index 3] [--device cpu]`
//!
//! `--windows` lists the servers to start by batch window (ms; the ratios are against the
//! first), `--workloads` the searches to drive, `--text-index N` which texts the towers are
//! timed on alone (default 3; the numbers in the texts, and so their tokens, grow with it),
//! `--device` the servers' `--device` and the towers' when timed alone (default `cpu`, f32;
//! against `cpu-w8a8` PyTorch runs its dynamic int8 quantization of every Linear layer).
//!
//! `--torch PYTHON` (a Python with torch and transformers) also times PyTorch on the same token
//! ids and images in the same run (`benches/torch_clip_bench.py`) and prints the ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glimpse_benches::embed_common::{flag_usize, flag_value, synthetic_jpeg};
use glimpse_benches::http::HttpClient;
use glimpse_embedder::testing::{TinyClipSpec, in_memory_encoders, write_tiny_clip};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const COLLECTION: &str = "bench";
const POINTS: usize = 2_000;

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(
        bin: &Path,
        model: &Path,
        data: &Path,
        device: &str,
        window_ms: &str,
    ) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let log = data.with_extension("log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--model")
            .arg(model)
            .args(["--device", device, "--wait-for-model", "--query-cache", "0"])
            .args(["--batch-window-ms", window_ms, "--bind", &bind])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut s = Server {
            child,
            url: format!("http://{bind}"),
            log,
        };
        let until = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(status) = s.child.try_wait()? {
                let log = std::fs::read_to_string(&s.log).unwrap_or_default();
                return Err(format!("glimpse exited with {status}\n{log}").into());
            }
            if let Ok(mut c) = HttpClient::new(&s.url, Duration::from_secs(5))
                && let Ok(r) = c.get("/readyz")
                && r.status == 200
            {
                s.fill()?;
                return Ok(s);
            }
            if Instant::now() > until {
                return Err("glimpse not ready after 300 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A collection of random unit vectors to search (small: the embedding is what is measured).
    fn fill(&mut self) -> Result<()> {
        let mut c = HttpClient::new(&self.url, Duration::from_secs(60))?;
        let body = format!(r#"{{"name":"{COLLECTION}","dim":512}}"#);
        let r = c.post("/v1/collections", "application/json", body.as_bytes())?;
        if r.status != 201 {
            return Err(format!("creating the collection: {}", r.status).into());
        }
        let mut points = Vec::with_capacity(POINTS);
        for i in 0..POINTS {
            let v: Vec<f32> = (0..512)
                .map(|j| ((i * 7919 + j * 104_729) as f32 * 0.001).sin())
                .collect();
            points.push(serde_json::json!({"id": i.to_string(), "vector": v}));
        }
        let body = serde_json::json!({ "points": points }).to_string();
        let r = c.post(
            &format!("/v1/collections/{COLLECTION}/points"),
            "application/json",
            body.as_bytes(),
        )?;
        if r.status != 200 {
            return Err(format!("upserting points: {}", r.status).into());
        }
        Ok(())
    }

    /// `[sum, count]` of `glimpse_embed_batch_size{tower}`, then of
    /// `glimpse_embed_pass_seconds{tower}`.
    fn batch_sizes(&self, tower: &str) -> [f64; 4] {
        let Ok(mut c) = HttpClient::new(&self.url, Duration::from_secs(10)) else {
            return [0.0; 4];
        };
        let Ok(r) = c.get("/metrics") else {
            return [0.0; 4];
        };
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let value = |name: &str| -> f64 {
            let key = format!("{name}{{tower=\"{tower}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        [
            value("glimpse_embed_batch_size_sum"),
            value("glimpse_embed_batch_size_count"),
            value("glimpse_embed_pass_seconds_sum"),
            value("glimpse_embed_pass_seconds_count"),
        ]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Caption-like texts, 12 to 22 tokens.
    Text,
    /// Short texts: a word or two and a number.
    ShortText,
    Image,
}

/// Distinct, caption-like query texts of 12 to 22 tokens.
fn text_query(client: usize, i: u64) -> String {
    const ADJ: [&str; 8] = [
        "red", "small", "old", "bright", "wooden", "snowy", "quiet", "busy",
    ];
    const NOUN: [&str; 8] = [
        "cat",
        "lighthouse",
        "bicycle",
        "garden",
        "harbor",
        "kitchen",
        "mountain",
        "market",
    ];
    let n = i as usize;
    let tail = [
        "",
        " at sunset",
        " in the rain near a river",
        " seen from above",
    ][n % 4];
    format!(
        "a photo of a {} {} number {} from client {client}{tail}",
        ADJ[n % 8],
        NOUN[(n / 8) % 8],
        n
    )
}

struct Level {
    qps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    mean_batch: f64,
    /// Mean forward pass, ms (batched servers).
    mean_pass_ms: f64,
    /// Share of the time the tower's worker was in a pass.
    busy: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `clients` closed-loop clients for `secs` seconds after `warmup`.
fn run_level(
    server: &Server,
    workload: Workload,
    clients: usize,
    warmup: Duration,
    secs: Duration,
    images: &Arc<Vec<String>>,
) -> Result<Level> {
    let tower = if workload == Workload::Image {
        "image"
    } else {
        "text"
    };
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let path = format!("/v1/collections/{COLLECTION}/search");
    let mut handles = Vec::new();
    for client in 0..clients {
        let (stop, measuring, errors) = (stop.clone(), measuring.clone(), errors.clone());
        let (url, path, images) = (server.url.clone(), path.clone(), images.clone());
        handles.push(std::thread::spawn(move || -> Vec<f64> {
            let mut c = match HttpClient::new(&url, Duration::from_secs(120)) {
                Ok(c) => c,
                Err(_) => return Vec::new(),
            };
            let mut lat = Vec::new();
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = match workload {
                    Workload::Text => serde_json::json!({
                        "text": text_query(client, i),
                        "k": 10
                    })
                    .to_string(),
Workload::ShortText => serde_json::json!({
                        "text": short_text(client, i),
                        "k": 10
                    })
                    .to_string(),
                    Workload::Image => format!(
                        r#"{{"image_base64":"{}","k":10}}"#,
                        images[(client + i as usize * 7) % images.len()]
                    ),
                };
                i += 1;
                let t = Instant::now();
                let ok = matches!(c.post(&path, "application/json", body.as_bytes()), Ok(r) if r.status == 200);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    if ok {
                        lat.push(ms);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    std::thread::sleep(warmup);
    let [sum0, count0, pass0, passes0] = server.batch_sizes(tower);
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    let [sum1, count1, pass1, passes1] = server.batch_sizes(tower);
    let mut lat: Vec<f64> = Vec::new();
    for h in handles {
        lat.extend(h.join().map_err(|_| "a client thread panicked")?);
    }
    lat.sort_by(f64::total_cmp);
    Ok(Level {
        qps: lat.len() as f64 / elapsed,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        errors: errors.load(Ordering::Relaxed),
        mean_batch: if count1 > count0 {
            (sum1 - sum0) / (count1 - count0)
        } else {
            f64::NAN
        },
        mean_pass_ms: if passes1 > passes0 {
            (pass1 - pass0) / (passes1 - passes0) * 1e3
        } else {
            f64::NAN
        },
        busy: (pass1 - pass0) / elapsed,
    })
}

/// Distinct short texts: a word or two and a number. Each of the first 16 clients starts with
/// its own word, so that a pass of 16 shares only the start-of-text token's rows (the tower
/// computes the rows of a common prefix once; until 2026-12-08 four clients shared each first
/// word, which would now flatter the batch).
fn short_text(client: usize, i: u64) -> String {
    const FIRST: [&str; 16] = [
        "cat",
        "red boat",
        "dog",
        "old map",
        "tree",
        "blue house",
        "car",
        "bird",
        "lamp",
        "dirt road",
        "fish",
        "cake",
        "shoe",
        "full moon",
        "door",
        "king",
    ];
    format!("{} {}", FIRST[client % 16], i * 97 + client as u64)
}

/// Median milliseconds of nine calls of `f`.
fn median_ms(f: &mut dyn FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[4]
}

/// Image batch sizes the towers are timed at, alone.
const IMAGE_BATCHES: [usize; 2] = [1, 32];

/// The towers alone, in this process: milliseconds per pass and per query for one query and
/// for `clients` queries packed into one pass (what the server's batches cost without HTTP,
/// search and client threads), and images per second at batch 1 and 32. With `torch`, the
/// same token ids and preprocessed images through PyTorch / transformers (`torch_clip_bench.py`,
/// the same model files, same cores) right after, and the ratios.
fn tower_only(
    clients: usize,
    text_index: u64,
    model: &Path,
    work: &Path,
    torch: Option<&str>,
    device: &str,
) -> Result<()> {
    let choice: glimpse_embedder::DeviceChoice = device.parse()?;
    // Against our integer kernel, PyTorch's own: dynamic int8 Linear layers.
    let int8 = choice == glimpse_embedder::DeviceChoice::CpuInt8Dynamic;
    let (text, image) = in_memory_encoders(&TinyClipSpec::vit_b32(), choice)?;
    println!("\n## text tower alone (in process, no HTTP, {device}), median of 9 passes");
    let mut ids = serde_json::Map::new();
    let mut ours = Vec::new();
    for (name, make) in [
        ("short", short_text as fn(usize, u64) -> String),
        ("caption-like", text_query as fn(usize, u64) -> String),
    ] {
        let texts: Vec<String> = (0..clients).map(|c| make(c, text_index)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| text.tokenize(t)).collect();
        let tokens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let mut k = 0;
        let one = median_ms(&mut || {
            text.embed(&refs[k % refs.len()..][..1]).expect("embedding");
            k += 1;
        });
        let all = median_ms(&mut || {
            text.embed(&refs).expect("embedding");
        });
        ids.insert(name.to_string(), serde_json::json!(seqs));
        ours.push((
            name,
            tokens.iter().min().copied().unwrap_or(0),
            tokens.iter().max().copied().unwrap_or(0),
            one,
            all,
        ));
    }

    println!(
        "\n## image tower alone (preprocessed 224x224, in process, {device}), median of 9 passes"
    );
    let distinct: Vec<_> = (0..32)
        .map(|i| image.preprocess(&synthetic_jpeg(i)))
        .collect::<std::result::Result<_, _>>()?;
    let mut image_ours = Vec::new();
    for &b in &IMAGE_BATCHES {
        let imgs: Vec<_> = (0..b)
            .map(|i| distinct[i % distinct.len()].clone())
            .collect();
        image.embed(&imgs)?;
        let ms = median_ms(&mut || {
            image.embed(&imgs).expect("embedding");
        });
        image_ours.push((b, ms));
    }

    let theirs = match torch {
        Some(python) => Some(run_torch(python, model, work, &ids, &distinct, int8)?),
        None => None,
    };
    let torch_text =
        |name: &str, key: &str| -> Option<f64> { theirs.as_ref()?["text"][name][key].as_f64() };
    println!(
        "| queries | tokens per query | batch of 1: ms per query | batch of {clients}: ms per pass | ms per query | speed-up | PyTorch batch 1 / batch {clients}: ms per query | Glimpse / PyTorch throughput at batch {clients} |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, lo, hi, one, all) in ours {
        let t1 = torch_text(name, "batch1_ms_per_query");
        let tb = torch_text(name, "batch_ms_per_pass");
        let (torch_cols, ratio) = match (t1, tb) {
            (Some(t1), Some(tb)) => (
                format!("{t1:.1} / {:.2}", tb / clients as f64),
                format!("{:.2}x", tb / all),
            ),
            _ => ("-".to_string(), "-".to_string()),
        };
        println!(
            "| {name} | {lo}-{hi} | {one:.1} | {all:.1} | {:.2} | {:.2}x | {torch_cols} | {ratio} |",
            all / clients as f64,
            one * clients as f64 / all
        );
    }
    println!(
        "\n| image batch | Glimpse ms per batch | Glimpse images/s | PyTorch images/s | Glimpse / PyTorch |"
    );
    println!("|---|---|---|---|---|");
    for (b, ms) in image_ours {
        let ips = b as f64 / ms * 1e3;
        let t = theirs
            .as_ref()
            .and_then(|t| t["image"][b.to_string()]["images_per_s"].as_f64());
        let (tc, ratio) = match t {
            Some(t) => (format!("{t:.1}"), format!("{:.2}x", ips / t)),
            None => ("-".to_string(), "-".to_string()),
        };
        println!("| {b} | {ms:.1} | {ips:.1} | {tc} | {ratio} |");
    }
    if let Some(t) = &theirs {
        println!(
            "PyTorch {} ({} threads, {}), transformers CLIPModel {}, eager",
            t["torch"], t["threads"], t["cpu_capability"], t["precision"]
        );
    }
    Ok(())
}

/// Runs `torch_clip_bench.py` under `python` on the same token ids and preprocessed images.
fn run_torch(
    python: &str,
    model: &Path,
    work: &Path,
    ids: &serde_json::Map<String, serde_json::Value>,
    images: &[glimpse_embedder::PreprocessedImage],
    dynamic_int8: bool,
) -> Result<serde_json::Value> {
    let pixels = work.join("pixels.f32");
    let mut bytes = Vec::new();
    for img in images {
        for v in &img.pixels {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(&pixels, bytes)?;
    let request = work.join("torch-request.json");
    std::fs::write(
        &request,
        serde_json::to_vec(&serde_json::json!({
            "texts": ids,
            "pixels": pixels,
            "images": images.len(),
            "image_batches": IMAGE_BATCHES,
            "reps": 9,
        }))?,
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("torch_clip_bench.py");
    let out = Command::new(python)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--request")
        .arg(&request)
        .args(dynamic_int8.then_some("--dynamic-int8"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("starting {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status).into());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let last = line.lines().last().unwrap_or("");
    Ok(serde_json::from_str(last)?)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("query_batching_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let clients = flag_usize("--clients", 16);
    let text_secs = flag_usize("--text-secs", if quick { 4 } else { 15 });
    let image_secs = flag_usize("--image-secs", if quick { 6 } else { 20 });
    // `--windows 0,2,6`: the servers to compare, by batch window in ms; ratios are against
    // the first (by default the unbatched server against the default window).
    let windows: Vec<String> = flag_value("--windows")
        .unwrap_or_else(|| "0,2".to_string())
        .split(',')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    // `--workloads short,caption,image`: which searches to drive.
    let workloads = flag_value("--workloads").unwrap_or_else(|| "short,caption,image".into());
    let glimpse = match flag_value("--glimpse") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?.with_file_name("glimpse"),
    };
    if !glimpse.is_file() {
        return Err(format!(
            "no glimpse binary at {} (cargo build --release -p glimpse-server --bin glimpse, \
             or --glimpse PATH)",
            glimpse.display()
        )
        .into());
    }
    let work = tempfile::tempdir()?;
    // `--model-dir DIR`: write the model there once and reuse it in later runs.
    let model =
        flag_value("--model-dir").map_or_else(|| work.path().join("vit-b32"), PathBuf::from);
    let t = Instant::now();
    if !model.join("config.json").is_file() {
        write_tiny_clip(&model, &TinyClipSpec::vit_b32())?;
    }
    // `--device cpu-w8a8`: the servers' device (the towers-alone timings stay f32).
    let device = flag_value("--device").unwrap_or_else(|| "cpu".into());
    println!(
        "# query batching (ViT-B/32 shapes, formula weights, server --device {device}, {} CPUs, cache off, distinct queries)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("model written in {:.1} s", t.elapsed().as_secs_f64());
    let images: Arc<Vec<String>> = Arc::new(
        (0..64)
            .map(|i| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(synthetic_jpeg(i))
            })
            .collect(),
    );

    // `--text-index N`: the query index of the tower-alone texts (their numbers grow with it):
    // 3 gives 6-7 / 16-17 tokens; the HTTP clients' texts reach index ~150 in 12 s, where
    // short texts are 8-10 tokens and caption-like ones 12-22.
    let text_index = flag_usize("--text-index", 3) as u64;
    tower_only(
        clients,
        text_index,
        &model,
        work.path(),
        flag_value("--torch").as_deref(),
        &device,
    )?;
    if std::env::args().any(|a| a == "--tower-only") {
        return Ok(());
    }

    for (workload, name, secs) in [
        (
            Workload::ShortText,
            "short text (a word or two and a number)",
            text_secs,
        ),
        (
            Workload::Text,
            "caption-like text (12-22 tokens)",
            text_secs,
        ),
        (
            Workload::Image,
            "image (640x480 JPEG, image_base64)",
            image_secs,
        ),
    ] {
        let key = match workload {
            Workload::ShortText => "short",
            Workload::Text => "caption",
            Workload::Image => "image",
        };
        if !workloads.split(',').any(|w| w.trim() == key) {
            continue;
        }
        println!("\n## {name} searches, {secs} s per level");
        println!(
            "| server | clients | searches/s | p50 ms | p99 ms | mean batch | mean pass ms | tower busy | errors |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut results = Vec::new();
        for window in &windows {
            let label = if window == "0" {
                "unbatched (window 0)".to_string()
            } else {
                format!("batched (window {window} ms)")
            };
            let data = work.path().join(format!("data-{}-{window}", results.len()));
            let server = Server::start(&glimpse, &model, &data, &device, window)?;
            let mut levels = Vec::new();
            for n in [1, clients] {
                let warmup = Duration::from_secs(if workload == Workload::Image { 3 } else { 2 });
                let level = run_level(
                    &server,
                    workload,
                    n,
                    warmup,
                    Duration::from_secs(secs as u64),
                    &images,
                )?;
                println!(
                    "| {label} | {n} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.0} % | {} |",
                    level.qps,
                    level.p50,
                    level.p99,
                    level.mean_batch,
                    level.mean_pass_ms,
                    level.busy * 100.0,
                    level.errors
                );
                levels.push(level);
            }
            drop(server);
            results.push((window.clone(), levels));
        }
        // Ratios against the first window's levels (the unbatched server by default).
        let Some(((base_window, base), rest)) = results.split_first() else {
            return Err("no window measured".into());
        };
        let [u1, un] = &base[..] else {
            return Err("expected two levels".into());
        };
        for (window, levels) in rest {
            let [b1, bn] = &levels[..] else {
                return Err("expected two levels".into());
            };
            println!();
            println!("window {window} ms against window {base_window} ms:");
            println!(
                "batched, {clients} clients / unbatched, 1 client (searches/s): {:.2}x (goal >= 4x)",
                bn.qps / u1.qps
            );
            println!(
                "batched, {clients} clients / batched, 1 client (searches/s): {:.2}x",
                bn.qps / b1.qps
            );
            println!(
                "batched / unbatched at {clients} clients (searches/s): {:.2}x",
                bn.qps / un.qps
            );
            println!(
                "batched, {clients} clients p99 / unbatched, 1 client p50: {:.2}x (goal <= 3x); \
                 / batched 1-client p50: {:.2}x",
                bn.p99 / u1.p50,
                bn.p99 / b1.p50
            );
            println!(
                "batched / unbatched, 1 client p50: {:.2}x (the cost of batching for a lone client)",
                b1.p50 / u1.p50
            );
        }
        println!(
            "unbatched, {clients} clients p99 / 1 client p50: {:.2}x",
            un.p99 / u1.p50
        );
    }
    Ok(())
}
