//! Soak benchmark: N minutes of mixed load on ONE `glimpse serve` process that
//! this program starts itself, then goal checks.
//!
//! The server is the release binary (`--glimpse PATH`, else `$GLIMPSE_BIN`, else
//! `target/release/glimpse`), run as `serve --data-dir <tmp>/data --model none
//! --bind 127.0.0.1:<free port> --import-root <tmp>/import`; all traffic stays on
//! the loopback interface. Without a CLIP model text search is unavailable, so
//! every search is a vector search (`POST /v1/collections/soak/search {"vector"}`).
//!
//! Setup (not timed): a CLIP-like synthetic data set (`glimpse_index::synthetic`)
//! of `--initial` vectors (default 100,000, dim 512) is written as Parquet
//! shards in Glimpse's schema and bulk-loaded by path, and the soak starts once
//! its ANN index is built (`unindexed_rows == 0`). Then, until the deadline:
//!
//! * `--search-threads` clients (4) send vector searches (k = 10), paced to
//!   `--search-qps` in total (0 = back to back);
//! * one client upserts batches of `--upsert-batch` points at `--upsert-rate`
//!   batches/s, a `--new-fraction` of them new ids, the rest new versions of
//!   live ids;
//! * one client deletes live ids (one `DELETE` each, at most `--delete-rate`/s)
//!   whenever the collection holds more than `--initial` points, so the data
//!   set churns but does not grow;
//! * a bulk load of `--bulk-rows` rows (half new ids, half new versions) every
//!   `--bulk-every-s`, in the middle of each interval: a shard written with
//!   `glimpse_server::ingest::write_partition_atomic` and loaded with
//!   `POST .../bulk-load {"paths": [...]}`;
//! * a compaction (`POST .../compact`) every `--compact-every-s`.
//!
//! No two requests in flight touch the same id, so a client-side model of every
//! acknowledged write (id -> version or deleted) is exact. Vectors are rows of a
//! pool chosen by a hash of (id, version), so nothing but versions is kept.
//!
//! Every interval (`--interval-s`, 60 by default) prints search p50/p99, requests
//! done by kind, 5xx and other failures, and the server's RSS (`VmRSS` and
//! `RssAnon` of `/proc/<pid>/status`, at the interval's end and its peak), and
//! which background work (bulk load, compaction) overlapped it. At the end:
//!
//! * p99 of the last interval within 1.5x of the second's;
//! * RSS growth from the end of interval 2 to the end of the last under 10%;
//! * zero 5xx answers (soak, setup and verification alike);
//! * every acknowledged write present: `GET /v1/collections/soak/points/{id}` of
//!   every id the model knows (or, above `--verify-max`, every deleted id and a
//!   random sample of live ones, at least 2,000): a live id must come back with
//!   exactly the vector of its last acknowledged version, a deleted id with 404;
//!   the server's live count must equal the model's.
//!
//! Each check prints PASS/FAIL with its numbers; the program exits non-zero if
//! one fails. The per-interval numbers are plotted to an SVG (`--out`, default
//! `docs/img/soak.svg`; `--quick`: `target/soak-quick.svg`) with a CSV of the
//! same numbers beside it.
//!
//! `--quick` is the smoke check: 1 minute in 10-second intervals, 20,000
//! initial vectors, bulk loads of 1,000 rows every 10 s, a compaction at 30 s.
//!
//! Usage: `soak [--minutes 10] [--quick] [--glimpse PATH] [--out FILE.svg] ...`
//! (`soak --help` lists every flag).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use glimpse_benches::http::{HttpClient, HttpError, Response};
use glimpse_index::synthetic::{SyntheticSpec, generate};
use glimpse_server::ingest::{ShardRecord, ShardWriterOptions, write_partition_atomic};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const COLLECTION: &str = "soak";
const USAGE: &str = "usage: soak [--minutes 10] [--quick] [--glimpse PATH] [--interval-s 60] \
[--initial 100000] [--dim 512] [--search-threads 4] [--search-qps 200] [--upsert-batch 16] \
[--upsert-rate 8] [--new-fraction 0.25] [--delete-rate 100] [--bulk-every-s 60] \
[--bulk-rows 5000] [--compact-every-s 240] [--verify-max 250000] [--out docs/img/soak.svg] \
[--work-dir DIR] [--seed 7] [--keep]";

/// Largest ratio of the last interval's p99 to the second's.
const P99_RATIO_MAX: f64 = 1.5;
/// Largest RSS growth from the end of interval 2 to the end of the last.
const RSS_GROWTH_MAX: f64 = 0.10;
/// Fewest live ids checked when the model is sampled.
const MIN_LIVE_SAMPLE: usize = 2_000;

struct Args {
    minutes: f64,
    quick: bool,
    glimpse: PathBuf,
    interval: Duration,
    initial: usize,
    dim: usize,
    search_threads: usize,
    search_qps: f64,
    upsert_batch: usize,
    upsert_rate: f64,
    new_fraction: f64,
    delete_rate: f64,
    bulk_every: Duration,
    bulk_rows: usize,
    compact_every: Duration,
    verify_max: usize,
    out: PathBuf,
    work_dir: Option<PathBuf>,
    seed: u64,
    keep: bool,
}

