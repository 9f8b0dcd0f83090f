//! Writers: shards and results written by Glimpse read back exactly, atomically and durably.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glimpse_server::ingest::{
    ExtraColumn, IngestError, IngestRow, MetaKind, MetaValue, PartitionWriter, QueryResult,
    QueryResultsWriter, ShardLayout, ShardReader, ShardRecord, ShardWriterOptions,
    read_query_results, read_query_vectors, write_partition_atomic,
};
use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ingest")
}

fn options(dim: usize) -> ShardWriterOptions {
    let mut o = ShardWriterOptions::new("clip-vit-b-32", dim);
    o.extra_columns = vec![
        ExtraColumn {
            name: "caption".into(),
            kind: MetaKind::Str,
        },
        ExtraColumn {
            name: "width".into(),
            kind: MetaKind::Int,
        },
        ExtraColumn {
            name: "score".into(),
            kind: MetaKind::Float,
        },
        ExtraColumn {
            name: "nsfw".into(),
            kind: MetaKind::Bool,
        },
    ];
    o
}

fn records(n: usize, dim: usize) -> Vec<ShardRecord> {
    (0..n)
        .map(|i| {
            let mut extra = BTreeMap::new();
            if i % 2 == 0 {
                extra.insert("caption".to_owned(), MetaValue::Str(format!("image {i} ✓")));
            }
            if i % 3 != 0 {
                extra.insert("width".to_owned(), MetaValue::Int(i as i64 * 10 - 7));
            }
            extra.insert("score".to_owned(), MetaValue::Float(i as f64 / 3.0));
            if i % 5 != 1 {
                extra.insert("nsfw".to_owned(), MetaValue::Bool(i % 2 == 1));
            }
            ShardRecord {
                id: i as i64 * 1_000_003 - 5,
                image_path: (i % 4 != 3).then(|| format!("/img/{i}.jpg")),
                vector: (0..dim)
                    .map(|j| ((i * dim + j) as f32).sin() * 1e-3 + j as f32)
                    .collect(),
                extra,
            }
        })
        .collect()
}

fn as_rows(records: &[ShardRecord]) -> Vec<IngestRow> {
    records
        .iter()
        .map(|r| IngestRow {
            id: r.id.to_string(),
            vector: r.vector.clone(),
            image_path: r.image_path.clone(),
            image_bytes: None,
            metadata: r.extra.clone(),
        })
        .collect()
}

fn read_all(path: &Path, batch: usize) -> Vec<IngestRow> {
    let shard = ShardReader::open(path).unwrap().with_batch_size(batch);
    shard.batches().unwrap().flat_map(|b| b.unwrap()).collect()
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn partition_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(50, 16);
    let mut opts = options(16);
    opts.row_group_rows = 7; // several row groups
    let path = write_partition_atomic(dir.path(), "part-00001.parquet", &recs, opts).unwrap();
    assert_eq!(path, dir.path().join("part-00001.parquet"));
    assert_eq!(
        dir_names(dir.path()),
        ["part-00001.parquet"],
        "temp file left behind"
    );

    let shard = ShardReader::open(&path).unwrap();
    assert_eq!(
        (shard.layout(), shard.dim(), shard.num_rows()),
        (ShardLayout::Glimpse, Some(16), 50)
    );
    assert_eq!(
        shard.metadata_columns(),
        ["caption", "width", "score", "nsfw"]
    );
    let kv = shard.key_value_metadata();
    assert_eq!(
        kv.get("glimpse.model").map(String::as_str),
        Some("clip-vit-b-32")
    );
    assert_eq!(kv.get("glimpse.dim").map(String::as_str), Some("16"));
    assert_eq!(
        kv.get("glimpse.normalized").map(String::as_str),
        Some("true")
    );
    for batch in [1, 7, 13, 1000] {
        assert_eq!(read_all(&path, batch), as_rows(&recs), "batch {batch}");
    }

    let file = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let meta = file.metadata();
    assert_eq!(meta.num_row_groups(), 8);
    assert!(matches!(
        meta.row_group(0).column(2).compression(),
        Compression::ZSTD(_)
    ));
}

#[test]
fn streaming_writer_appends_and_replaces_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(30, 4);
    let mut w = PartitionWriter::create(dir.path(), "p.parquet", options(4)).unwrap();
    for chunk in recs.chunks(8) {
        w.write(chunk).unwrap();
    }
    assert_eq!(w.rows_written(), 30);
    // Not visible under its final name before commit.
    assert!(!dir.path().join("p.parquet").exists());
    w.commit().unwrap();
    assert_eq!(read_all(&dir.path().join("p.parquet"), 100), as_rows(&recs));

    // Rewriting replaces the old file whole.
    let fewer = records(3, 4);
    write_partition_atomic(dir.path(), "p.parquet", &fewer, options(4)).unwrap();
    assert_eq!(
        read_all(&dir.path().join("p.parquet"), 100),
        as_rows(&fewer)
    );
    assert_eq!(dir_names(dir.path()), ["p.parquet"]);
}

