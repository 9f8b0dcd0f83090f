//! Crash recovery under SIGKILL: the test re-runs its own binary as a child
//! that writes (upserts, deletes, bulk loads, with background flushes and
//! compactions) and prints an ack for each acknowledged write; the parent
//! kills it at random moments and checks, after every restart, that every
//! acknowledged write is there with its exact vector, that no bulk load is
//! partly visible, and that open never fails.
//!
//! `GLIMPSE_CRASH_ITERS` sets the number of kills (default 20) for a soak.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{point, vec_for};
use glimpse_storage::{CompactionOptions, MetaValue, Metric, Store, StoreOptions};
use rand::{Rng, SeedableRng};

const ENV_DIR: &str = "GLIMPSE_CRASH_CHILD_DIR";
const ENV_ITER: &str = "GLIMPSE_CRASH_ITER";
const DIM: usize = 16;
const BULK: usize = 300;
const SHARED: u64 = 40;

fn opts() -> StoreOptions {
    StoreOptions {
        memtable_flush_rows: 150,
        wal_segment_bytes: 32 << 10,
        compaction: CompactionOptions {
            min_merge: 3,
            ..CompactionOptions::default()
        },
        ..StoreOptions::default()
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let iter: u64 = std::env::var(ENV_ITER).unwrap().parse().unwrap();
    let store = Arc::new(Store::open(Path::new(&dir), opts()).unwrap());
    let c = store.create_collection("crash", DIM, Metric::L2).unwrap();
    say("STARTED");
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let c = c.clone();
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(iter * 100 + t);
                let mut n = 0u64;
                let mut mine = Vec::new();
                loop {
                    n += 1;
                    let version = iter * 1_000_000 + n;
                    let size = rng.random_range(1..12);
                    let mut batch = Vec::new();
                    for j in 0..size {
                        let id = if j % 3 == 0 {
                            format!("shared-{t}-{}", rng.random_range(0..SHARED))
                        } else {
                            format!("u{iter}-{t}-{n}-{j}")
                        };
                        batch.push(point(&id, version, DIM));
                    }
                    let ids: Vec<String> = batch.iter().map(|p| p.id.clone()).collect();
                    c.upsert(batch).unwrap();
                    for id in &ids {
                        say(&format!("ACK U {id} {version}"));
                        if id.starts_with('u') {
                            mine.push(id.clone());
                        }
                    }
                    if n.is_multiple_of(7) && !mine.is_empty() {
                        let victim = mine.swap_remove(rng.random_range(0..mine.len()));
                        say(&format!("TRY D {victim}"));
                        c.delete(std::slice::from_ref(&victim)).unwrap();
                        say(&format!("ACK D {victim}"));
                    }
                }
            });
        }
        let c = c.clone();
        s.spawn(move || {
            for k in 0.. {
                let mut w = c.bulk_writer().unwrap();
                for i in 0..BULK {
                    w.push(point(&format!("b{iter}-{k}-{i}"), 7, DIM)).unwrap();
                }
                say(&format!("TRY B b{iter}-{k}"));
                w.commit().unwrap();
                say(&format!("ACK B b{iter}-{k}"));
                std::thread::sleep(Duration::from_millis(30));
            }
        });
    });
}

#[derive(Default)]
struct Expect {
    /// Highest acknowledged version of each upserted id.
    upserts: HashMap<String, u64>,
    deleted: HashSet<String>,
    maybe_deleted: HashSet<String>,
    bulks: HashSet<String>,
    maybe_bulks: HashSet<String>,
}

impl Expect {
    fn absorb(&mut self, line: &str) {
        // The first line may follow libtest's "test crash_child ... " prefix.
        let line = ["ACK ", "TRY "]
            .iter()
            .filter_map(|m| line.find(m))
            .min()
            .map_or(line, |i| &line[i..]);
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["ACK", "U", id, v] => {
                let v: u64 = v.parse().unwrap();
                let e = self.upserts.entry(id.to_string()).or_insert(0);
                *e = (*e).max(v);
            }
            ["TRY", "D", id] => {
                self.maybe_deleted.insert(id.to_string());
            }
            ["ACK", "D", id] => {
                self.deleted.insert(id.to_string());
            }
            ["TRY", "B", b] => {
                self.maybe_bulks.insert(b.to_string());
            }
            ["ACK", "B", b] => {
                self.bulks.insert(b.to_string());
            }
            _ => {}
        }
    }

    fn check(&self, dir: &Path) -> (usize, usize) {
        let store =
            Store::open(dir, opts()).unwrap_or_else(|e| panic!("open after SIGKILL failed: {e}"));
        let c = store.collection("crash").unwrap();
        for (id, &acked) in &self.upserts {
            let got = c.get(id);
            if self.deleted.contains(id) {
                assert!(got.is_none(), "acknowledged delete of {id} lost");
                continue;
            }
            let Some(p) = got else {
                assert!(
                    self.maybe_deleted.contains(id),
                    "acknowledged write of {id} (v{acked}) lost"
                );
                continue;
            };
            let Some(MetaValue::Int(v)) = p.metadata.get("version") else {
                panic!("{id} lost its metadata")
            };
            let v = *v as u64;
            assert!(v >= acked, "{id}: found v{v}, acknowledged v{acked}");
            assert_eq!(
                p.vector,
                vec_for(id, v, DIM),
                "{id}: vector differs from the one written"
            );
            assert_eq!(p, point(id, v, DIM));
        }
        let mut complete = 0;
        for b in self.maybe_bulks.iter().chain(&self.bulks) {
            let present = (0..BULK)
                .filter(|i| c.get(&format!("{b}-{i}")).is_some())
                .count();
            assert!(
                present == 0 || present == BULK,
                "bulk {b} partly visible: {present}/{BULK}"
            );
            if self.bulks.contains(b) {
                assert_eq!(present, BULK, "acknowledged bulk {b} lost");
            }
            complete += (present == BULK) as usize;
        }
        (self.upserts.len(), complete)
    }
}

#[test]
fn crash_recovery_under_sigkill() {
    let iters: u64 = std::env::var("GLIMPSE_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut expect = Expect::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for iter in 0..iters {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, dir.path())
            .env(ENV_ITER, iter.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            })
        };
        let t0 = Instant::now();
        while !lines.lock().unwrap().iter().any(|l| l.ends_with("STARTED")) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "child never started"
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "child exited early with {status}: {:?}",
                    lines.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(10..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        for l in lines.lock().unwrap().iter() {
            expect.absorb(l);
        }
        let (ids, bulks) = expect.check(dir.path());
        eprintln!("iteration {iter}: {ids} ids and {bulks} bulks verified");
    }
    assert!(!expect.upserts.is_empty());
}
