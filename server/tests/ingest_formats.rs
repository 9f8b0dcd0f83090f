//! Every fixture format and layout decodes to exactly the rows the Python generator recorded
//! (server/fixtures/make_ingest_fixtures.py), and shards are discovered in natural order.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use glimpse_server::ingest::{
    DatasetReader, IngestError, IngestRow, MetaValue, ShardLayout, ShardReader, discover_shards,
};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ingest")
}

#[derive(Deserialize)]
struct ExpectedRow {
    id: String,
    vector: Vec<f32>,
    image_path: Option<String>,
    image_bytes_b64: Option<String>,
    metadata: BTreeMap<String, MetaValue>,
}

fn expected() -> BTreeMap<String, Vec<IngestRow>> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let raw: BTreeMap<String, Vec<ExpectedRow>> = serde_json::from_str(&text).unwrap();
    raw.into_iter()
        .map(|(k, rows)| {
            let rows = rows
                .into_iter()
                .map(|r| IngestRow {
                    id: r.id,
                    vector: r.vector,
                    image_path: r.image_path,
                    image_bytes: r
                        .image_bytes_b64
                        .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap()),
                    metadata: r.metadata,
                })
                .collect();
            (k, rows)
        })
        .collect()
}

fn read_all(path: &Path, batch_size: usize) -> Vec<IngestRow> {
    let reader = DatasetReader::open(&[path.to_path_buf()], batch_size).unwrap();
    let mut rows = Vec::new();
    for batch in reader.batches() {
        let batch = batch.unwrap();
        assert!(batch.len() <= batch_size);
        rows.extend(batch);
    }
    rows
}

#[test]
fn every_fixture_decodes_to_the_expected_rows() {
    let expected = expected();
    assert_eq!(
        expected.len(),
        8,
        "fixture set changed: {:?}",
        expected.keys()
    );
    for (key, rows) in &expected {
        for batch_size in [1, 2, 4096] {
            let got = read_all(&fixtures().join(key), batch_size);
            assert_eq!(got.len(), rows.len(), "{key}");
            for (g, e) in got.iter().zip(rows) {
                assert_eq!(g, e, "{key} batch size {batch_size}");
            }
        }
    }
}

#[test]
fn pipeline_variants_carry_paths_or_inline_images() {
    let rows = read_all(&fixtures().join("pipeline_base64"), 64);
    assert_eq!(rows.len(), 4);
    for row in &rows[..3] {
        assert_eq!(row.image_path, None);
        let bytes = row.image_bytes.as_ref().unwrap();
        assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff], "row {}", row.id);
    }
    assert_eq!(
        (rows[3].image_path.as_ref(), rows[3].image_bytes.as_ref()),
        (None, None)
    );
    let rows = read_all(&fixtures().join("pipeline_files"), 64);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5", "6", "7", "8"]);
    assert_eq!(
        rows[4].image_path.as_deref(),
        Some("/data/images/00004.jpg")
    );
    assert!(
        rows.iter()
            .all(|r| r.metadata.is_empty() && r.vector.len() == 8)
    );
}

#[test]
fn shard_reader_reports_layout_dim_rows_and_metadata_columns() {
    let f = fixtures();
    let s = ShardReader::open(&f.join("pipeline_files/emb.parquet_part_2.parquet")).unwrap();
    assert_eq!(
        (s.layout(), s.dim(), s.num_rows()),
        (ShardLayout::Pipeline, Some(8), 3)
    );
    assert!(s.metadata_columns().is_empty());

    // The non-range pandas index is stored as __index_level_0__ and must not become metadata.
    let s = ShardReader::open(&f.join("pipeline_dirs/emb.parquet_part_2/data.parquet")).unwrap();
    assert!(
        s.metadata_columns().is_empty(),
        "{:?}",
        s.metadata_columns()
    );

    let s = ShardReader::open(&f.join("glimpse_int_ids.parquet")).unwrap();
    assert_eq!(
        (s.layout(), s.dim(), s.num_rows()),
        (ShardLayout::Glimpse, Some(8), 4)
    );
    // `tags` (list<string>) is ignored with a warning, not an error.
    assert_eq!(
        s.metadata_columns(),
        [
            "caption", "width", "small", "score", "ratio", "flag", "kind"
        ]
    );

    let s = ShardReader::open(&f.join("glimpse_str_ids.parquet")).unwrap();
    assert_eq!(s.dim(), Some(8));
    let s = ShardReader::open(&f.join("glimpse_fsb.parquet")).unwrap();
    assert_eq!(s.dim(), Some(8));
}

