//! `glimpse embed --image-parquet` over Parquet files in the Hugging Face `datasets` image
//! layout (`image` = struct<bytes: binary, path: string>, plus `label`, `caption`): rows map to
//! ids in file order, extra columns survive, null and corrupt images are recorded.

#![allow(clippy::unwrap_used)]

mod embed_support;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use embed_support::*;
use glimpse_embedder::DeviceChoice;
use glimpse_server::embed::{EmbedOptions, ImageInput, InputSpec, ProgressMode, embed};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Writes rows `ids` as one HF-style Parquet file with row groups of 4 rows.
fn write_hf_parquet(path: &Path, ids: std::ops::Range<usize>) {
    let image_fields = Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("image", DataType::Struct(image_fields.clone()), true),
        Field::new("label", DataType::Int64, false),
        Field::new("caption", DataType::Utf8, true),
    ]));
    // Image 7 has null bytes; corrupt ones come from image_bytes.
    let bytes: Vec<Option<Vec<u8>>> = ids
        .clone()
        .map(|i| (i != 7).then(|| image_bytes(i).0))
        .collect();
    let bytes = BinaryArray::from_iter(bytes.iter().map(|b| b.as_deref()));
    let paths = StringArray::from_iter(ids.clone().map(|i| Some(format!("n{i:05}.JPEG"))));
    let image = StructArray::new(
        image_fields,
        vec![Arc::new(bytes) as ArrayRef, Arc::new(paths) as ArrayRef],
        None,
    );
    let labels = Int64Array::from_iter_values(ids.clone().map(|i| (i * 10) as i64));
    let captions = StringArray::from_iter(
        ids.clone()
            .map(|i| (i % 2 == 0).then(|| format!("caption {i}"))),
    );
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(image), Arc::new(labels), Arc::new(captions)],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(4))
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn hf_parquet_folder_rows_ids_and_carried_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let data = tmp.path().join("dataset");
    std::fs::create_dir_all(&data).unwrap();
    // Natural order: part-2 before part-10.
    write_hf_parquet(&data.join("train-part-2.parquet"), 0..11);
    write_hf_parquet(&data.join("train-part-10.parquet"), 11..25);
    let out = tmp.path().join("out");
    let mut o = EmbedOptions::new(
        InputSpec::Local(ImageInput::Parquet(vec![data.clone()])),
        &out,
    );
    o.start = 5;
    o.end = Some(22);
    o.partition_size = 6;
    o.batch_size = 4;
    o.progress = ProgressMode::Quiet;
    let s = embed(model.to_str().unwrap(), DeviceChoice::Cpu, &o).unwrap();
    assert_eq!(s.partitions_written, 3);

    let rows = read_all_rows(&out);
    let want: Vec<i64> = (5..22)
        .filter(|&i| i != 7 && !is_corrupt(i))
        .map(|i| i as i64)
        .collect();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), want);
    let mut failed: Vec<u64> = (5..22u64)
        .filter(|&i| i == 7 || is_corrupt(i as usize))
        .collect();
    failed.sort_unstable();
    assert_eq!(failed_ids(&out), failed);
    for r in &rows {
        assert_eq!(
            r.image_path.as_deref(),
            Some(format!("n{:05}.JPEG", r.id).as_str())
        );
        assert_eq!(r.extra["label"], (r.id * 10).to_string());
        if r.id % 2 == 0 {
            assert_eq!(r.extra["caption"], format!("caption {}", r.id));
        } else {
            assert!(!r.extra.contains_key("caption"), "null stays null");
        }
    }
    let errs = glimpse_server::embed::read_failures(&partition_dirs(&out)[0].join("errors.jsonl"))
        .unwrap();
    assert!(
        errs.iter()
            .any(|e| e.id == 7 && e.reason.contains("no image bytes")),
        "{errs:?}"
    );

    // The same images from a folder embed to the same vectors (Parquet input is byte-exact).
    let images = tmp.path().join("images");
    write_image_folder(&images, 25);
    let out2 = tmp.path().join("out2");
    let mut o2 = EmbedOptions::new(InputSpec::Local(ImageInput::Folder(images)), &out2);
    o2.start = 5;
    o2.end = Some(22);
    o2.partition_size = 6;
    o2.batch_size = 4;
    o2.progress = ProgressMode::Quiet;
    embed(model.to_str().unwrap(), DeviceChoice::Cpu, &o2).unwrap();
    let from_folder = read_all_rows(&out2);
    for r in &rows {
        // Batches differ (image 7 is readable in the folder), so allow rounding noise.
        let f = from_folder.iter().find(|f| f.id == r.id).unwrap();
        for (a, b) in f.embedding.iter().zip(&r.embedding) {
            assert!((a - b).abs() < 1e-5, "id {}: {a} vs {b}", r.id);
        }
    }
}

#[test]
fn parquet_without_image_column_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let path = tmp.path().join("bad.parquet");
    let schema = Arc::new(Schema::new(vec![Field::new(
        "label",
        DataType::Int64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(vec![1i64]))],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let mut o = EmbedOptions::new(
        InputSpec::Local(ImageInput::Parquet(vec![path])),
        tmp.path().join("out"),
    );
    o.progress = ProgressMode::Quiet;
    let err = embed(model.to_str().unwrap(), DeviceChoice::Cpu, &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.parquet") && err.contains("no `image` column"),
        "{err}"
    );
}