fn parse_args() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let mut a = Args {
        minutes: if quick { 1.0 } else { 10.0 },
        quick,
        glimpse: std::env::var_os("GLIMPSE_BIN")
            .map_or_else(|| PathBuf::from("target/release/glimpse"), PathBuf::from),
        interval: Duration::from_secs(if quick { 10 } else { 60 }),
        initial: if quick { 20_000 } else { 100_000 },
        dim: 512,
        search_threads: 4,
        search_qps: 200.0,
        upsert_batch: 16,
        upsert_rate: 8.0,
        new_fraction: 0.25,
        delete_rate: 100.0,
        bulk_every: Duration::from_secs(if quick { 10 } else { 60 }),
        bulk_rows: if quick { 1_000 } else { 5_000 },
        compact_every: Duration::from_secs(if quick { 30 } else { 240 }),
        verify_max: 250_000,
        out: PathBuf::from(if quick {
            "target/soak-quick.svg"
        } else {
            "docs/img/soak.svg"
        }),
        work_dir: None,
        seed: 7,
        keep: false,
    };
    let mut it = argv.iter();
    let num = |key: &str, v: &str| -> Result<f64> {
        let x: f64 = v.parse().map_err(|e| format!("{key} {v}: {e}"))?;
        if !(x.is_finite() && x >= 0.0) {
            return Err(format!("{key} {v}: must be a non-negative number").into());
        }
        Ok(x)
    };
    let int = |key: &str, v: &str| -> Result<usize> {
        v.parse().map_err(|e| format!("{key} {v}: {e}").into())
    };
    while let Some(key) = it.next() {
        let key = key.as_str();
        match key {
            "--quick" => continue,
            "--keep" => {
                a.keep = true;
                continue;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => {}
        }
        let v = it
            .next()
            .ok_or_else(|| format!("missing value for {key}"))?
            .as_str();
        match key {
            "--minutes" => a.minutes = num(key, v)?,
            "--glimpse" => a.glimpse = PathBuf::from(v),
            "--interval-s" => a.interval = Duration::from_secs_f64(num(key, v)?),
            "--initial" => a.initial = int(key, v)?,
            "--dim" => a.dim = int(key, v)?,
            "--search-threads" => a.search_threads = int(key, v)?,
            "--search-qps" => a.search_qps = num(key, v)?,
            "--upsert-batch" => a.upsert_batch = int(key, v)?,
            "--upsert-rate" => a.upsert_rate = num(key, v)?,
            "--new-fraction" => a.new_fraction = num(key, v)?.min(1.0),
            "--delete-rate" => a.delete_rate = num(key, v)?,
            "--bulk-every-s" => a.bulk_every = Duration::from_secs_f64(num(key, v)?),
            "--bulk-rows" => a.bulk_rows = int(key, v)?,
            "--compact-every-s" => a.compact_every = Duration::from_secs_f64(num(key, v)?),
            "--verify-max" => a.verify_max = int(key, v)?,
            "--out" => a.out = PathBuf::from(v),
            "--work-dir" => a.work_dir = Some(PathBuf::from(v)),
            "--seed" => a.seed = int(key, v)? as u64,
            x => return Err(format!("unknown flag {x}\n{USAGE}").into()),
        }
    }
    if a.minutes <= 0.0 || a.interval.is_zero() {
        return Err("--minutes and --interval-s must be positive".into());
    }
    if a.initial == 0 || a.dim == 0 || a.search_threads == 0 {
        return Err("--initial, --dim and --search-threads must be positive".into());
    }
    Ok(a)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// The model of acknowledged writes.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Reserved as a new id, never acknowledged.
    Absent,
    /// Acknowledged by an upsert or a bulk load, not deleted since.
    Live,
    /// Acknowledged by a delete.
    Deleted,
    /// A write whose outcome is unknown (5xx or a transport error): not checked.
    Uncertain,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    state: State,
    /// Last acknowledged version (0 = the initial load's vector).
    version: u32,
    /// A request touching this id is in flight.
    busy: bool,
}

const NOT_LIVE: u32 = u32::MAX;

/// Ids are dense: `0..initial` are loaded first, new ids are handed out in order.
struct Model {
    entries: Vec<Entry>,
    live: Vec<u64>,
    pos: Vec<u32>,
}

impl Model {
    fn with_initial(n: usize) -> Self {
        Model {
            entries: vec![
                Entry {
                    state: State::Live,
                    version: 0,
                    busy: false,
                };
                n
            ],
            live: (0..n as u64).collect(),
            pos: (0..n as u32).collect(),
        }
    }

    fn live_len(&self) -> usize {
        self.live.len()
    }

    fn add_live(&mut self, id: u64) {
        if self.pos[id as usize] == NOT_LIVE {
            self.pos[id as usize] = self.live.len() as u32;
            self.live.push(id);
        }
    }

    fn remove_live(&mut self, id: u64) {
        let p = self.pos[id as usize];
        if p == NOT_LIVE {
            return;
        }
        self.live.swap_remove(p as usize);
        if let Some(&moved) = self.live.get(p as usize) {
            self.pos[moved as usize] = p;
        }
        self.pos[id as usize] = NOT_LIVE;
    }

    /// A random live id no request is touching, marked busy, with the version
    /// its next write will have.
    fn reserve_existing(&mut self, rng: &mut ChaCha8Rng) -> Option<(u64, u32)> {
        if self.live.is_empty() {
            return None;
        }
        for _ in 0..32 {
            let id = self.live[rng.random_range(0..self.live.len())];
            let e = &mut self.entries[id as usize];
            if !e.busy {
                e.busy = true;
                return Some((id, e.version + 1));
            }
        }
        None
    }

    /// A fresh id, marked busy; its first version is 1.
    fn reserve_new(&mut self) -> (u64, u32) {
        let id = self.entries.len() as u64;
        self.entries.push(Entry {
            state: State::Absent,
            version: 0,
            busy: true,
        });
        self.pos.push(NOT_LIVE);
        (id, 1)
    }

    /// The writes of `ids` (at the versions reserved) were acknowledged.
    fn upserted(&mut self, ids: &[(u64, u32)]) {
        for &(id, version) in ids {
            let e = &mut self.entries[id as usize];
            e.state = State::Live;
            e.version = version;
            e.busy = false;
            self.add_live(id);
        }
    }

    fn deleted(&mut self, id: u64) {
        let e = &mut self.entries[id as usize];
        e.state = State::Deleted;
        e.busy = false;
        self.remove_live(id);
    }

    /// The request failed cleanly (4xx: nothing changed).
    fn release(&mut self, ids: &[(u64, u32)]) {
        for &(id, _) in ids {
            self.entries[id as usize].busy = false;
        }
    }

    /// The request's outcome is unknown: never touched or checked again.
    fn uncertain(&mut self, ids: &[(u64, u32)]) {
        for &(id, _) in ids {
            let e = &mut self.entries[id as usize];
            e.state = State::Uncertain;
            e.busy = false;
            self.remove_live(id);
        }
    }
}

// ---------------------------------------------------------------------------
// Vectors.

/// The pool every written vector comes from: rows `0..initial` are the initial
/// load (id i, version 0 = row i), any row may be a later version.
struct Pool {
    dim: usize,
    rows: usize,
    vectors: Vec<f32>,
    seed: u64,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Pool {
    fn row_of(&self, id: u64, version: u32) -> usize {
        if version == 0 {
            id as usize
        } else {
            let h = splitmix64(self.seed ^ splitmix64(id) ^ (u64::from(version) << 48));
            (h % self.rows as u64) as usize
        }
    }

    fn vector(&self, id: u64, version: u32) -> &[f32] {
        let r = self.row_of(id, version);
        &self.vectors[r * self.dim..(r + 1) * self.dim]
    }
}

/// Appends `[x0,x1,...]`; Rust prints the shortest decimal that reads back as
/// the same `f32`, so the server stores exactly these values.
fn push_vector(out: &mut String, v: &[f32]) {
    out.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{x}");
    }
    out.push(']');
}

