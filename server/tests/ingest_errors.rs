//! Every kind of bad input gives the intended error, naming the file and the row, never a panic.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder};
use arrow_array::{
    ArrayRef, BinaryArray, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray,
};
use glimpse_server::ingest::pickle::PickleError;
use glimpse_server::ingest::{DatasetReader, IngestError, IngestRow, ShardReader};
use parquet::arrow::ArrowWriter;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ingest")
}

/// Writes one record batch made of `columns` to `dir/name`.
fn write(dir: &Path, name: &str, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
    let path = dir.join(name);
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

fn list(rows: &[Option<Vec<f32>>]) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for r in rows {
        match r {
            Some(v) => {
                b.values().append_slice(v);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

fn ids(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

/// Opens `path` and reads every row, returning the first error.
fn read(path: &Path) -> Result<Vec<IngestRow>, IngestError> {
    let shard = ShardReader::open(path)?;
    let mut rows = Vec::new();
    for batch in shard.batches()? {
        rows.extend(batch?);
    }
    Ok(rows)
}

/// Reads `path` expecting an error whose message names the file.
fn read_err(path: &Path) -> IngestError {
    let err = read(path).unwrap_err();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.to_string().contains(&name),
        "message lacks the path: {err}"
    );
    err
}

#[test]
fn not_parquet_truncated_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(&garbage, b"this is not a parquet file at all, just text").unwrap();
    assert!(matches!(read_err(&garbage), IngestError::Parquet { .. }));
    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(read_err(&empty), IngestError::Parquet { .. }));
    let good = std::fs::read(fixtures().join("glimpse_int_ids.parquet")).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    assert!(matches!(read_err(&cut), IngestError::Parquet { .. }));
    assert!(matches!(
        read(&dir.path().join("absent.parquet")),
        Err(IngestError::NotFound { .. })
    ));
}

#[test]
fn fuzzed_shards_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.parquet");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for name in [
        "glimpse_int_ids.parquet",
        "pipeline_files/emb.parquet_part_1.parquet",
        "glimpse_fsb.parquet",
    ] {
        let good = std::fs::read(fixtures().join(name)).unwrap();
        // Every truncation length in coarse steps, then random byte corruptions.
        for cut in (0..good.len()).step_by(97) {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(read(&path).is_err(), "{name} cut at {cut} read fine");
        }
        for _ in 0..300 {
            let mut bytes = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            std::fs::write(&path, &bytes).unwrap();
            let _ = read(&path);
        }
    }
}

#[test]
fn missing_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write(
        d,
        "no_embedding.parquet",
        vec![("id", ids(&[1])), ("vec", list(&[Some(vec![1.0])]))],
    );
    match read_err(&p) {
        IngestError::MissingColumn { column, found, .. } => {
            assert_eq!(column, "embedding");
            assert_eq!(found, "id, vec");
        }
        e => panic!("{e:?}"),
    }
    let p = write(
        d,
        "no_id.parquet",
        vec![("embedding", list(&[Some(vec![1.0])]))],
    );
    assert!(matches!(read_err(&p), IngestError::MissingColumn { column, .. } if column == "id"));
    let out: ArrayRef = Arc::new(BinaryArray::from_vec(vec![b"x"]));
    let p = write(d, "no_idx.parquet", vec![("output", out)]);
    assert!(matches!(read_err(&p), IngestError::MissingColumn { column, .. } if column == "idx"));
}

#[test]
fn wrong_types() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let emb = || list(&[Some(vec![1.0, 2.0])]);
    let ints: ArrayRef = Arc::new(ListArray::from_iter_primitive::<
        arrow_array::types::Int32Type,
        _,
        _,
    >(vec![Some(vec![Some(1), Some(2)])]));
    type Case<'a> = (&'a str, Vec<(&'a str, ArrayRef)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "int_list.parquet",
            vec![("id", ids(&[1])), ("embedding", ints)],
            "embedding",
        ),
        (
            "float_id.parquet",
            vec![
                ("id", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
                ("embedding", emb()),
            ],
            "id",
        ),
        (
            "int_path.parquet",
            vec![
                ("id", ids(&[1])),
                ("embedding", emb()),
                ("image_path", ids(&[5])),
            ],
            "image_path",
        ),
        (
            "fsb6.parquet",
            vec![
                ("id", ids(&[1])),
                (
                    "embedding",
                    Arc::new(FixedSizeBinaryArray::try_from_iter([[0u8; 6]].iter()).unwrap())
                        as ArrayRef,
                ),
            ],
            "embedding",
        ),
        (
            "string_output.parquet",
            vec![
                ("idx", ids(&[1])),
                ("output", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
            ],
            "output",
        ),
    ];
    for (name, columns, column) in cases {
        let p = write(d, name, columns);
        match read_err(&p) {
            IngestError::WrongType { column: c, .. } => assert_eq!(c, column, "{name}"),
            e => panic!("{name}: {e:?}"),
        }
    }
}

