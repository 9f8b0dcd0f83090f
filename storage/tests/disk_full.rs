//! A write that hits a file-size limit (RLIMIT_FSIZE in a child process,
//! SIGXFSZ ignored) returns an error, and the store reopens with every
//! acknowledged write.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::Command;

use common::point;
use glimpse_storage::{Metric, Store, StoreOptions};

const ENV: &str = "GLIMPSE_DISK_FULL_CHILD_DIR";
const DIM: usize = 64;

fn opts() -> StoreOptions {
    StoreOptions {
        memtable_flush_rows: 1_000_000,
        ..StoreOptions::default()
    }
}

#[test]
fn disk_full_child() {
    let Ok(dir) = std::env::var(ENV) else { return };
    let store = Store::open(std::path::Path::new(&dir), opts()).unwrap();
    let c = store.create_collection("c", DIM, Metric::Cosine).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..20 {
        c.upsert(vec![point(&format!("a{i}"), 1, DIM)]).unwrap();
        writeln!(out, "ACK a{i}").unwrap();
    }
    out.flush().unwrap();
    let wal = std::path::Path::new(&dir).join("collections/c/wal");
    let size: u64 = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    // SAFETY: plain libc calls on this (child) process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: size + 1500,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let mut failed = 0;
    for i in 0..100 {
        match c.upsert(vec![point(&format!("b{i}"), 1, DIM)]) {
            Ok(_) => writeln!(out, "ACK b{i}").unwrap(),
            Err(e) => {
                writeln!(out, "ERR {e}").unwrap();
                failed += 1;
                if failed == 3 {
                    break;
                }
            }
        }
        out.flush().unwrap();
    }
    writeln!(out, "DONE {failed}").unwrap();
    out.flush().unwrap();
}

#[test]
fn write_error_is_reported_and_store_stays_openable() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "disk_full_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("DONE 3"), "no write failed: {stdout}");
    assert!(stdout.contains("ERR I/O error on"), "{stdout}");
    // The first line may follow libtest's "test ... " prefix.
    let acked: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("ACK ").map(|(_, id)| id))
        .collect();
    assert!(acked.len() >= 20);
    let store = Store::open(dir.path(), opts()).unwrap();
    let c = store.collection("c").unwrap();
    for id in &acked {
        assert_eq!(c.get(id).unwrap(), point(id, 1, DIM), "{id}");
    }
    assert_eq!(c.len() as usize, acked.len());
    // And the store accepts writes again once space is back.
    c.upsert(vec![point("later", 1, DIM)]).unwrap();
}