// ---------------------------------------------------------------------------
// Per-interval records.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Search = 0,
    Upsert = 1,
    Delete = 2,
    Bulk = 3,
    Compact = 4,
}

const KINDS: [&str; 5] = ["search", "upsert", "delete", "bulk", "compact"];

#[derive(Default, Clone)]
struct Bucket {
    search_us: Vec<u32>,
    done: [u64; 5],
    upsert_points: u64,
    bulk_rows: u64,
    e5xx: u64,
    other_errors: u64,
    bulk_busy: bool,
    compact_busy: bool,
    rss_kib: u64,
    rss_anon_kib: u64,
    rss_peak_kib: u64,
}

struct Recorder {
    t0: Instant,
    interval: Duration,
    buckets: Mutex<Vec<Bucket>>,
    first_errors: Mutex<Vec<String>>,
    /// 5xx outside the timed load (setup, verification).
    other_5xx: AtomicU64,
    /// Deletes of an acknowledged, live id answered 404.
    lost_on_delete: AtomicU64,
    compactions: Mutex<Vec<f64>>,
}

/// How a request ended.
enum Reply {
    Ok(Response),
    /// 4xx: the server refused it and changed nothing.
    Refused(u16, String),
    /// 5xx.
    ServerError(u16, String),
    /// No answer: the outcome is unknown.
    Transport(String),
}

fn classify(r: std::result::Result<Response, HttpError>) -> Reply {
    match r {
        Ok(resp) if (200..300).contains(&resp.status) => Reply::Ok(resp),
        Ok(resp) => {
            let msg = String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned();
            if resp.status >= 500 {
                Reply::ServerError(resp.status, msg)
            } else {
                Reply::Refused(resp.status, msg)
            }
        }
        Err(e) => Reply::Transport(e.to_string()),
    }
}

impl Recorder {
    fn new(t0: Instant, interval: Duration, n: usize) -> Self {
        Recorder {
            t0,
            interval,
            buckets: Mutex::new(vec![Bucket::default(); n]),
            first_errors: Mutex::new(Vec::new()),
            other_5xx: AtomicU64::new(0),
            lost_on_delete: AtomicU64::new(0),
            compactions: Mutex::new(Vec::new()),
        }
    }

    fn index(&self, t: Instant, n: usize) -> usize {
        let i = t.saturating_duration_since(self.t0).as_nanos() / self.interval.as_nanos().max(1);
        (i as usize).min(n.saturating_sub(1))
    }

    fn with_bucket(&self, done: Instant, f: impl FnOnce(&mut Bucket)) {
        let mut b = lock(&self.buckets);
        let n = b.len();
        let i = self.index(done, n);
        f(&mut b[i]);
    }

    /// A successful request of `kind` that finished at `done`.
    fn ok(&self, kind: Kind, done: Instant, latency: Duration, units: u64) {
        self.with_bucket(done, |b| {
            b.done[kind as usize] += 1;
            match kind {
                Kind::Search => b
                    .search_us
                    .push(latency.as_micros().min(u128::from(u32::MAX)) as u32),
                Kind::Upsert => b.upsert_points += units,
                Kind::Bulk => b.bulk_rows += units,
                Kind::Delete | Kind::Compact => {}
            }
        });
    }

    /// A failed request (5xx counted apart from the rest).
    fn failed(&self, kind: Kind, done: Instant, reply: &Reply) {
        let (is_5xx, what) = match reply {
            Reply::Ok(r) => (false, format!("unexpected status {}", r.status)),
            Reply::Refused(s, m) => (false, format!("{s}: {m}")),
            Reply::ServerError(s, m) => (true, format!("{s}: {m}")),
            Reply::Transport(e) => (false, format!("transport: {e}")),
        };
        self.with_bucket(done, |b| {
            if is_5xx {
                b.e5xx += 1;
            } else {
                b.other_errors += 1;
            }
        });
        self.note(format!("{} {what}", KINDS[kind as usize]));
    }

    fn note(&self, what: String) {
        let mut e = lock(&self.first_errors);
        if e.len() < 10 {
            e.push(what);
        }
    }