#[test]
fn row_level_problems_name_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = write(
        d,
        "dims.parquet",
        vec![
            ("id", ids(&[1, 2])),
            ("embedding", list(&[Some(vec![1.0; 8]), Some(vec![1.0; 9])])),
        ],
    );
    match read_err(&p) {
        IngestError::DimensionMismatch {
            row_id,
            expected,
            found,
            ..
        } => {
            assert_eq!((row_id.as_str(), expected, found), ("2", 8, 9));
        }
        e => panic!("{e:?}"),
    }
    for (name, bad) in [
        ("nan.parquet", f32::NAN),
        ("inf.parquet", f32::NEG_INFINITY),
    ] {
        let p = write(
            d,
            name,
            vec![
                ("id", ids(&[1, 42])),
                (
                    "embedding",
                    list(&[Some(vec![1.0, 2.0]), Some(vec![0.0, bad])]),
                ),
            ],
        );
        let err = read_err(&p);
        assert!(err.to_string().contains("row 42"), "{err}");
        assert!(
            matches!(err, IngestError::NonFinite { ref row_id, index: 1, .. } if row_id == "42")
        );
    }
    let p = write(
        d,
        "empty_vec.parquet",
        vec![("id", ids(&[3])), ("embedding", list(&[Some(vec![])]))],
    );
    assert!(matches!(read_err(&p), IngestError::EmptyVector { row_id, .. } if row_id == "3"));
    let p = write(
        d,
        "null_vec.parquet",
        vec![
            ("id", ids(&[1, 4])),
            ("embedding", list(&[Some(vec![1.0]), None])),
        ],
    );
    assert!(
        matches!(read_err(&p), IngestError::NullValue { row_id, column, .. } if row_id == "4" && column == "embedding")
    );
    let null_id: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
    let p = write(
        d,
        "null_id.parquet",
        vec![
            ("id", null_id),
            ("embedding", list(&[Some(vec![1.0]), Some(vec![1.0])])),
        ],
    );
    assert!(
        matches!(read_err(&p), IngestError::NullValue { row_id, column, .. } if row_id == "row 1" && column == "id")
    );

    let long = "é".repeat(129); // 258 bytes
    let sids: ArrayRef = Arc::new(StringArray::from(vec!["ok".to_owned(), long]));
    let p = write(
        d,
        "long_id.parquet",
        vec![
            ("id", sids),
            ("embedding", list(&[Some(vec![1.0]), Some(vec![1.0])])),
        ],
    );
    assert!(matches!(
        read_err(&p),
        IngestError::IdTooLong {
            len: 258,
            max: 256,
            ..
        }
    ));
    let sids: ArrayRef = Arc::new(StringArray::from(vec![""]));
    let p = write(
        d,
        "empty_id.parquet",
        vec![("id", sids), ("embedding", list(&[Some(vec![1.0])]))],
    );
    assert!(matches!(read_err(&p), IngestError::EmptyId { row: 0, .. }));
}

#[test]
fn first_row_problems_fail_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "first_nan.parquet",
        vec![
            ("id", ids(&[9])),
            ("embedding", list(&[Some(vec![f32::NAN])])),
        ],
    );
    assert!(matches!(
        ShardReader::open(&p),
        Err(IngestError::NonFinite { .. })
    ));
}

#[test]
fn dimension_must_agree_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "a_1.parquet",
        vec![
            ("id", ids(&[1])),
            ("embedding", list(&[Some(vec![1.0; 4])])),
        ],
    );
    let b = write(
        d,
        "a_2.parquet",
        vec![
            ("id", ids(&[2])),
            ("embedding", list(&[Some(vec![1.0; 5])])),
        ],
    );
    match DatasetReader::open(&[d.to_path_buf()], 16) {
        Err(IngestError::ShardDimensionMismatch {
            path,
            found,
            expected,
            reference,
        }) => {
            assert_eq!((path, found, expected), (b, 5, 4));
            assert!(reference.ends_with("a_1.parquet"));
        }
        other => panic!("{other:?}"),
    }
    // A pipeline shard of another dimension is refused just the same.
    let pipeline = fixtures().join("pipeline_files/emb.parquet_part_1.parquet");
    assert!(matches!(
        DatasetReader::open(&[d.join("a_1.parquet"), pipeline], 16),
        Err(IngestError::ShardDimensionMismatch {
            found: 8,
            expected: 4,
            ..
        })
    ));
}

