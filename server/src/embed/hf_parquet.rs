//! Images stored in Parquet the way Hugging Face `datasets` writes them: an `image` column that
//! is a struct of `bytes` (binary) and `path` (string), next to scalar columns (`label`, ...)
//! that are carried through into the embedding partitions.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::embed::error::{EmbedError, Result, io_err};
use crate::embed::item::{Payload, SourceItem};
use crate::ingest::{ExtraColumn, MetaValue, discover_shards, meta_kind};

/// Name of the image column.
pub const IMAGE_COLUMN: &str = "image";
/// Column names of the output schema; input columns of these names are not carried through.
const RESERVED: [&str; 3] = ["id", "image_path", "embedding"];
/// Rows decoded from Parquet at a time.
const READ_BATCH_ROWS: usize = 128;

/// One Parquet file of the input and where its rows sit in the global order.
#[derive(Debug, Clone)]
struct ParquetFile {
    path: PathBuf,
    first_id: u64,
    row_group_rows: Vec<u64>,
    image_index: usize,
    extra_indices: Vec<usize>,
}

impl ParquetFile {
    fn rows(&self) -> u64 {
        self.row_group_rows.iter().sum()
    }
}

/// A sequence of Parquet files read as one table of images.
#[derive(Debug)]
pub struct ParquetImages {
    files: Vec<ParquetFile>,
    extra_columns: Vec<ExtraColumn>,
    len: u64,
}

impl ParquetImages {
    /// Opens the files (folders are expanded with [`discover_shards`]); reads only footers.
    /// The first file decides the carried-through columns; the others must have them too.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let files = discover_shards(paths).map_err(|e| EmbedError::InvalidArgs(e.to_string()))?;
        let mut out = Vec::with_capacity(files.len());
        let mut extra_columns: Option<Vec<ExtraColumn>> = None;
        let mut next_id = 0u64;
        for path in files {
            let bad = |reason: String| EmbedError::Input {
                path: path.clone(),
                reason,
            };
            let file = File::open(&path).map_err(io_err(&path))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
                EmbedError::Parquet {
                    path: path.clone(),
                    source,
                }
            })?;
            let schema = builder.schema().clone();
            let image_index = schema.index_of(IMAGE_COLUMN).map_err(|_| {
                bad(format!(
                    "no `{IMAGE_COLUMN}` column (expected the Hugging Face image layout: a struct of `bytes` and `path`)"
                ))
            })?;
            check_image_type(schema.field(image_index).data_type()).map_err(&bad)?;
            let columns = extra_columns.get_or_insert_with(|| {
                schema
                    .fields()
                    .iter()
                    .filter(|f| f.name() != IMAGE_COLUMN)
                    .filter_map(|f| {
                        if RESERVED.contains(&f.name().as_str()) {
                            tracing::warn!(column = %f.name(), "input column has a reserved output name; not carried through");
                            return None;
                        }
                        match meta_kind(f.data_type()) {
                            Some(kind) => Some(ExtraColumn {
                                name: f.name().clone(),
                                kind,
                            }),
                            None => {
                                tracing::warn!(column = %f.name(), data_type = %f.data_type(), "column is not a scalar; not carried through");
                                None
                            }
                        }
                    })
                    .collect()
            });
            let mut extra_indices = Vec::with_capacity(columns.len());
            for col in columns.iter() {
                let idx = schema.index_of(&col.name).map_err(|_| {
                    bad(format!(
                        "no column `{}`, which the first input file has",
                        col.name
                    ))
                })?;
                if meta_kind(schema.field(idx).data_type()) != Some(col.kind) {
                    return Err(bad(format!(
                        "column `{}` is {}, the first input file's is {:?}",
                        col.name,
                        schema.field(idx).data_type(),
                        col.kind
                    )));
                }
                extra_indices.push(idx);
            }
            let row_group_rows = builder
                .metadata()
                .row_groups()
                .iter()
                .map(|rg| u64::try_from(rg.num_rows()).unwrap_or(0))
                .collect();
            let f = ParquetFile {
                path: path.clone(),
                first_id: next_id,
                row_group_rows,
                image_index,
                extra_indices,
            };
            next_id += f.rows();
            out.push(f);
        }
        Ok(Self {
            files: out,
            extra_columns: extra_columns.unwrap_or_default(),
            len: next_id,
        })
    }

    /// Total rows.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The carried-through columns.
    pub fn extra_columns(&self) -> &[ExtraColumn] {
        &self.extra_columns
    }

    /// The rows with ids in `range`, in order; row groups outside it are not read.
    pub fn items(&self, range: Range<u64>) -> Result<ParquetItems<'_>> {
        let segments = self
            .files
            .iter()
            .filter(|f| f.first_id < range.end && f.first_id + f.rows() > range.start)
            .map(|f| {
                let lo = range.start.max(f.first_id) - f.first_id;
                let hi = range.end.min(f.first_id + f.rows()) - f.first_id;
                (f, lo..hi)
            })
            .collect();
        Ok(ParquetItems {
            source: self,
            segments,
            reader: None,
            pending: VecDeque::new(),
            failed: false,
        })
    }
}