    /// Marks the intervals background work of `kind` overlapped.
    fn busy(&self, kind: Kind, from: Instant, to: Instant) {
        let mut b = lock(&self.buckets);
        let n = b.len();
        for bucket in &mut b[self.index(from, n)..=self.index(to, n)] {
            match kind {
                Kind::Bulk => bucket.bulk_busy = true,
                Kind::Compact => bucket.compact_busy = true,
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The server process.

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(bin: &Path, data: &Path, import: &Path, log: PathBuf) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--model", "none", "--bind", &bind, "--import-root"])
            .arg(import)
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
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = s.child.try_wait()? {
                return Err(format!("glimpse exited with {status}\n{}", s.log_tail()).into());
            }
            if let Ok(mut c) = HttpClient::new(&s.url, Duration::from_secs(5))
                && let Ok(r) = c.get("/readyz")
                && r.status == 200
            {
                return Ok(s);
            }
            if Instant::now() > until {
                return Err(format!("glimpse not ready after 120 s\n{}", s.log_tail()).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }

    /// SIGTERM, then SIGKILL after 60 s; returns how it ended.
    fn stop(&mut self) -> String {
        if let Ok(Some(s)) = self.child.try_wait() {
            return format!("had already exited ({s})");
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            let _ = self.child.kill();
            return "killed".into();
        };
        // SAFETY: kill(2) takes plain integers and touches no memory of this
        // process; `pid` is our own child, not yet reaped (try_wait above saw
        // it running), so the signal cannot reach a recycled pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return format!("stopped by SIGTERM ({s})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "did not stop within 60 s of SIGTERM; killed".into()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS`, `RssAnon` of a process in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

// ---------------------------------------------------------------------------
// Load.

struct Ctx {
    url: String,
    deadline: Instant,
    pool: Pool,
    model: Mutex<Model>,
    rec: Recorder,
    import: PathBuf,
    search_bodies: Vec<Vec<u8>>,
    target_live: usize,
}

fn coll_path(rest: &str) -> String {
    format!("/v1/collections/{COLLECTION}{rest}")
}

/// Sleeps until `t` or the deadline, whichever is first; false once the
/// deadline has passed.
fn sleep_until(t: Instant, deadline: Instant) -> bool {
    let now = Instant::now();
    let until = t.min(deadline);
    if until > now {
        std::thread::sleep(until - now);
    }
    Instant::now() < deadline
}

/// Paces a loop at `rate` per second (0 = no pacing), without catching up
/// after a slow request.
struct Pacer {
    period: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(rate: f64, start: Instant) -> Self {
        Pacer {
            period: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            next: start,
        }
    }

    fn wait(&mut self, deadline: Instant) -> bool {
        let Some(p) = self.period else {
            return Instant::now() < deadline;
        };
        self.next += p;
        let now = Instant::now();
        if self.next < now {
            self.next = now;
        }
        sleep_until(self.next, deadline)
    }
}

fn search_loop(ctx: &Ctx, worker: usize, qps: f64) -> Result<()> {
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(60))?;
    let path = coll_path("/search");
    let n = ctx.search_bodies.len();
    let mut i = worker * 7919 % n;
    let mut pace = Pacer::new(qps, Instant::now());
    while Instant::now() < ctx.deadline {
        let t = Instant::now();
        let r = classify(client.post(&path, "application/json", &ctx.search_bodies[i % n]));
        let done = Instant::now();
        i += 1;
        match r {
            Reply::Ok(_) => ctx.rec.ok(Kind::Search, done, done - t, 1),
            other => ctx.rec.failed(Kind::Search, done, &other),
        }
        if !pace.wait(ctx.deadline) {
            break;
        }
    }
    Ok(())
}

fn upsert_loop(ctx: &Ctx, batch: usize, rate: f64, new_fraction: f64, seed: u64) -> Result<()> {
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(120))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x75_7073);
    let path = coll_path("/points");
    let mut pace = Pacer::new(rate, Instant::now());
    while Instant::now() < ctx.deadline {
        let ids: Vec<(u64, u32)> = {
            let mut m = lock(&ctx.model);
            (0..batch)
                .filter_map(|_| {
                    if rng.random::<f64>() < new_fraction {
                        Some(m.reserve_new())
                    } else {
                        m.reserve_existing(&mut rng)
                    }
                })
                .collect()
        };
        if !ids.is_empty() {
            let mut body = String::with_capacity(ids.len() * ctx.pool.dim * 12 + 64);
            body.push_str("{\"points\":[");
            for (k, &(id, version)) in ids.iter().enumerate() {
                if k > 0 {
                    body.push(',');
                }
                let _ = write!(body, "{{\"id\":{id},\"vector\":");
                push_vector(&mut body, ctx.pool.vector(id, version));
                let _ = write!(body, ",\"metadata\":{{\"v\":{version}}}}}");
            }
            body.push_str("]}");
            let t = Instant::now();
            let r = classify(client.post(&path, "application/json", body.as_bytes()));
            let done = Instant::now();
            match r {
                Reply::Ok(_) => {
                    lock(&ctx.model).upserted(&ids);
                    ctx.rec.ok(Kind::Upsert, done, done - t, ids.len() as u64);
                }
                Reply::Refused(..) => {
                    lock(&ctx.model).release(&ids);
                    ctx.rec.failed(Kind::Upsert, done, &r);
                }
                _ => {
                    lock(&ctx.model).uncertain(&ids);
                    ctx.rec.failed(Kind::Upsert, done, &r);
                }
            }
        }
        if !pace.wait(ctx.deadline) {
            break;
        }
    }
    Ok(())
}

fn delete_loop(ctx: &Ctx, rate: f64, seed: u64) -> Result<()> {
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(120))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x64_656c);
    let mut pace = Pacer::new(rate, Instant::now());
    while Instant::now() < ctx.deadline {
        let pick = {
            let mut m = lock(&ctx.model);
            if m.live_len() > ctx.target_live {
                m.reserve_existing(&mut rng)
            } else {
                None
            }
        };
        let Some((id, _)) = pick else {
            if !sleep_until(Instant::now() + Duration::from_millis(20), ctx.deadline) {
                break;
            }
            continue;
        };
        let connects = client.connects;
        let t = Instant::now();
        let r = classify(client.delete(&coll_path(&format!("/points/{id}"))));
        let done = Instant::now();
        match r {
            Reply::Ok(_) => {
                lock(&ctx.model).deleted(id);
                ctx.rec.ok(Kind::Delete, done, done - t, 1);
            }
            Reply::Refused(404, _) if client.connects == connects => {
                // An acknowledged, live id the server does not know.
                ctx.rec.lost_on_delete.fetch_add(1, Ordering::Relaxed);
                ctx.rec
                    .note(format!("delete {id}: 404 for an acknowledged live id"));
                lock(&ctx.model).uncertain(&[(id, 0)]);
            }
            Reply::Refused(404, _) => {
                // Retried on a fresh connection: the first try may have deleted it.
                lock(&ctx.model).uncertain(&[(id, 0)]);
            }
            Reply::Refused(..) => {
                lock(&ctx.model).release(&[(id, 0)]);
                ctx.rec.failed(Kind::Delete, done, &r);
            }
            _ => {
                lock(&ctx.model).uncertain(&[(id, 0)]);
                ctx.rec.failed(Kind::Delete, done, &r);
            }
        }
        if !pace.wait(ctx.deadline) {
            break;
        }
    }
    Ok(())
}

fn bulk_loop(ctx: &Ctx, every: Duration, rows: usize, seed: u64) -> Result<()> {
    if every.is_zero() || rows == 0 {
        return Ok(());
    }
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(1200))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x62_756c);
    let path = coll_path("/bulk-load");
    let mut k = 0u32;
    loop {
        let at = ctx.rec.t0 + every / 2 + every * k;
        k += 1;
        if at >= ctx.deadline || !sleep_until(at, ctx.deadline) {
            break;
        }
        let ids: Vec<(u64, u32)> = {
            let mut m = lock(&ctx.model);
            (0..rows)
                .filter_map(|i| {
                    if i % 2 == 0 {
                        Some(m.reserve_new())
                    } else {
                        m.reserve_existing(&mut rng)
                    }
                })
                .collect()
        };
        let records: Vec<ShardRecord> = ids
            .iter()
            .map(|&(id, version)| ShardRecord {
                id: id as i64,
                image_path: None,
                vector: ctx.pool.vector(id, version).to_vec(),
                extra: BTreeMap::new(),
            })
            .collect();
        let name = format!("bulk-{k:04}.parquet");
        let file = match write_partition_atomic(
            &ctx.import,
            &name,
            &records,
            ShardWriterOptions::new("soak", ctx.pool.dim),
        ) {
            Ok(f) => f,
            Err(e) => {
                lock(&ctx.model).release(&ids);
                return Err(format!("writing {name}: {e}").into());
            }
        };
        drop(records);
        let body = serde_json::to_vec(&serde_json::json!({ "paths": [name] }))?;
        let t = Instant::now();
        let r = classify(client.post(&path, "application/json", &body));
        let done = Instant::now();
        ctx.rec.busy(Kind::Bulk, t, done);
        match &r {
            Reply::Ok(resp) => {
                let answered = serde_json::from_slice::<serde_json::Value>(&resp.body)
                    .ok()
                    .and_then(|v| v.get("rows").and_then(serde_json::Value::as_u64));
                if answered != Some(ids.len() as u64) {
                    ctx.rec.note(format!(
                        "bulk {name}: answered rows {answered:?}, sent {}",
                        ids.len()
                    ));
                }
                lock(&ctx.model).upserted(&ids);
                ctx.rec.ok(Kind::Bulk, done, done - t, ids.len() as u64);
            }
            Reply::Refused(..) => {
                lock(&ctx.model).release(&ids);
                ctx.rec.failed(Kind::Bulk, done, &r);
            }
            _ => {
                lock(&ctx.model).uncertain(&ids);
                ctx.rec.failed(Kind::Bulk, done, &r);
            }
        }
        let _ = std::fs::remove_file(&file);
    }
    Ok(())
}

