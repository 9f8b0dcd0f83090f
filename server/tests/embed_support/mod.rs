//! Shared helpers of the `embed_*` integration tests: a tiny CLIP on disk, generated images
//! of varied sizes, formats and colour modes (some corrupt), and readers of the output.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type};
use glimpse_embedder::testing::{TinyClipSpec, write_tiny_clip};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage, RgbaImage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Writes the small tiny CLIP into `dir/model` and returns that folder.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    write_tiny_clip(&m, &TinyClipSpec::small()).unwrap();
    m
}

/// Whether generated image `i` is deliberately corrupt.
pub fn is_corrupt(i: usize) -> bool {
    i % 9 == 4
}

/// Encoded bytes and file extension of generated image `i`: PNG/JPEG/WebP/BMP/GIF, RGB, RGBA
/// and greyscale, sizes from 5x7 up to 61x47; every ninth (from 4) is corrupt.
pub fn image_bytes(i: usize) -> (Vec<u8>, &'static str) {
    if is_corrupt(i) {
        return match (i / 9) % 3 {
            0 => {
                let (png, _) = image_bytes(i + 1);
                (png[..png.len().min(40)].to_vec(), "png")
            }
            1 => (b"this is not an image at all".to_vec(), "jpg"),
            _ => (Vec::new(), "jpeg"),
        };
    }
    let w = 5 + (i * 7) % 57;
    let h = 7 + (i * 11) % 41;
    let px = |x: u32, y: u32, c: u32| ((x * 31 + y * 17 + c * 50 + i as u32 * 13) % 256) as u8;
    let img = match i % 3 {
        0 => DynamicImage::ImageRgb8(RgbImage::from_fn(w as u32, h as u32, |x, y| {
            image::Rgb([px(x, y, 0), px(x, y, 1), px(x, y, 2)])
        })),
        1 => DynamicImage::ImageRgba8(RgbaImage::from_fn(w as u32, h as u32, |x, y| {
            image::Rgba([px(x, y, 0), px(x, y, 1), px(x, y, 2), px(x, y, 3)])
        })),
        _ => DynamicImage::ImageLuma8(GrayImage::from_fn(w as u32, h as u32, |x, y| {
            image::Luma([px(x, y, 0)])
        })),
    };
    let (format, ext) = match i % 5 {
        0 | 3 => (ImageFormat::Png, "png"),
        1 => (ImageFormat::Jpeg, "jpg"),
        2 => (ImageFormat::Bmp, "BMP"),
        _ => (ImageFormat::Png, "PNG"),
    };
    let img = if format == ImageFormat::Jpeg && i % 3 == 1 {
        DynamicImage::ImageRgb8(img.to_rgb8())
    } else {
        img
    };
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    (out, ext)
}

/// Writes `n` generated images into `dir` as `g{i/10}/img_{i:03}.{ext}` (so the sorted order
/// is the index order) plus a non-image file; returns their paths in id order.
pub fn write_image_folder(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("README.txt"), "not an image").unwrap();
    (0..n)
        .map(|i| {
            let (bytes, ext) = image_bytes(i);
            let p = dir
                .join(format!("g{}", i / 10))
                .join(format!("img_{i:03}.{ext}"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect()
}

/// One output row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub image_path: Option<String>,
    pub embedding: Vec<f32>,
    pub extra: BTreeMap<String, String>,
}

/// Partition folders of `out` (sorted by partition number, then name).
pub fn partition_dirs(out: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("embeddings_")
        })
        .collect();
    dirs.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        let (head, n) = name.rsplit_once("_part_").unwrap();
        let start: u64 = head
            .trim_start_matches("embeddings_")
            .split('_')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (start, n.parse::<u64>().unwrap())
    });
    dirs
}

/// Rows of one `data.parquet`, in file order; extra columns rendered as strings.
pub fn read_rows(file: &Path) -> Vec<Row> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    let mut rows = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let paths = batch
            .column_by_name("image_path")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let emb = batch
            .column_by_name("embedding")
            .unwrap()
            .as_fixed_size_list()
            .clone();
        for r in 0..batch.num_rows() {
            let v = emb.value(r);
            let v = v.as_primitive::<Float32Type>();
            let mut extra = BTreeMap::new();
            for (f, col) in schema.fields().iter().zip(batch.columns()) {
                if ["id", "image_path", "embedding"].contains(&f.name().as_str()) || col.is_null(r)
                {
                    continue;
                }
                let s = match col.data_type() {
                    arrow_schema::DataType::Int64 => {
                        col.as_primitive::<Int64Type>().value(r).to_string()
                    }
                    arrow_schema::DataType::Float64 => {
                        col.as_primitive::<Float64Type>().value(r).to_string()
                    }
                    arrow_schema::DataType::Utf8 => col.as_string::<i32>().value(r).to_owned(),
                    arrow_schema::DataType::Boolean => col.as_boolean().value(r).to_string(),
                    other => panic!("unexpected column type {other}"),
                };
                extra.insert(f.name().clone(), s);
            }
            rows.push(Row {
                id: ids.value(r),
                image_path: (!paths.is_null(r)).then(|| paths.value(r).to_owned()),
                embedding: v.values().to_vec(),
                extra,
            });
        }
    }
    rows
}

/// All rows of all partitions of `out`, in partition order.
pub fn read_all_rows(out: &Path) -> Vec<Row> {
    partition_dirs(out)
        .iter()
        .flat_map(|d| read_rows(&d.join("data.parquet")))
        .collect()
}

/// Ids listed in all `errors.jsonl` of `out`.
pub fn failed_ids(out: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = partition_dirs(out)
        .iter()
        .flat_map(|d| glimpse_server::embed::read_failures(&d.join("errors.jsonl")).unwrap())
        .map(|f| f.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// Key-value footer of a Parquet file.
pub fn footer(file: &Path) -> BTreeMap<String, String> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}
