//! Crash safety of `glimpse embed`: the real binary is killed with SIGKILL after its first
//! partition appears; a rerun of the same command completes the run, and the result is the
//! same rows (ids and embeddings, bit for bit) as an uninterrupted run.

#![allow(clippy::unwrap_used)]

mod embed_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use embed_support::*;

fn glimpse_embed(model: &Path, images: &Path, out: &Path, pause_ms: Option<u64>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glimpse"));
    c.args([
        "embed",
        "--device",
        "cpu",
        "--progress",
        "log",
        "--partition-size",
        "4",
        "--batch-size",
        "3",
    ])
    .arg("--model")
    .arg(model)
    .arg("--images")
    .arg(images)
    .arg("--out")
    .arg(out)
    .args(["--start", "2", "--end", "38"])
    .env_remove("START_IDX")
    .env_remove("END_IDX")
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(ms) = pause_ms {
        c.arg("--pause-after-partition-ms").arg(ms.to_string());
    }
    c
}

#[test]
fn sigkill_mid_run_then_rerun_equals_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let images = tmp.path().join("images");
    write_image_folder(&images, 40);

    // Reference: one uninterrupted run.
    let reference = tmp.path().join("reference");
    let o = glimpse_embed(&model, &images, &reference, None)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("Saved partition 0 to") && log.contains("with 3 rows"),
        "{log}"
    );
    let want = read_all_rows(&reference);
    assert_eq!(want.len() + failed_ids(&reference).len(), 36);

    // Interrupted: kill as soon as the first partition exists; the pause makes sure the
    // process is still mid-run then.
    let out = tmp.path().join("out");
    let mut child = glimpse_embed(&model, &images, &out, Some(300))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if out.exists() && !partition_dirs(&out).is_empty() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited before its first partition"
        );
        assert!(Instant::now() < deadline, "no partition appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    let done = partition_dirs(&out).len();
    assert!(
        (1..9).contains(&done),
        "{done} of 9 partitions before the kill"
    );

    let o = glimpse_embed(&model, &images, &out, None).output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert_eq!(partition_dirs(&out).len(), 9);
    let got = read_all_rows(&out);
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        want.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    assert_eq!(got, want, "same rows, bit-identical embeddings");
    assert_eq!(failed_ids(&out), failed_ids(&reference));
    assert!(
        std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );
}

#[test]
fn cli_reports_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let images = tmp.path().join("images");
    write_image_folder(&images, 5);
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["embed", "--device", "cpu", "--end", "99"])
        .arg("--model")
        .arg(&model)
        .arg("--images")
        .arg(&images)
        .arg("--out")
        .arg(&out)
        .env_remove("START_IDX")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--end 99 is past the end of the input, which has 5 items"),
        "{err}"
    );
    // Exactly one input is required.
    let o = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["embed", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    // The launcher prints one job per slice.
    let o = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args([
            "sky-launch",
            "--start",
            "0",
            "--end",
            "1000000",
            "--jobs",
            "100",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100);
    assert!(
        lines[0].starts_with("sky jobs launch")
            && lines[0].contains("START_IDX=0 --env END_IDX=10000")
    );
    assert!(lines[99].contains("START_IDX=990000 --env END_IDX=1000000"));
}
