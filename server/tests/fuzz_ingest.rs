//! Fuzzing on stable Rust: Parquet shards of both layouts (Glimpse's own, zstd, written by
//! `write_partition_atomic`; the original pipeline's, pickles in a snappy `output` column, as built
//! here and as pyarrow wrote the fixture) are mutated, raw or in their footer, and read through
//! `ShardReader::open` and every batch: an error or rows, never a panic or a hang, and rows that
//! hold at most a small multiple of the file. Inputs that once broke something live in
//! `tests/fuzz-corpus/parquet/` and are replayed by `corpus_replays`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use glimpse_index::byte_edits::{Edit, apply, edit};
use glimpse_server::ingest::{
    ExtraColumn, IngestError, IngestRow, MetaKind, MetaValue, ShardReader, ShardRecord,
    ShardWriterOptions, write_partition_atomic,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use proptest::collection::vec;
use proptest::prelude::*;

const DIM: usize = 4;
const ROWS: i64 = 12;

/// `pickle.dumps((path, np.array(v, '<f4')))` as CPython's protocol-4 pickler writes it
/// (numpy >= 2 module names).
fn pickle(path: &str, v: &[f32]) -> Vec<u8> {
    let mut p = vec![0x80, 4];
    let su = |p: &mut Vec<u8>, s: &str| {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
        p.push(0x94);
    };
    su(&mut p, path);
    su(&mut p, "numpy._core.multiarray");
    su(&mut p, "_reconstruct");
    p.extend_from_slice(&[0x93, 0x94]);
    su(&mut p, "numpy");
    su(&mut p, "ndarray");
    p.extend_from_slice(&[
        0x93, 0x94, b'K', 0, 0x85, 0x94, b'C', 1, b'b', 0x94, 0x87, 0x94,
    ]);
    p.extend_from_slice(&[b'R', 0x94, b'(', b'K', 1, b'K', v.len() as u8, 0x85, 0x94]);
    p.extend_from_slice(&[b'h', 4]);
    su(&mut p, "dtype");
    p.extend_from_slice(&[0x93, 0x94]);
    su(&mut p, "f4");
    p.extend_from_slice(&[0x89, 0x88, 0x87, 0x94, b'R', 0x94, b'(', b'K', 3]);
    su(&mut p, "<");
    p.extend_from_slice(&[b'N', b'N', b'N', b'J', 0xff, 0xff, 0xff, 0xff]);
    p.extend_from_slice(&[
        b'J', 0xff, 0xff, 0xff, 0xff, b'K', 0, b't', 0x94, b'b', 0x89,
    ]);
    let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    p.push(b'C');
    p.push(data.len() as u8);
    p.extend_from_slice(&data);
    p.extend_from_slice(&[0x94, b't', 0x94, b'b', 0x86, 0x94, b'.']);
    p
}

fn vector(i: i64) -> Vec<f32> {
    (0..DIM)
        .map(|d| ((i * 7 + d as i64) as f32 * 0.31).sin())
        .collect()
}

/// The valid shards every case starts from: Glimpse's layout, a pipeline shard built here and
/// the pipeline fixture written by pyarrow.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ShardWriterOptions::new("test", DIM);
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
        let records: Vec<ShardRecord> = (0..ROWS)
            .map(|i| ShardRecord {
                id: i,
                image_path: Some(format!("{i}.png")),
                vector: vector(i),
                extra: [
                    ("label".to_string(), MetaValue::Int(i % 3)),
                    (
                        "split".to_string(),
                        MetaValue::Str(["train", "val"][i as usize % 2].into()),
                    ),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        let glimpse = write_partition_atomic(dir.path(), "g.parquet", &records, opts).unwrap();

        let outputs: Vec<Vec<u8>> = (0..ROWS)
            .map(|i| pickle(&format!("/img/{i}.jpg"), &vector(i)))
            .collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("idx", Arc::new(Int64Array::from_iter_values(0..ROWS))),
            (
                "output",
                Arc::new(BinaryArray::from_iter_values(outputs.iter())),
            ),
            (
                "caption",
                Arc::new(StringArray::from_iter_values(
                    (0..ROWS).map(|i| ["a cat", "a dog"][i as usize % 2]),
                )),
            ),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut pipeline = Vec::new();
        let mut w = ArrowWriter::try_new(&mut pipeline, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();

        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ingest/pipeline_files/emb.parquet_part_1.parquet");
        vec![
            std::fs::read(glimpse).unwrap(),
            pipeline,
            std::fs::read(fixture).unwrap(),
        ]
    })
}

/// Applies `edits` to the Thrift footer of a Parquet file only (where every size and offset
/// lives), keeping its length field in step so the reader gets as far as decoding it.
fn apply_to_footer(file: &[u8], edits: &[Edit]) -> Vec<u8> {
    let n = file.len();
    let len = u32::from_le_bytes([file[n - 8], file[n - 7], file[n - 6], file[n - 5]]) as usize;
    let start = n - 8 - len;
    let mut footer = file[start..n - 8].to_vec();
    apply(&mut footer, edits);
    let mut out = file[..start].to_vec();
    out.extend_from_slice(&footer);
    out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    out
}

/// Payload bytes of a row.
fn row_bytes(r: &IngestRow) -> usize {
    r.id.len()
        + 4 * r.vector.len()
        + r.image_path.as_ref().map_or(0, String::len)
        + r.image_bytes.as_ref().map_or(0, Vec::len)
        + r.metadata
            .iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        MetaValue::Str(s) => s.len(),
                        _ => 8,
                    }
            })
            .sum::<usize>()
}

