//! The WAL: `wal::replay` over mutated log files (raw, and with re-sealed record checksums so
//! mutated bodies reach the record decoder), and a whole collection opened over such a log.

use proptest::prelude::*;

use super::{DIM, apply, config, corpus, edits, open_and_use, point, store_options};
use crate::types::{MetaValue, Point};
use crate::wal::{WalOp, replay};
use crate::{Metric, Store};

const WAL_NAME: &str = "00000000000000000001.wal";

/// Record bodies of a small, valid log: upserts (every metadata type, paths, inline bytes)
/// and a delete.
fn bodies() -> Vec<Vec<u8>> {
    vec![
        WalOp::Upsert(vec![point("a", 0), point("b", 1)]).encode(),
        WalOp::Delete(vec!["a".to_string(), "zz".to_string()]).encode(),
        WalOp::Upsert(vec![point("c", 2), point("a", 3)]).encode(),
    ]
}

/// A WAL file as `wal.rs` frames it: header, then `len | seq | crc(header) | body | crc(body)`.
fn wal_file(bodies: &[Vec<u8>], first_seq: u64) -> Vec<u8> {
    let mut out = b"GLIMPWAL".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (i, body) in bodies.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&(first_seq + i as u64).to_le_bytes());
        let hcrc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&hcrc.to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    }
    out
}

/// Heap bytes a decoded operation holds (capacities, B-tree entries at twice their size).
fn op_bytes(op: &WalOp) -> usize {
    match op {
        WalOp::Upsert(points) => {
            points.capacity() * std::mem::size_of::<Point>()
                + points
                    .iter()
                    .map(|p| {
                        p.id.capacity()
                            + p.vector.capacity() * 4
                            + p.image_path.as_ref().map_or(0, String::capacity)
                            + p.image_bytes.as_ref().map_or(0, Vec::capacity)
                            + p.metadata
                                .iter()
                                .map(|(k, v)| {
                                    2 * std::mem::size_of::<(String, MetaValue)>()
                                        + k.capacity()
                                        + match v {
                                            MetaValue::Str(s) => s.capacity(),
                                            _ => 0,
                                        }
                                })
                                .sum::<usize>()
                    })
                    .sum::<usize>()
        }
        WalOp::Delete(ids) => {
            ids.capacity() * std::mem::size_of::<String>()
                + ids.iter().map(String::capacity).sum::<usize>()
        }
    }
}

/// Replays `bytes` as the only file of a log; every decoded operation must stay within a
/// small multiple of the file's size.
fn replay_bytes(bytes: &[u8], checkpoint: u64, salvage: bool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(WAL_NAME), bytes).unwrap();
    let mut held = 0;
    let _ = replay(dir.path(), checkpoint, DIM, salvage, |_, op| {
        held += op_bytes(&op);
        Ok(())
    });
    assert!(
        held <= 32 * bytes.len() + 4096,
        "{held} bytes decoded from {} bytes of log",
        bytes.len()
    );
}

/// A closed store whose collection `c` (dimension [`DIM`]) has an empty log, and that log's dir.
fn empty_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path(), store_options()).unwrap();
    store.create_collection("c", DIM, Metric::L2).unwrap();
    store.close().unwrap();
    drop(store);
    let wal = root.path().join("collections/c/wal");
    for e in std::fs::read_dir(&wal).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    (root, wal)
}

/// The store of [`empty_store`] with `log` as its collection's only WAL file, opened and used.
fn open_with_log(log: &[u8]) {
    let (root, wal) = empty_store();
    std::fs::write(wal.join(WAL_NAME), log).unwrap();
    open_and_use(root.path());
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_wal_files_replay_or_fail(
        edits in edits(),
        checkpoint in 0u64..4,
        salvage in any::<bool>(),
    ) {
        let mut bytes = wal_file(&bodies(), 1);
        apply(&mut bytes, &edits);
        replay_bytes(&bytes, checkpoint, salvage);
    }

    #[test]
    fn mutated_record_bodies_with_valid_checksums_replay_or_fail(
        which in 0usize..3,
        edits in edits(),
        salvage in any::<bool>(),
    ) {
        let mut bodies = bodies();
        apply(&mut bodies[which], &edits);
        replay_bytes(&wal_file(&bodies, 1), 0, salvage);
    }

    #[test]
    fn arbitrary_record_bodies_with_valid_checksums_replay_or_fail(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        kind in 0u8..4,
    ) {
        let mut body = body;
        body.insert(0, kind);
        replay_bytes(&wal_file(&[body], 1), 0, false);
    }
}

proptest! {
    // Opens a whole store per case: fewer cases.
    #![proptest_config(config(96))]

    #[test]
    fn a_collection_opens_over_a_log_with_mutated_records(
        which in 0usize..3,
        edits in edits(),
    ) {
        let mut bodies = bodies();
        apply(&mut bodies[which], &edits);
        open_with_log(&wal_file(&bodies, 1));
    }
}

#[test]
fn corpus_replays() {
    for (_, bytes) in corpus("wal") {
        for salvage in [false, true] {
            replay_bytes(&bytes, 0, salvage);
        }
        open_with_log(&bytes);
    }
}

#[test]
fn a_record_of_another_dimension_is_corruption_not_a_panic() {
    // Found by `a_collection_opens_over_a_log_with_mutated_records`: a checksum-valid record
    // with a 3-float vector in a 4-dimensional collection made every later read of the memtable
    // slice past its end. Kept as `tests/fuzz-corpus/wal/dim-mismatch.wal`.
    let mut short = point("x", 1);
    short.vector.pop();
    let log = wal_file(&[WalOp::Upsert(vec![point("a", 0), short]).encode()], 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(WAL_NAME), &log).unwrap();
    let err = replay(dir.path(), 0, DIM, false, |_, _| Ok(()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("vector dimension"), "{err}");
    let (root, wal) = empty_store();
    std::fs::write(wal.join(WAL_NAME), &log).unwrap();
    let err = Store::open(root.path(), store_options()).err().unwrap();
    assert!(err.to_string().contains("vector dimension"), "{err}");
}