#[test]
fn batches_are_bounded_and_restartable() {
    let s = ShardReader::open(&fixtures().join("glimpse_int_ids.parquet"))
        .unwrap()
        .with_batch_size(3);
    let sizes: Vec<usize> = s.batches().unwrap().map(|b| b.unwrap().len()).collect();
    assert_eq!(sizes, [3, 1]);
    // A second pass reads the same rows again.
    let a: Vec<IngestRow> = s.batches().unwrap().flat_map(|b| b.unwrap()).collect();
    let b: Vec<IngestRow> = s.batches().unwrap().flat_map(|b| b.unwrap()).collect();
    assert_eq!(a, b);
}

fn names(paths: &[PathBuf], root: &Path) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn discovery_is_recursive_and_natural() {
    let f = fixtures();
    let got = discover_shards(&[f.join("pipeline_files")]).unwrap();
    assert_eq!(
        names(&got, &f),
        [
            "pipeline_files/emb.parquet_part_1.parquet",
            "pipeline_files/emb.parquet_part_2.parquet",
            "pipeline_files/emb.parquet_part_10.parquet",
        ]
    );
    let got = discover_shards(&[f.join("pipeline_dirs")]).unwrap();
    assert_eq!(
        names(&got, &f),
        [
            "pipeline_dirs/emb.parquet_part_1/data.parquet",
            "pipeline_dirs/emb.parquet_part_2/data.parquet",
            "pipeline_dirs/emb.parquet_part_10/data.parquet",
        ]
    );
    let got = discover_shards(&[f.join("natural")]).unwrap();
    assert_eq!(
        names(&got, &f),
        [
            "natural/embeddings_0_500.parquet",
            "natural/embeddings_500_1000.parquet",
        ]
    );
    // Inputs keep their order; a file named twice is read once; files are taken as given.
    let fsb = f.join("glimpse_fsb.parquet");
    let got = discover_shards(&[fsb.clone(), f.join("natural"), fsb.clone()]).unwrap();
    assert_eq!(
        names(&got, &f),
        [
            "glimpse_fsb.parquet",
            "natural/embeddings_0_500.parquet",
            "natural/embeddings_500_1000.parquet",
        ]
    );
}

#[test]
fn discovery_skips_hidden_and_non_parquet_and_reports_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("x.parquet_part_3")).unwrap();
    std::fs::write(d.join("x.parquet_part_3/data.parquet"), b"").unwrap();
    std::fs::write(d.join(".x.parquet.tmp-1"), b"").unwrap();
    std::fs::write(d.join(".hidden.parquet"), b"").unwrap();
    std::fs::write(d.join("_SUCCESS"), b"").unwrap();
    std::fs::write(d.join("notes.txt"), b"").unwrap();
    std::fs::write(d.join("B.PARQUET"), b"").unwrap();
    let got = discover_shards(&[d.to_path_buf()]).unwrap();
    assert_eq!(
        names(&got, d),
        ["B.PARQUET", "x.parquet_part_3/data.parquet"]
    );

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        discover_shards(&[empty.path().to_path_buf()]),
        Err(IngestError::NoShards { .. })
    ));
    let missing = d.join("nope");
    match discover_shards(std::slice::from_ref(&missing)) {
        Err(IngestError::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
}

#[cfg(unix)]
#[test]
fn discovery_survives_symlink_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("a")).unwrap();
    std::fs::write(d.join("a/one.parquet"), b"").unwrap();
    std::os::unix::fs::symlink(d, d.join("a/loop")).unwrap();
    let got = discover_shards(&[d.to_path_buf()]).unwrap();
    assert_eq!(names(&got, d), ["a/one.parquet"]);
}

#[test]
fn meta_values_serialize_untagged() {
    let m: BTreeMap<String, MetaValue> = [
        ("s".to_owned(), MetaValue::Str("x".into())),
        ("i".to_owned(), MetaValue::Int(-3)),
        ("f".to_owned(), MetaValue::Float(0.5)),
        ("b".to_owned(), MetaValue::Bool(true)),
    ]
    .into();
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(json, r#"{"b":true,"f":0.5,"i":-3,"s":"x"}"#);
    let back: BTreeMap<String, MetaValue> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}

#[test]
fn batches_from_resumes_mid_shard() {
    let s = ShardReader::open(&fixtures().join("glimpse_int_ids.parquet"))
        .unwrap()
        .with_batch_size(2);
    let all: Vec<IngestRow> = s.batches().unwrap().flat_map(|b| b.unwrap()).collect();
    for skip in 0..=5u64 {
        let rest: Vec<IngestRow> = s
            .batches_from(skip)
            .unwrap()
            .flat_map(|b| b.unwrap())
            .collect();
        assert_eq!(rest, all[(skip as usize).min(all.len())..], "skip {skip}");
    }
    // Pipeline shards too (the skipped rows are never unpickled).
    let p = fixtures().join("pipeline_files/emb.parquet_part_2.parquet");
    let s = ShardReader::open(&p).unwrap();
    let ids: Vec<String> = s
        .batches_from(1)
        .unwrap()
        .flat_map(|b| b.unwrap())
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["4", "5"]);
}