/// Reads `bytes` as a shard, every batch: an error or rows, never a panic, and never more rows'
/// payload than a small multiple of the file. Some corrupt pages and footers still trip
/// `assert!`s inside the `parquet` crate; the reader contains those and answers
/// [`IngestError::Corrupt`], its designed error for them (the corpus keeps such inputs).
fn read(bytes: &[u8], path: &Path) -> Result<usize, IngestError> {
    std::fs::write(path, bytes).unwrap();
    let shard = ShardReader::open(path)?;
    let mut held = 0;
    for batch in shard.batches()? {
        held += batch?.iter().map(row_bytes).sum::<usize>();
        assert!(
            held <= 16 * bytes.len() + 4096,
            "{held} bytes of rows from a {}-byte file",
            bytes.len()
        );
    }
    Ok(held)
}

fn path_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("shard.parquet")
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_shards_read_or_fail(seed in 0usize..3, edits in vec(edit(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = seeds()[seed].clone();
        apply(&mut bytes, &edits);
        let _ = read(&bytes, &path_in(&dir));
    }

    #[test]
    fn shards_with_a_mutated_footer_read_or_fail(seed in 0usize..3, edits in vec(edit(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = apply_to_footer(&seeds()[seed], &edits);
        let _ = read(&bytes, &path_in(&dir));
    }
}

#[test]
fn seeds_read_completely() {
    let dir = tempfile::tempdir().unwrap();
    for (i, s) in seeds().iter().enumerate() {
        let held = read(s, &path_in(&dir)).unwrap();
        assert!(held > 0, "seed {i}");
    }
}

#[test]
fn corpus_replays() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus/parquet");
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let _ = read(
            &std::fs::read(entry.unwrap().path()).unwrap(),
            &path_in(&dir),
        );
        n += 1;
    }
    assert!(n >= 2, "corpus {} has {n} files", corpus.display());
}

#[test]
fn a_negative_column_chunk_range_is_refused_at_open() {
    // Found by `shards_with_a_mutated_footer_read_or_fail`: the `parquet` crate asserts that a
    // column chunk's offset and size are non-negative when it reads it; the reader contained
    // the panic, and now refuses the footer when the shard is opened.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus/parquet");
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "negative-column-chunk-range-glimpse.parquet",
        "negative-column-chunk-range-pipeline.parquet",
    ] {
        let path = path_in(&dir);
        std::fs::write(&path, std::fs::read(corpus.join(name)).unwrap()).unwrap();
        match ShardReader::open(&path) {
            Err(IngestError::Corrupt { reason, .. }) => {
                assert!(
                    reason.contains("negative offset or size"),
                    "{name}: {reason}"
                )
            }
            other => panic!("{name}: {:?}", other.map(|r| r.num_rows())),
        }
    }
}