fn check_image_type(dt: &DataType) -> std::result::Result<(), String> {
    match dt {
        DataType::Struct(fields) => {
            let bytes = fields.iter().find(|f| f.name() == "bytes");
            match bytes.map(|f| f.data_type()) {
                Some(DataType::Binary | DataType::LargeBinary | DataType::BinaryView) => Ok(()),
                _ => Err(format!(
                    "`{IMAGE_COLUMN}` struct has no binary `bytes` field"
                )),
            }
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Ok(()),
        other => Err(format!(
            "`{IMAGE_COLUMN}` column is {other}, expected a struct of `bytes` and `path`"
        )),
    }
}

/// Iterator over a range of [`ParquetImages`] rows.
pub struct ParquetItems<'a> {
    source: &'a ParquetImages,
    segments: VecDeque<(&'a ParquetFile, Range<u64>)>,
    reader: Option<(&'a ParquetFile, u64, ParquetRecordBatchReader)>,
    pending: VecDeque<SourceItem>,
    failed: bool,
}

impl std::fmt::Debug for ParquetItems<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetItems")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Iterator for ParquetItems<'_> {
    type Item = Result<SourceItem>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if let Some((file, next_id, reader)) = &mut self.reader {
                match reader.next() {
                    Some(Ok(batch)) => {
                        let first = *next_id;
                        *next_id += batch.num_rows() as u64;
                        match batch_items(self.source, file, first, &batch) {
                            Ok(items) => self.pending.extend(items),
                            Err(e) => {
                                self.failed = true;
                                return Some(Err(e));
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.failed = true;
                        return Some(Err(EmbedError::Input {
                            path: file.path.clone(),
                            reason: e.to_string(),
                        }));
                    }
                    None => self.reader = None,
                }
            }
            let (file, rows) = self.segments.pop_front()?;
            match open_segment(file, rows.clone()) {
                Ok(reader) => self.reader = Some((file, file.first_id + rows.start, reader)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A reader over rows `rows` (file-local) of `file`, reading only the row groups they touch.
fn open_segment(file: &ParquetFile, rows: Range<u64>) -> Result<ParquetRecordBatchReader> {
    let parquet_err = |source| EmbedError::Parquet {
        path: file.path.clone(),
        source,
    };
    let f = File::open(&file.path).map_err(io_err(&file.path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(parquet_err)?;
    let mut groups = Vec::new();
    let mut group_start = 0u64;
    let mut skip = None;
    for (g, &n) in file.row_group_rows.iter().enumerate() {
        let group_end = group_start + n;
        if group_end > rows.start && group_start < rows.end {
            skip.get_or_insert_with(|| rows.start - group_start);
            groups.push(g);
        }
        group_start = group_end;
    }
    let mut roots = vec![file.image_index];
    roots.extend(&file.extra_indices);
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    builder
        .with_row_groups(groups)
        .with_projection(mask)
        .with_offset(usize::try_from(skip.unwrap_or(0)).unwrap_or(usize::MAX))
        .with_limit(usize::try_from(rows.end - rows.start).unwrap_or(usize::MAX))
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(parquet_err)
}

fn batch_items(
    source: &ParquetImages,
    file: &ParquetFile,
    first_id: u64,
    batch: &RecordBatch,
) -> Result<Vec<SourceItem>> {
    let schema = batch.schema();
    let column = |name: &str| {
        schema
            .index_of(name)
            .map(|i| batch.column(i))
            .map_err(|_| EmbedError::Input {
                path: file.path.clone(),
                reason: format!("column `{name}` missing from a record batch"),
            })
    };
    let image = column(IMAGE_COLUMN)?;
    let (bytes_col, path_col) = match image.as_struct_opt() {
        Some(s) => (
            s.column_by_name("bytes").cloned(),
            s.column_by_name("path").cloned(),
        ),
        None => (Some(image.clone()), None),
    };
    let extras = source
        .extra_columns
        .iter()
        .map(|c| column(&c.name).map(|a| (c.name.clone(), a.clone())))
        .collect::<Result<Vec<_>>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            let image_path = path_col.as_deref().and_then(|a| string_at(a, row));
            let image_null = image.is_null(row);
            let payload = match bytes_col.as_deref().and_then(|a| binary_at(a, row)) {
                Some(b) if !image_null => Payload::Bytes(b),
                _ => Payload::Missing(format!(
                    "row {} of {} has no image bytes",
                    first_id - file.first_id + row as u64,
                    file.path.display()
                )),
            };
            let extra = extras
                .iter()
                .filter_map(|(name, a)| meta_at(a.as_ref(), row).map(|v| (name.clone(), v)))
                .collect::<BTreeMap<_, _>>();
            SourceItem {
                id: first_id + row as u64,
                image_path,
                payload,
                extra,
            }
        })
        .collect())
}

fn binary_at(a: &dyn Array, i: usize) -> Option<Vec<u8>> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Binary => a.as_binary_opt::<i32>().map(|b| b.value(i).to_vec()),
        DataType::LargeBinary => a.as_binary_opt::<i64>().map(|b| b.value(i).to_vec()),
        DataType::BinaryView => a.as_binary_view_opt().map(|b| b.value(i).to_vec()),
        _ => None,
    }
}

fn string_at(a: &dyn Array, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string_opt::<i32>().map(|s| s.value(i).to_owned()),
        DataType::LargeUtf8 => a.as_string_opt::<i64>().map(|s| s.value(i).to_owned()),
        DataType::Utf8View => a.as_string_view_opt().map(|s| s.value(i).to_owned()),
        _ => None,
    }
}

fn meta_at(a: &dyn Array, i: usize) -> Option<MetaValue> {
    if a.is_null(i) {
        return None;
    }
    let int = |v: i64| Some(MetaValue::Int(v));
    match a.data_type() {
        DataType::Boolean => a.as_boolean_opt().map(|b| MetaValue::Bool(b.value(i))),
        DataType::Int8 => int(a.as_primitive_opt::<Int8Type>()?.value(i).into()),
        DataType::Int16 => int(a.as_primitive_opt::<Int16Type>()?.value(i).into()),
        DataType::Int32 => int(a.as_primitive_opt::<Int32Type>()?.value(i).into()),
        DataType::Int64 => int(a.as_primitive_opt::<Int64Type>()?.value(i)),
        DataType::UInt8 => int(a.as_primitive_opt::<UInt8Type>()?.value(i).into()),
        DataType::UInt16 => int(a.as_primitive_opt::<UInt16Type>()?.value(i).into()),
        DataType::UInt32 => int(a.as_primitive_opt::<UInt32Type>()?.value(i).into()),
        // The output column is int64; values that do not fit are dropped (null) with a warning.
        DataType::UInt64 => match i64::try_from(a.as_primitive_opt::<UInt64Type>()?.value(i)) {
            Ok(v) => int(v),
            Err(_) => {
                tracing::warn!("uint64 value above i64::MAX written as null");
                None
            }
        },
        DataType::Float32 => Some(MetaValue::Float(
            a.as_primitive_opt::<Float32Type>()?.value(i).into(),
        )),
        DataType::Float64 => Some(MetaValue::Float(
            a.as_primitive_opt::<Float64Type>()?.value(i),
        )),
        _ => string_at(a, i).map(MetaValue::Str),
    }
}