fn compact_loop(ctx: &Ctx, every: Duration) -> Result<()> {
    if every.is_zero() {
        return Ok(());
    }
    let mut client = HttpClient::new(&ctx.url, Duration::from_secs(1800))?;
    let path = coll_path("/compact");
    let mut k = 1u32;
    loop {
        let at = ctx.rec.t0 + every * k;
        k += 1;
        if at >= ctx.deadline || !sleep_until(at, ctx.deadline) {
            break;
        }
        let t = Instant::now();
        let r = classify(client.post(&path, "application/json", b"{}"));
        let done = Instant::now();
        ctx.rec.busy(Kind::Compact, t, done);
        match r {
            Reply::Ok(_) => {
                ctx.rec.ok(Kind::Compact, done, done - t, 1);
                lock(&ctx.rec.compactions).push((done - t).as_secs_f64());
            }
            other => ctx.rec.failed(Kind::Compact, done, &other),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Setup and verification.

fn expect_ok(
    rec: &Recorder,
    what: &str,
    r: std::result::Result<Response, HttpError>,
) -> Result<serde_json::Value> {
    match classify(r) {
        Reply::Ok(resp) => Ok(serde_json::from_slice(&resp.body)?),
        Reply::ServerError(s, m) => {
            rec.other_5xx.fetch_add(1, Ordering::Relaxed);
            Err(format!("{what}: {s} {m}").into())
        }
        Reply::Refused(s, m) => Err(format!("{what}: {s} {m}").into()),
        Reply::Transport(e) => Err(format!("{what}: {e}").into()),
    }
}

fn describe(url: &str, rec: &Recorder) -> Result<serde_json::Value> {
    let mut c = HttpClient::new(url, Duration::from_secs(60))?;
    expect_ok(rec, "describe", c.get(&coll_path("")))
}

/// Creates the collection, bulk-loads the initial vectors and waits for their index.
fn initial_load(ctx: &Ctx, n: usize) -> Result<()> {
    let mut c = HttpClient::new(&ctx.url, Duration::from_secs(3600))?;
    let body = serde_json::json!({"name": COLLECTION, "dim": ctx.pool.dim, "metric": "cosine"});
    expect_ok(
        &ctx.rec,
        "create collection",
        c.post(
            "/v1/collections",
            "application/json",
            &serde_json::to_vec(&body)?,
        ),
    )?;
    let t = Instant::now();
    let dir = ctx.import.join("initial");
    std::fs::create_dir_all(&dir)?;
    let per_shard = 10_000;
    for (s, start) in (0..n).step_by(per_shard).enumerate() {
        let records: Vec<ShardRecord> = (start..(start + per_shard).min(n))
            .map(|id| ShardRecord {
                id: id as i64,
                image_path: None,
                vector: ctx.pool.vector(id as u64, 0).to_vec(),
                extra: BTreeMap::new(),
            })
            .collect();
        write_partition_atomic(
            &dir,
            &format!("part-{s:05}.parquet"),
            &records,
            ShardWriterOptions::new("soak", ctx.pool.dim),
        )?;
    }
    let wrote = t.elapsed();
    let t = Instant::now();
    let v = expect_ok(
        &ctx.rec,
        "initial bulk load",
        c.post(
            &coll_path("/bulk-load"),
            "application/json",
            br#"{"paths": ["initial"]}"#,
        ),
    )?;
    let loaded = t.elapsed();
    if v.get("rows").and_then(serde_json::Value::as_u64) != Some(n as u64) {
        return Err(format!("initial bulk load answered {v}, expected {n} rows").into());
    }
    std::fs::remove_dir_all(&dir)?;
    let t = Instant::now();
    loop {
        let d = describe(&ctx.url, &ctx.rec)?;
        if d.get("unindexed_rows").and_then(serde_json::Value::as_u64) == Some(0) {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            return Err(format!("index not built after 30 minutes: {d}").into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "# setup: {n} vectors written as Parquet in {:.1} s, bulk-loaded in {:.1} s, indexed {:.1} s later",
        wrote.as_secs_f64(),
        loaded.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Default)]
struct Verdict {
    live_checked: u64,
    deleted_checked: u64,
    missing: u64,
    wrong_vector: u64,
    resurrected: u64,
    errors: u64,
    first: Vec<String>,
}

/// GETs every id the model knows (or every deleted id and a sample of live
/// ones) and compares with the model.
fn verify(ctx: &Ctx, verify_max: usize, seed: u64) -> Result<(Verdict, usize, usize)> {
    let (mut live, deleted, uncertain) = {
        let m = lock(&ctx.model);
        let mut live = Vec::new();
        let mut deleted = Vec::new();
        let mut uncertain = 0usize;
        for (id, e) in m.entries.iter().enumerate() {
            match e.state {
                State::Live => live.push((id as u64, e.version)),
                State::Deleted => deleted.push(id as u64),
                State::Uncertain => uncertain += 1,
                State::Absent => {}
            }
        }
        (live, deleted, uncertain)
    };
    let live_total = live.len();
    if live.len() + deleted.len() > verify_max {
        let keep = verify_max
            .saturating_sub(deleted.len())
            .max(MIN_LIVE_SAMPLE)
            .min(live.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x76_6572);
        for i in 0..keep {
            let j = rng.random_range(i..live.len());
            live.swap(i, j);
        }
        live.truncate(keep);
    }
    let mut work: Vec<(u64, Option<u32>)> = live.iter().map(|&(id, v)| (id, Some(v))).collect();
    work.extend(deleted.iter().map(|&id| (id, None)));
    let threads = 4;
    let chunk = work.len().div_ceil(threads).max(1);
    let results: Vec<Result<Verdict>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> Result<Verdict> {
                    let mut c = HttpClient::new(&ctx.url, Duration::from_secs(60))?;
                    let mut v = Verdict::default();
                    for &(id, version) in part {
                        let r = c.get(&coll_path(&format!("/points/{id}")));
                        let problem = |v: &mut Verdict, what: String| {
                            if v.first.len() < 5 {
                                v.first.push(format!("id {id}: {what}"));
                            }
                        };
                        match (classify(r), version) {
                            (Reply::Ok(resp), Some(ver)) => {
                                v.live_checked += 1;
                                let got: serde_json::Value = serde_json::from_slice(&resp.body)?;
                                let want = ctx.pool.vector(id, ver);
                                let same = got
                                    .get("vector")
                                    .and_then(serde_json::Value::as_array)
                                    .is_some_and(|a| {
                                        a.len() == want.len()
                                            && a.iter().zip(want).all(|(g, w)| {
                                                g.as_f64()
                                                    .is_some_and(|g| (g as f32 - w).abs() <= 1e-6)
                                            })
                                    });
                                if !same {
                                    v.wrong_vector += 1;
                                    problem(&mut v, format!("not the vector of version {ver}"));
                                }
                            }
                            (Reply::Refused(404, _), Some(_)) => {
                                v.live_checked += 1;
                                v.missing += 1;
                                problem(&mut v, "acknowledged write missing (404)".into());
                            }
                            (Reply::Refused(404, _), None) => v.deleted_checked += 1,
                            (Reply::Ok(_), None) => {
                                v.deleted_checked += 1;
                                v.resurrected += 1;
                                problem(&mut v, "deleted but still found".into());
                            }
                            (other, _) => {
                                v.errors += 1;
                                if let Reply::ServerError(..) = other {
                                    ctx.rec.other_5xx.fetch_add(1, Ordering::Relaxed);
                                }
                                let what = match other {
                                    Reply::Refused(s, m) | Reply::ServerError(s, m) => {
                                        format!("{s} {m}")
                                    }
                                    Reply::Transport(e) => e,
                                    Reply::Ok(_) => String::new(),
                                };
                                problem(&mut v, what);
                            }
                        }
                    }
                    Ok(v)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a verify thread panicked".into()))
            })
            .collect()
    });
    let mut total = Verdict::default();
    for r in results {
        let v = r?;
        total.live_checked += v.live_checked;
        total.deleted_checked += v.deleted_checked;
        total.missing += v.missing;
        total.wrong_vector += v.wrong_vector;
        total.resurrected += v.resurrected;
        total.errors += v.errors;
        total.first.extend(v.first);
    }
    Ok((total, live_total, uncertain))
}

// ---------------------------------------------------------------------------
// Report.

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
}

/// One printed / plotted row.
struct Row {
    t_end_min: f64,
    p50: f64,
    p99: f64,
    b: Bucket,
}

fn row_of(i: usize, interval: Duration, b: &Bucket) -> Row {
    let mut lat = b.search_us.clone();
    lat.sort_unstable();
    Row {
        t_end_min: (i + 1) as f64 * interval.as_secs_f64() / 60.0,
        p50: percentile_ms(&lat, 0.5),
        p99: percentile_ms(&lat, 0.99),
        b: b.clone(),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_header() {
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>13} {:>7} {:>11} {:>7} {:>5} {:>5} {:>8} {:>8} {:>8}  background",
        "t min",
        "p50 ms",
        "p99 ms",
        "search",
        "upsert(pts)",
        "delete",
        "bulk(rows)",
        "compact",
        "5xx",
        "err",
        "RSS MiB",
        "anon",
        "peak"
    );
}

fn print_row(r: &Row) {
    let b = &r.b;
    let mut bg = Vec::new();
    if b.bulk_busy {
        bg.push("bulk-load");
    }
    if b.compact_busy {
        bg.push("compaction");
    }
    println!(
        "{:>6.2} {:>8.2} {:>8.2} {:>8} {:>13} {:>7} {:>11} {:>7} {:>5} {:>5} {:>8.0} {:>8.0} {:>8.0}  {}",
        r.t_end_min,
        r.p50,
        r.p99,
        b.done[Kind::Search as usize],
        format!("{}({})", b.done[Kind::Upsert as usize], b.upsert_points),
        b.done[Kind::Delete as usize],
        format!("{}({})", b.done[Kind::Bulk as usize], b.bulk_rows),
        b.done[Kind::Compact as usize],
        b.e5xx,
        b.other_errors,
        mib(b.rss_kib),
        mib(b.rss_anon_kib),
        mib(b.rss_peak_kib),
        bg.join("+")
    );
    let _ = std::io::stdout().flush();
}

fn write_csv(path: &Path, rows: &[Row]) -> Result<()> {
    let mut s = String::from(
        "interval,t_end_min,p50_ms,p99_ms,searches,upserts,upsert_points,deletes,bulk_loads,bulk_rows,compactions,http_5xx,other_errors,rss_mib,rss_anon_mib,rss_peak_mib,bulk_running,compaction_running\n",
    );
    for (i, r) in rows.iter().enumerate() {
        let b = &r.b;
        let _ = writeln!(
            s,
            "{},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{:.1},{},{}",
            i + 1,
            r.t_end_min,
            r.p50,
            r.p99,
            b.done[0],
            b.done[1],
            b.upsert_points,
            b.done[2],
            b.done[3],
            b.bulk_rows,
            b.done[4],
            b.e5xx,
            b.other_errors,
            mib(b.rss_kib),
            mib(b.rss_anon_kib),
            mib(b.rss_peak_kib),
            u8::from(b.bulk_busy),
            u8::from(b.compact_busy)
        );
    }
    std::fs::write(path, s)?;
    Ok(())
}

fn plot(path: &Path, rows: &[Row], title: &str) -> Result<()> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (top, bottom) = root.split_vertically(340);
    let x_max = rows.last().map_or(1.0, |r| r.t_end_min).max(1e-3);
    let finite = |x: f64| x.is_finite().then_some(x);

    let lat_max = rows
        .iter()
        .filter_map(|r| finite(r.p99))
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.15;
    let mut chart = ChartBuilder::on(&top)
        .caption("search latency per interval", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..lat_max)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("ms")
        .draw()?;
    for (name, color, pick) in [
        ("p50", BLUE, (|r: &Row| r.p50) as fn(&Row) -> f64),
        ("p99", RED, |r: &Row| r.p99),
    ] {
        chart
            .draw_series(
                LineSeries::new(
                    rows.iter()
                        .filter_map(|r| finite(pick(r)).map(|y| (r.t_end_min, y))),
                    color.stroke_width(2),
                )
                .point_size(3),
            )?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let rss_max = rows
        .iter()
        .map(|r| mib(r.b.rss_peak_kib.max(r.b.rss_kib)))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("server RSS per interval", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..rss_max)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("MiB")
        .draw()?;
    let green = RGBColor(0, 140, 60);
    let grey = RGBColor(120, 120, 120);
    for (name, color, pick) in [
        (
            "VmRSS (end)",
            green,
            (|r: &Row| mib(r.b.rss_kib)) as fn(&Row) -> f64,
        ),
        ("RssAnon (end)", BLUE, |r: &Row| mib(r.b.rss_anon_kib)),
        ("VmRSS (peak)", grey, |r: &Row| mib(r.b.rss_peak_kib)),
    ] {
        chart
            .draw_series(
                LineSeries::new(
                    rows.iter().map(|r| (r.t_end_min, pick(r))),
                    color.stroke_width(2),
                )
                .point_size(3),
            )?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------------------

fn main() {
    if let Err(e) = run() {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if !args.glimpse.is_file() {
        return Err(format!(
            "no glimpse binary at {} (build it with `cargo build --release -p glimpse-server \
             --bin glimpse`, then pass --glimpse PATH or set GLIMPSE_BIN)",
            args.glimpse.display()
        )
        .into());
    }
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let n_buckets = (total.as_secs_f64() / args.interval.as_secs_f64()).ceil() as usize;
    let n_buckets = n_buckets.max(1);

    let t = Instant::now();
    let pool_rows = args.initial + (args.initial / 5).max(10_000);
    let data = generate(&SyntheticSpec::clip_like(
        pool_rows, 1_000, args.dim, args.seed,
    ));
    let search_bodies: Vec<Vec<u8>> = (0..data.n_queries())
        .map(|i| {
            let mut s = String::from("{\"vector\":");
            push_vector(&mut s, data.query(i));
            s.push_str(",\"k\":10}");
            s.into_bytes()
        })
        .collect();
    let pool = Pool {
        dim: args.dim,
        rows: pool_rows,
        vectors: data.vectors,
        seed: args.seed,
    };
    println!(
        "# soak{}: {} min in {} intervals of {:.0} s; {} initial vectors of dim {}, pool of {} \
         generated in {:.1} s",
        if args.quick { " --quick" } else { "" },
        args.minutes,
        n_buckets,
        args.interval.as_secs_f64(),
        args.initial,
        args.dim,
        pool_rows,
        t.elapsed().as_secs_f64()
    );
    println!(
        "# load: {} search clients at {} queries/s in total (k=10), upserts of {} points at {}/s \
         ({:.0}% new ids), deletes up to {}/s keeping ~{} points, bulk loads of {} rows every \
         {:.0} s, compaction every {:.0} s",
        args.search_threads,
        if args.search_qps > 0.0 {
            format!("{:.0}", args.search_qps)
        } else {
            "unpaced".into()
        },
        args.upsert_batch,
        args.upsert_rate,
        args.new_fraction * 100.0,
        args.delete_rate,
        args.initial,
        args.bulk_rows,
        args.bulk_every.as_secs_f64(),
        args.compact_every.as_secs_f64()
    );
    println!(
        "# searches are vector searches only: text search needs a CLIP model and the server runs \
         with --model none"
    );

    let root = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("glimpse-soak-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new().prefix("glimpse-soak-").tempdir()?,
    };
    let data_dir = root.path().join("data");
    let import = root.path().join("import");
    std::fs::create_dir_all(&import)?;
    let mut server = Server::start(
        &args.glimpse,
        &data_dir,
        &import,
        root.path().join("server.log"),
    )?;
    println!(
        "# server: {} (pid {}), data in {}",
        server.url,
        server.pid(),
        root.path().display()
    );

    let setup_rec = Recorder::new(Instant::now(), args.interval, 1);
    let mut ctx = Ctx {
        url: server.url.clone(),
        deadline: Instant::now(),
        pool,
        model: Mutex::new(Model::with_initial(args.initial)),
        rec: setup_rec,
        import: import.clone(),
        search_bodies,
        target_live: args.initial,
    };
    if let Err(e) = initial_load(&ctx, args.initial) {
        return Err(format!("{e}\n{}", server.log_tail()).into());
    }
    let (rss0, anon0) = rss_kib(server.pid());
    println!(
        "# after setup: RSS {:.0} MiB (anon {:.0} MiB)",
        mib(rss0),
        mib(anon0)
    );
    let setup_5xx = ctx.rec.other_5xx.load(Ordering::Relaxed);

    let t0 = Instant::now();
    ctx.deadline = t0 + total;
    ctx.rec = Recorder::new(t0, args.interval, n_buckets);
    ctx.rec.other_5xx.store(setup_5xx, Ordering::Relaxed);
    print_header();

    let mut rows: Vec<Row> = Vec::with_capacity(n_buckets);
    let pid = server.pid();
    let thread_result = std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        let per_thread = args.search_qps / args.search_threads as f64;
        for w in 0..args.search_threads {
            let ctx = &ctx;
            handles.push(s.spawn(move || search_loop(ctx, w, per_thread)));
        }
        {
            let ctx = &ctx;
            let (b, r, f, seed) = (
                args.upsert_batch,
                args.upsert_rate,
                args.new_fraction,
                args.seed,
            );
            handles.push(s.spawn(move || upsert_loop(ctx, b, r, f, seed)));
            let dr = args.delete_rate;
            handles.push(s.spawn(move || delete_loop(ctx, dr, seed)));
            let (every, n) = (args.bulk_every, args.bulk_rows);
            handles.push(s.spawn(move || bulk_loop(ctx, every, n, seed)));
            let every = args.compact_every;
            handles.push(s.spawn(move || compact_loop(ctx, every)));
        }

        // Sample RSS every second; print each interval once it is over (the
        // last one after every client has stopped).
        for i in 0..n_buckets {
            let end = (t0 + args.interval * (i as u32 + 1)).min(ctx.deadline);
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                std::thread::sleep((end - now).min(Duration::from_secs(1)));
                let (rss, _) = rss_kib(pid);
                let mut b = lock(&ctx.rec.buckets);
                let k = ctx.rec.index(Instant::now(), n_buckets);
                b[k].rss_peak_kib = b[k].rss_peak_kib.max(rss);
            }
            let (rss, anon) = rss_kib(pid);
            {
                let mut b = lock(&ctx.rec.buckets);
                b[i].rss_kib = rss;
                b[i].rss_anon_kib = anon;
                b[i].rss_peak_kib = b[i].rss_peak_kib.max(rss);
            }
            if i + 1 < n_buckets {
                let b = lock(&ctx.rec.buckets)[i].clone();
                let r = row_of(i, args.interval, &b);
                print_row(&r);
                rows.push(r);
            }
        }
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert_with(|| "a load thread panicked".into());
                }
            }
        }
        let b = lock(&ctx.rec.buckets)[n_buckets - 1].clone();
        let r = row_of(n_buckets - 1, args.interval, &b);
        print_row(&r);
        rows.push(r);
        first_err.map_or(Ok(()), Err)
    });
    let ended = t0.elapsed();
    if let Err(e) = thread_result {
        eprintln!("# a load thread stopped early: {e}");
    }
    println!(
        "# load ran {:.1} s (the deadline was {:.1} s; work in flight then finished first)",
        ended.as_secs_f64(),
        total.as_secs_f64()
    );
    for c in lock(&ctx.rec.compactions).iter() {
        println!("# compaction took {c:.1} s");
    }
    for e in lock(&ctx.rec.first_errors).iter() {
        println!("# error: {e}");
    }

    // Totals.
    let mut sum = Bucket::default();
    for r in &rows {
        for k in 0..5 {
            sum.done[k] += r.b.done[k];
        }
        sum.upsert_points += r.b.upsert_points;
        sum.bulk_rows += r.b.bulk_rows;
        sum.e5xx += r.b.e5xx;
        sum.other_errors += r.b.other_errors;
    }
    println!(
        "# totals: {} searches, {} upserts ({} points), {} deletes, {} bulk loads ({} rows), {} \
         compactions, {} 5xx, {} other failures",
        sum.done[0],
        sum.done[1],
        sum.upsert_points,
        sum.done[2],
        sum.done[3],
        sum.bulk_rows,
        sum.done[4],
        sum.e5xx,
        sum.other_errors
    );

    let t = Instant::now();
    let verified = verify(&ctx, args.verify_max, args.seed);
    let verify_secs = t.elapsed().as_secs_f64();
    let described = describe(&ctx.url, &ctx.rec);
    let stopped = server.stop();
    println!("# server {stopped}");

    // The plot and its numbers.
    if let Some(dir) = args.out.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let title = format!(
        "Glimpse soak: {} vectors (dim {}), {} search clients, upserts + deletes + bulk loads + compaction",
        args.initial, args.dim, args.search_threads
    );
    match plot(&args.out, &rows, &title) {
        Ok(()) => println!("# plot: {}", args.out.display()),
        Err(e) => eprintln!("# plot failed: {e}"),
    }
    let csv = args.out.with_extension("csv");
    write_csv(&csv, &rows)?;
    println!("# numbers: {}", csv.display());

    // Checks.
    let mut failed = 0;
    let mut check = |ok: bool, name: &str, detail: String| {
        println!("{} {name}: {detail}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failed += 1;
        }
    };
    println!("# goal checks");
    if rows.len() >= 2 {
        let (second, last) = (&rows[1], &rows[rows.len() - 1]);
        let ratio = last.p99 / second.p99;
        check(
            ratio.is_finite() && ratio <= P99_RATIO_MAX,
            "p99 stable",
            format!(
                "last interval p99 {:.2} ms / second interval p99 {:.2} ms = {ratio:.2} (limit {P99_RATIO_MAX})",
                last.p99, second.p99
            ),
        );
        let (a, b) = (second.b.rss_kib as f64, last.b.rss_kib as f64);
        let growth = (b - a) / a.max(1.0);
        check(
            growth < RSS_GROWTH_MAX,
            "RSS growth after warm-up",
            format!(
                "{:.0} MiB at the end of interval 2 -> {:.0} MiB at the end = {:+.1}% (limit {:.0}%; anon {:.0} -> {:.0} MiB)",
                mib(second.b.rss_kib),
                mib(last.b.rss_kib),
                growth * 100.0,
                RSS_GROWTH_MAX * 100.0,
                mib(second.b.rss_anon_kib),
                mib(last.b.rss_anon_kib)
            ),
        );
    } else {
        println!("SKIP p99 stable / RSS growth: needs at least 2 intervals");
    }
    let other_5xx = ctx.rec.other_5xx.load(Ordering::Relaxed);
    check(
        sum.e5xx + other_5xx == 0,
        "zero 5xx",
        format!(
            "{} during the load, {other_5xx} during setup and verification",
            sum.e5xx
        ),
    );
    match (verified, described) {
        (Ok((v, live_total, uncertain)), Ok(d)) => {
            let server_count = d.get("count").and_then(serde_json::Value::as_u64);
            let lost = ctx.rec.lost_on_delete.load(Ordering::Relaxed);
            let count_ok = if uncertain == 0 {
                server_count == Some(live_total as u64)
            } else {
                server_count
                    .is_some_and(|c| c >= live_total as u64 && c <= (live_total + uncertain) as u64)
            };
            let ok = v.missing == 0
                && v.wrong_vector == 0
                && v.resurrected == 0
                && v.errors == 0
                && lost == 0
                && count_ok;
            check(
                ok,
                "acknowledged writes present",
                format!(
                    "GET {} live ids (of {live_total}) and {} deleted ids in {verify_secs:.1} s: \
                     {} missing, {} with a wrong vector, {} deleted but found, {} errors; {lost} \
                     deletes of live ids answered 404; server count {} vs model {live_total}{}",
                    v.live_checked,
                    v.deleted_checked,
                    v.missing,
                    v.wrong_vector,
                    v.resurrected,
                    v.errors,
                    server_count.map_or("?".into(), |c| c.to_string()),
                    if uncertain > 0 {
                        format!(" (+ up to {uncertain} ids whose write had no clear answer)")
                    } else {
                        String::new()
                    }
                ),
            );
            for p in &v.first {
                println!("#   {p}");
            }
            if let Some(segments) = d.get("segments") {
                println!(
                    "# final collection: {} points in {segments} segments",
                    server_count.unwrap_or(0)
                );
            }
        }
        (Err(e), _) | (_, Err(e)) => check(
            false,
            "acknowledged writes present",
            format!("verification failed: {e}"),
        ),
    }

    if args.keep {
        let kept = root.keep();
        println!("# kept {}", kept.display());
    }
    if failed > 0 {
        return Err(format!("{failed} goal check(s) failed").into());
    }
    println!("# all goal checks passed");
    Ok(())
}