fn pickle_err(name: &str) -> (String, PickleError) {
    match read_err(&fixtures().join("bad").join(name)) {
        IngestError::Pickle { row_id, source, .. } => (row_id, source),
        e => panic!("{name}: {e:?}"),
    }
}

#[test]
fn bad_pipeline_pickles() {
    assert!(matches!(
        pickle_err("pipeline_big_endian.parquet"),
        (_, PickleError::BigEndian(_))
    ));
    assert!(matches!(
        pickle_err("pipeline_2d.parquet"),
        (_, PickleError::NotOneDimensional(shape)) if shape == [2, 4]
    ));
    assert!(matches!(
        pickle_err("pipeline_int_dtype.parquet"),
        (_, PickleError::UnsupportedDtype(_))
    ));
    let (row, err) = pickle_err("pipeline_os_system.parquet");
    assert_eq!(row, "1");
    assert!(
        matches!(err, PickleError::ForbiddenGlobal { ref module, ref name } if module == "posix" && name == "system"),
        "{err:?}"
    );
    assert!(!Path::new("/tmp/glimpse-pwned").exists());

    match read_err(&fixtures().join("bad/pipeline_dim_mismatch.parquet")) {
        IngestError::DimensionMismatch {
            row_id,
            expected: 8,
            found: 9,
            ..
        } => assert_eq!(row_id, "1"),
        e => panic!("{e:?}"),
    }
    match read_err(&fixtures().join("bad/pipeline_nan.parquet")) {
        IngestError::NonFinite {
            row_id, index: 3, ..
        } => assert_eq!(row_id, "1"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn garbage_pickle_bytes_in_output_column() {
    let dir = tempfile::tempdir().unwrap();
    let out: ArrayRef = Arc::new(BinaryArray::from_vec(vec![b"\x80\x04\x95garbage", b""]));
    let idx: ArrayRef = Arc::new(Int32Array::from(vec![5, 6]));
    let p = write(
        dir.path(),
        "garbage_pickle.parquet",
        vec![("idx", idx), ("output", out)],
    );
    assert!(matches!(read_err(&p), IngestError::Pickle { row_id, .. } if row_id == "5"));
}

#[test]
fn plain_binary_embeddings_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (a, b) = (le(&[1.0, -2.5, 3.0]), le(&[0.0, 0.5, 7.0]));
    let good: ArrayRef = Arc::new(BinaryArray::from_vec(vec![&a, &b]));
    let p = write(
        d,
        "binary.parquet",
        vec![("id", ids(&[1, 2])), ("embedding", good)],
    );
    let rows = read(&p).unwrap();
    assert_eq!(rows[0].vector, [1.0, -2.5, 3.0]);
    assert_eq!(rows[1].vector, [0.0, 0.5, 7.0]);

    let odd: ArrayRef = Arc::new(BinaryArray::from_vec(vec![&a, &a[..10]]));
    let p = write(
        d,
        "binary_odd.parquet",
        vec![("id", ids(&[1, 2])), ("embedding", odd)],
    );
    assert!(matches!(
        read_err(&p),
        IngestError::EmbeddingByteLength { row_id, len: 10, .. } if row_id == "2"
    ));
    let empty: ArrayRef = Arc::new(BinaryArray::from_vec(vec![b""]));
    let p = write(
        d,
        "binary_empty.parquet",
        vec![("id", ids(&[3])), ("embedding", empty)],
    );
    assert!(matches!(read_err(&p), IngestError::EmptyVector { .. }));
}

#[test]
fn resumed_reads_report_absolute_row_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let sids: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", ""]));
    let p = write(
        dir.path(),
        "resume.parquet",
        vec![
            ("id", sids),
            (
                "embedding",
                list(&[Some(vec![1.0]), Some(vec![1.0]), Some(vec![1.0])]),
            ),
        ],
    );
    let shard = ShardReader::open(&p).unwrap();
    let err = shard
        .batches_from(1)
        .unwrap()
        .find_map(|b| b.err())
        .unwrap();
    assert!(
        matches!(err, IngestError::EmptyId { row: 2, .. }),
        "{err:?}"
    );
}