#[test]
fn abandoned_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = PartitionWriter::create(dir.path(), "gone.parquet", options(4)).unwrap();
    w.write(&records(5, 4)).unwrap();
    drop(w);
    assert!(dir_names(dir.path()).is_empty());
}

#[test]
fn writer_rejects_bad_records_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |recs: &[ShardRecord]| write_partition_atomic(d, "x.parquet", recs, options(4));

    let mut r = records(2, 4);
    r[1].vector.push(1.0);
    assert!(matches!(write(&r), Err(IngestError::InvalidRecord { .. })));
    let mut r = records(2, 4);
    r[0].vector[2] = f32::NAN;
    assert!(matches!(
        write(&r),
        Err(IngestError::NonFinite { index: 2, .. })
    ));
    let mut r = records(1, 4);
    r[0].extra.insert("undeclared".into(), MetaValue::Int(1));
    assert!(
        matches!(write(&r), Err(IngestError::InvalidRecord { reason, .. }) if reason.contains("undeclared"))
    );
    let mut r = records(1, 4);
    r[0].extra
        .insert("width".into(), MetaValue::Str("wide".into()));
    assert!(matches!(write(&r), Err(IngestError::InvalidRecord { .. })));
    assert!(
        dir_names(d).is_empty(),
        "failed writes left files: {:?}",
        dir_names(d)
    );

    // An Int into a Float column is widened, not refused.
    let mut r = records(1, 4);
    r[0].extra.insert("score".into(), MetaValue::Int(3));
    write(&r).unwrap();
    let back = read_all(&d.join("x.parquet"), 10);
    assert_eq!(back[0].metadata.get("score"), Some(&MetaValue::Float(3.0)));

    let mut o = options(4);
    o.extra_columns.push(ExtraColumn {
        name: "embedding".into(),
        kind: MetaKind::Int,
    });
    assert!(matches!(
        write_partition_atomic(d, "y.parquet", &[], o),
        Err(IngestError::InvalidOptions { .. })
    ));
    assert!(matches!(
        write_partition_atomic(d, "y.parquet", &[], options(0)),
        Err(IngestError::InvalidOptions { .. })
    ));
    for bad in ["a/b.parquet", ".hidden.parquet", ""] {
        assert!(
            matches!(
                write_partition_atomic(d, bad, &[], options(4)),
                Err(IngestError::InvalidOptions { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn empty_partition_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_partition_atomic(dir.path(), "empty.parquet", &[], options(12)).unwrap();
    let shard = ShardReader::open(&p).unwrap();
    assert_eq!((shard.num_rows(), shard.dim()), (0, Some(12)));
    assert!(read_all(&p, 10).is_empty());
}

#[test]
fn query_results_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.parquet");
    let results: Vec<QueryResult> = (0..20)
        .map(|q| QueryResult {
            query: q,
            ids: (0..q % 4).map(|k| format!("id-{q}-{k}")).collect(),
            scores: (0..q % 4).map(|k| 1.0 - k as f32 * 0.125).collect(),
        })
        .collect();
    let mut w = QueryResultsWriter::create(&path).unwrap();
    w.write(&results[..5]).unwrap();
    w.write(&results[5..]).unwrap();
    assert!(!path.exists());
    w.commit().unwrap();
    assert_eq!(read_query_results(&path).unwrap(), results);
    assert_eq!(dir_names(dir.path()), ["results.parquet"]);

    let mut w = QueryResultsWriter::create(&dir.path().join("bad.parquet")).unwrap();
    let bad = QueryResult {
        query: 0,
        ids: vec!["a".into()],
        scores: vec![],
    };
    assert!(matches!(
        w.write(&[bad]),
        Err(IngestError::InvalidRecord { .. })
    ));
}

#[test]
fn query_vectors_read_any_embedding_column() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(9, 6);
    let p = write_partition_atomic(dir.path(), "q.parquet", &recs, options(6)).unwrap();
    let got = read_query_vectors(&p).unwrap();
    assert_eq!(
        got,
        recs.iter().map(|r| r.vector.clone()).collect::<Vec<_>>()
    );

    // float16 lists and fixed_size_binary work too; vectors equal what the shard reader sees.
    for name in ["glimpse_str_ids.parquet", "glimpse_fsb.parquet"] {
        let p = fixtures().join(name);
        let via_shard: Vec<Vec<f32>> = read_all(&p, 10).into_iter().map(|r| r.vector).collect();
        assert_eq!(read_query_vectors(&p).unwrap(), via_shard, "{name}");
    }
    assert!(matches!(
        read_query_vectors(&fixtures().join("pipeline_files/emb.parquet_part_1.parquet")),
        Err(IngestError::MissingColumn { .. })
    ));
}
