//! Torn writes and bit flips: the WAL and segment files detect damage and
//! never serve damaged bytes as data.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::point;
use glimpse_storage::{Metric, StorageError, Store, StoreOptions, VerifyPolicy, dump_wal};

const DIM: usize = 4;

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else if e.file_name() != "LOCK" {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn wal_dir(root: &Path) -> PathBuf {
    root.join("collections/c/wal")
}

/// A closed store with five single-point WAL records (ids r0..r4).
fn store_with_five_records() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let c = store.create_collection("c", DIM, Metric::L2).unwrap();
    for i in 0..5 {
        c.upsert(vec![point(&format!("r{i}"), 1, DIM)]).unwrap();
    }
    store.close().unwrap();
    dir
}

#[test]
fn torn_last_record_is_truncated_at_every_offset() {
    let pristine = store_with_five_records();
    let records = dump_wal(&wal_dir(pristine.path())).unwrap();
    assert_eq!(records.len(), 5);
    let last = records.last().unwrap().clone();
    let len = fs::metadata(&last.file).unwrap().len();
    let rel = last
        .file
        .strip_prefix(pristine.path())
        .unwrap()
        .to_path_buf();
    for cut in last.offset..len {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let f = fs::OpenOptions::new()
            .write(true)
            .open(work.path().join(&rel))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let store = Store::open(work.path(), StoreOptions::default())
            .unwrap_or_else(|e| panic!("open failed with the WAL cut at {cut}: {e}"));
        let c = store.collection("c").unwrap();
        for i in 0..4 {
            assert_eq!(
                c.get(&format!("r{i}")).unwrap(),
                point(&format!("r{i}"), 1, DIM),
                "cut {cut}"
            );
        }
        assert!(c.get("r4").is_none(), "cut {cut}");
        // The log continues cleanly after the truncation point.
        c.upsert(vec![point("after", 2, DIM)]).unwrap();
        drop(c);
        drop(store);
        let store = Store::open(work.path(), StoreOptions::default()).unwrap();
        let c = store.collection("c").unwrap();
        assert_eq!(c.get("after").unwrap(), point("after", 2, DIM));
        assert_eq!(c.len(), 5);
    }
}

#[test]
fn bit_flip_before_the_tail_refuses_to_open() {
    let pristine = store_with_five_records();
    let records = dump_wal(&wal_dir(pristine.path())).unwrap();
    let first = &records[0];
    let rel = first
        .file
        .strip_prefix(pristine.path())
        .unwrap()
        .to_path_buf();
    let end = records[1].offset;
    for at in (0..end).filter(|&o| o < 16 || o >= first.offset) {
        let work = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), work.path());
        let p = work.path().join(&rel);
        let mut bytes = fs::read(&p).unwrap();
        bytes[at as usize] ^= 0x10;
        fs::write(&p, &bytes).unwrap();
        match Store::open(work.path(), StoreOptions::default()) {
            Err(StorageError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, p, "flip at {at}");
                assert!(offset <= at, "flip at {at} reported at {offset}");
            }
            Err(e) => panic!("flip at {at}: unexpected error {e}"),
            Ok(_) => panic!("flip at {at}: opened a corrupt WAL"),
        }
        // Salvage opens, dropping what it cannot trust, and never invents data.
        let opts = StoreOptions {
            salvage: true,
            ..StoreOptions::default()
        };
        let store = Store::open(work.path(), opts).unwrap();
        let c = store.collection("c").unwrap();
        for i in 0..5 {
            if let Some(p) = c.get(&format!("r{i}")) {
                assert_eq!(p, point(&format!("r{i}"), 1, DIM));
            }
        }
    }
}

/// A closed store whose only segment holds 50 points (with blobs).
fn store_with_segment() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let c = store.create_collection("c", DIM, Metric::L2).unwrap();
    c.upsert((0..50).map(|i| point(&format!("s{i}"), 3, DIM)).collect())
        .unwrap();
    c.flush().unwrap();
    c.delete(&["s1".into()]).unwrap();
    c.flush().unwrap();
    store.close().unwrap();
    dir
}

fn segment_dir(root: &Path) -> PathBuf {
    let cdir = root.join("collections/c");
    fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap()
}

#[test]
fn bit_flip_in_any_segment_file_is_detected_at_open() {
    let pristine = store_with_segment();
    let seg = segment_dir(pristine.path());
    let mut names: Vec<String> = fs::read_dir(&seg)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.push("../MANIFEST".into());
    names.sort();
    assert!(names.iter().any(|n| n.starts_with("del-")), "{names:?}");
    assert!(names.contains(&"blobs.bin".to_string()), "{names:?}");
    for name in &names {
        let len = fs::metadata(seg.join(name)).unwrap().len() as usize;
        for at in [0, len / 2, len - 1] {
            let work = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), work.path());
            let p = segment_dir(work.path()).join(name);
            let mut bytes = fs::read(&p).unwrap();
            bytes[at] ^= 0x01;
            fs::write(&p, &bytes).unwrap();
            let r = Store::open(work.path(), StoreOptions::default());
            assert!(r.is_err(), "flip in {name} at {at} was not detected");
        }
    }
}

#[test]
fn large_files_verified_later_are_never_served_once_found_bad() {
    let pristine = store_with_segment();
    let seg = segment_dir(pristine.path());
    let p = seg.join("vectors.f32");
    let mut bytes = fs::read(&p).unwrap();
    bytes[17] ^= 0x40;
    fs::write(&p, &bytes).unwrap();
    let lazy = StoreOptions {
        verify: VerifyPolicy {
            max_bytes_at_open: 0,
            background: false,
        },
        ..StoreOptions::default()
    };
    let store = Store::open(pristine.path(), lazy).unwrap();
    let c = store.collection("c").unwrap();
    let e = c.verify().unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
    assert_eq!(c.stats().quarantined_segments, 1);
    assert!(c.get("s2").is_none());
    let hits = c
        .search(
            &[0.0; DIM],
            &glimpse_storage::SearchRequest {
                k: 10,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(hits.is_empty());
}
