//! Writing the Parquet files the CLI produces: embedding shards in Glimpse's schema, offline
//! query results; and reading query vectors back.
//!
//! Every file is written to a hidden temporary file in its destination folder, fsynced, renamed
//! into place and the folder fsynced, so a crash leaves either the old file or the complete new
//! one, never a torn file under the final name.
//!
//! (About 730 lines, over the ~700 the house keeps to: the shard writer, the query-results
//! writer and the query reader share the schema and the atomic-write helpers here; split them
//! when a fourth format arrives.)

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::ingest::columns::{self, CellError};
use crate::ingest::error::{IngestError, Result, contain_panics};
use crate::ingest::row::{MetaValue, check_vector};

/// Key of the file metadata entry naming the embedding model.
pub const META_MODEL: &str = "glimpse.model";
/// Key of the file metadata entry holding the dimension, in decimal.
pub const META_DIM: &str = "glimpse.dim";
/// Key of the file metadata entry saying whether vectors are L2-normalised (`true`/`false`).
pub const META_NORMALIZED: &str = "glimpse.normalized";

/// Rows per Parquet row group unless configured: bounds the writer's buffer (~128 MiB at d=512).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 65_536;

/// The type of an extra column carried through into a written shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    /// `string`.
    Str,
    /// `int64`.
    Int,
    /// `float64`.
    Float,
    /// `bool`.
    Bool,
}

impl MetaKind {
    fn data_type(self) -> DataType {
        match self {
            MetaKind::Str => DataType::Utf8,
            MetaKind::Int => DataType::Int64,
            MetaKind::Float => DataType::Float64,
            MetaKind::Bool => DataType::Boolean,
        }
    }
}

/// An extra, nullable column of a written shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraColumn {
    /// Column name; must not be `id`, `image_path` or `embedding`.
    pub name: String,
    /// Column type.
    pub kind: MetaKind,
}

/// What a shard writer needs to know up front.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardWriterOptions {
    /// Embedding model name, stored as `glimpse.model`.
    pub model: String,
    /// Vector dimension, stored as `glimpse.dim`; every record must match it.
    pub dim: usize,
    /// Whether vectors are L2-normalised, stored as `glimpse.normalized`.
    pub normalized: bool,
    /// Extra columns, in order.
    pub extra_columns: Vec<ExtraColumn>,
    /// Maximum rows per row group.
    pub row_group_rows: usize,
}

impl ShardWriterOptions {
    /// Options with no extra columns, normalised vectors and the default row-group size.
    pub fn new(model: impl Into<String>, dim: usize) -> Self {
        Self {
            model: model.into(),
            dim,
            normalized: true,
            extra_columns: Vec::new(),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
        }
    }
}

/// One row to write in Glimpse's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRecord {
    /// Numeric id.
    pub id: i64,
    /// Image location, if any.
    pub image_path: Option<String>,
    /// The embedding; length must equal [`ShardWriterOptions::dim`], all values finite.
    pub vector: Vec<f32>,
    /// Values of the declared extra columns; absent keys are written as null.
    pub extra: BTreeMap<String, MetaValue>,
}

fn zstd_props(kv: Vec<KeyValue>, row_group_rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(kv))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build()
}

/// Streams records into a Parquet file in Glimpse's schema: `id` int64, `image_path` string
/// (nullable), `embedding` fixed_size_list<float32>[dim], then the extra columns; zstd-compressed.
pub struct EmbeddingShardWriter<W: Write + Send> {
    path: PathBuf,
    options: ShardWriterOptions,
    schema: SchemaRef,
    writer: ArrowWriter<W>,
    rows_written: u64,
}

impl<W: Write + Send> std::fmt::Debug for EmbeddingShardWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingShardWriter")
            .field("path", &self.path)
            .field("rows_written", &self.rows_written)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> EmbeddingShardWriter<W> {
    /// Starts a shard on `sink`; `path` only names the file in error messages.
    pub fn new(sink: W, path: &Path, options: ShardWriterOptions) -> Result<Self> {
        let invalid = |reason: String| IngestError::InvalidOptions {
            path: path.to_path_buf(),
            reason,
        };
        let dim = i32::try_from(options.dim)
            .ok()
            .filter(|&d| d > 0)
            .ok_or_else(|| invalid(format!("dimension {} out of range", options.dim)))?;
        let mut fields = vec![
            Field::new("id", DataType::Int64, false),
            Field::new("image_path", DataType::Utf8, true),
            Field::new(
                "embedding",
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, false)),
                    dim,
                ),
                false,
            ),
        ];
        for extra in &options.extra_columns {
            if fields.iter().any(|f| f.name() == &extra.name) {
                return Err(invalid(format!(
                    "column name `{}` is reserved or repeated",
                    extra.name
                )));
            }
            fields.push(Field::new(&extra.name, extra.kind.data_type(), true));
        }
        let schema = Arc::new(Schema::new(fields));
        let kv = vec![
            KeyValue::new(META_MODEL.to_owned(), options.model.clone()),
            KeyValue::new(META_DIM.to_owned(), options.dim.to_string()),
            KeyValue::new(META_NORMALIZED.to_owned(), options.normalized.to_string()),
        ];
        let props = zstd_props(kv, options.row_group_rows);
        let writer =
            ArrowWriter::try_new(sink, Arc::clone(&schema), Some(props)).map_err(|source| {
                IngestError::Parquet {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            options,
            schema,
            writer,
            rows_written: 0,
        })
    }

    /// Rows accepted so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Appends `records`; nothing of them is written if any is invalid.
    pub fn write(&mut self, records: &[ShardRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let batch = self.to_batch(records)?;
        self.writer
            .write(&batch)
            .map_err(|source| IngestError::Parquet {
                path: self.path.clone(),
                source,
            })?;
        self.rows_written += records.len() as u64;
        Ok(())
    }

    /// Adds a key-value entry to the file footer, beside `glimpse.model`, `glimpse.dim` and
    /// `glimpse.normalized` (e.g. the partitioning of `glimpse embed`).
    pub fn append_metadata(&mut self, key: &str, value: &str) {
        self.writer
            .append_key_value_metadata(KeyValue::new(key.to_owned(), value.to_owned()));
    }

    /// Writes the footer and returns the sink.
    pub fn finish(self) -> Result<W> {
        let path = self.path;
        self.writer
            .into_inner()
            .map_err(|source| IngestError::Parquet { path, source })
    }

    fn to_batch(&self, records: &[ShardRecord]) -> Result<RecordBatch> {
        let dim = self.options.dim;
        let mut flat = Vec::with_capacity(records.len() * dim);
        for r in records {
            let invalid = |reason: String| IngestError::InvalidRecord {
                path: self.path.clone(),
                row_id: r.id.to_string(),
                reason,
            };
            let mut expected = Some(dim);
            check_vector(&self.path, &r.id.to_string(), &r.vector, &mut expected).map_err(|e| {
                match e {
                    IngestError::DimensionMismatch { found, .. } => {
                        invalid(format!("vector has dimension {found}, the shard {dim}"))
                    }
                    other => other,
                }
            })?;
            if let Some(key) = r
                .extra
                .keys()
                .find(|k| !self.options.extra_columns.iter().any(|c| &c.name == *k))
            {
                return Err(invalid(format!("`{key}` is not a declared extra column")));
            }
            flat.extend_from_slice(&r.vector);
        }
        let ids = Int64Array::from_iter_values(records.iter().map(|r| r.id));
        let paths: StringArray = records.iter().map(|r| r.image_path.as_deref()).collect();
        let values = Float32Array::from(flat);
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let embedding = FixedSizeListArray::try_new(item, dim as i32, Arc::new(values), None)
            .map_err(|source| IngestError::Arrow {
                path: self.path.clone(),
                source,
            })?;
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(paths), Arc::new(embedding)];
        for col in &self.options.extra_columns {
            arrays.push(self.extra_array(col, records)?);
        }
        RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(|source| {
            IngestError::Arrow {
                path: self.path.clone(),
                source,
            }
        })
    }

    fn extra_array(&self, col: &ExtraColumn, records: &[ShardRecord]) -> Result<ArrayRef> {
        let mismatch = |r: &ShardRecord, v: &MetaValue| IngestError::InvalidRecord {
            path: self.path.clone(),
            row_id: r.id.to_string(),
            reason: format!(
                "value {v:?} does not fit column `{}` ({:?})",
                col.name, col.kind
            ),
        };
        let cells = records.iter().map(|r| (r, r.extra.get(&col.name)));
        Ok(match col.kind {
            MetaKind::Str => Arc::new(
                cells
                    .map(|(r, v)| match v {
                        None => Ok(None),
                        Some(MetaValue::Str(s)) => Ok(Some(s.as_str())),
                        Some(v) => Err(mismatch(r, v)),
                    })
                    .collect::<Result<StringArray>>()?,
            ),
            MetaKind::Int => Arc::new(
                cells
                    .map(|(r, v)| match v {
                        None => Ok(None),
                        Some(MetaValue::Int(i)) => Ok(Some(*i)),
                        Some(v) => Err(mismatch(r, v)),
                    })
                    .collect::<Result<Int64Array>>()?,
            ),
            MetaKind::Float => Arc::new(
                cells
                    .map(|(r, v)| match v {
                        None => Ok(None),
                        Some(MetaValue::Float(f)) => Ok(Some(*f)),
                        Some(MetaValue::Int(i)) => Ok(Some(*i as f64)),
                        Some(v) => Err(mismatch(r, v)),
                    })
                    .collect::<Result<Float64Array>>()?,
            ),
            MetaKind::Bool => Arc::new(
                cells
                    .map(|(r, v)| match v {
                        None => Ok(None),
                        Some(MetaValue::Bool(b)) => Ok(Some(*b)),
                        Some(v) => Err(mismatch(r, v)),
                    })
                    .collect::<Result<BooleanArray>>()?,
            ),
        })
    }
}

/// A file being written under a temporary name next to its final path.
///
/// Dropping it without [`AtomicFile::commit`] removes the temporary file.
struct AtomicFile {
    final_path: PathBuf,
    tmp_path: PathBuf,
    committed: bool,
}

impl AtomicFile {
    fn create(final_path: &Path) -> Result<(Self, BufWriter<File>)> {
        let io = |path: &Path, source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let name = final_path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .ok_or_else(|| IngestError::InvalidOptions {
                path: final_path.to_path_buf(),
                reason: "the file name must be non-empty UTF-8 and not start with '.'".to_owned(),
            })?;
        // The leading dot hides the file from discover_shards while it is incomplete.
        let tmp_path = final_path.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4()));
        let file = File::create_new(&tmp_path).map_err(|e| io(&tmp_path, e))?;
        Ok((
            Self {
                final_path: final_path.to_path_buf(),
                tmp_path,
                committed: false,
            },
            BufWriter::new(file),
        ))
    }

    /// Flushes and fsyncs `sink`, renames it into place and fsyncs the folder.
    fn commit(mut self, sink: BufWriter<File>) -> Result<PathBuf> {
        let io = |path: &Path, source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = sink
            .into_inner()
            .map_err(|e| io(&self.tmp_path, e.into_error()))?;
        file.sync_all().map_err(|e| io(&self.tmp_path, e))?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.final_path).map_err(|e| io(&self.final_path, e))?;
        self.committed = true;
        let dir = match self.final_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&dir, e))?;
        Ok(self.final_path.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover hidden temp file is ignored by discovery anyway.
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// An embedding shard being written atomically into a folder; see [`write_partition_atomic`].
pub struct PartitionWriter {
    file: AtomicFile,
    writer: EmbeddingShardWriter<BufWriter<File>>,
}

impl std::fmt::Debug for PartitionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("path", &self.file.final_path)
            .field("rows_written", &self.writer.rows_written)
            .finish_non_exhaustive()
    }
}

impl PartitionWriter {
    /// Starts `dir/file_name` (written as a hidden temporary file until [`Self::commit`]).
    pub fn create(dir: &Path, file_name: &str, options: ShardWriterOptions) -> Result<Self> {
        let final_path = dir.join(file_name);
        if Path::new(file_name).components().count() != 1 {
            return Err(IngestError::InvalidOptions {
                path: final_path,
                reason: "the file name must not contain a path separator".to_owned(),
            });
        }
        let (file, sink) = AtomicFile::create(&final_path)?;
        let writer = EmbeddingShardWriter::new(sink, &final_path, options)?;
        Ok(Self { file, writer })
    }

    /// Appends `records`.
    pub fn write(&mut self, records: &[ShardRecord]) -> Result<()> {
        self.writer.write(records)
    }

    /// Rows accepted so far.
    pub fn rows_written(&self) -> u64 {
        self.writer.rows_written()
    }

    /// Finishes the file, makes it durable and visible under its final name, which it replaces
    /// if present. Returns the final path.
    pub fn commit(self) -> Result<PathBuf> {
        let sink = self.writer.finish()?;
        self.file.commit(sink)
    }
}

/// Writes `records` as the shard `dir/file_name` in one go, atomically and durably.
pub fn write_partition_atomic(
    dir: &Path,
    file_name: &str,
    records: &[ShardRecord],
    options: ShardWriterOptions,
) -> Result<PathBuf> {
    let mut writer = PartitionWriter::create(dir, file_name, options)?;
    writer.write(records)?;
    writer.commit()
}

/// The answer to one offline query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Zero-based position of the query in its input file.
    pub query: i64,
    /// Ids of the hits, best first.
    pub ids: Vec<String>,
    /// Their scores, same order and length as `ids`.
    pub scores: Vec<f32>,
}

fn results_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query", DataType::Int64, false),
        Field::new(
            "ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            "scores",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
    ]))
}

/// Writes offline query results, one row per query: `query` int64, `ids` list<string>,
/// `scores` list<float32>; atomically like [`PartitionWriter`].
pub struct QueryResultsWriter {
    file: AtomicFile,
    writer: ArrowWriter<BufWriter<File>>,
}

impl std::fmt::Debug for QueryResultsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryResultsWriter")
            .field("path", &self.file.final_path)
            .finish_non_exhaustive()
    }
}

impl QueryResultsWriter {
    /// Starts the results file `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let (file, sink) = AtomicFile::create(path)?;
        let props = zstd_props(Vec::new(), DEFAULT_ROW_GROUP_ROWS);
        let writer =
            ArrowWriter::try_new(sink, results_schema(), Some(props)).map_err(|source| {
                IngestError::Parquet {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Ok(Self { file, writer })
    }

    /// Appends results.
    pub fn write(&mut self, results: &[QueryResult]) -> Result<()> {
        let path = &self.file.final_path;
        let mut ids = ListBuilder::new(StringBuilder::new());
        let mut scores = ListBuilder::new(Float32Builder::new());
        for r in results {
            if r.ids.len() != r.scores.len() {
                return Err(IngestError::InvalidRecord {
                    path: path.clone(),
                    row_id: format!("query {}", r.query),
                    reason: format!("{} ids but {} scores", r.ids.len(), r.scores.len()),
                });
            }
            for id in &r.ids {
                ids.values().append_value(id);
            }
            ids.append(true);
            scores.values().append_slice(&r.scores);
            scores.append(true);
        }
        let query = Int64Array::from_iter_values(results.iter().map(|r| r.query));
        let batch = RecordBatch::try_new(
            results_schema(),
            vec![
                Arc::new(query),
                Arc::new(ids.finish()),
                Arc::new(scores.finish()),
            ],
        )
        .map_err(|source| IngestError::Arrow {
            path: path.clone(),
            source,
        })?;
        self.writer
            .write(&batch)
            .map_err(|source| IngestError::Parquet {
                path: path.clone(),
                source,
            })
    }

    /// Finishes, fsyncs and renames the file into place; returns its path.
    pub fn commit(self) -> Result<PathBuf> {
        let sink = self
            .writer
            .into_inner()
            .map_err(|source| IngestError::Parquet {
                path: self.file.final_path.clone(),
                source,
            })?;
        self.file.commit(sink)
    }
}

fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = crate::ingest::reader::open_file(path)?;
    contain_panics(path, || {
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| IngestError::Parquet {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Reads a results file written by [`QueryResultsWriter`].
pub fn read_query_results(path: &Path) -> Result<Vec<QueryResult>> {
    contain_panics(path, || read_query_results_unguarded(path))
}

fn read_query_results_unguarded(path: &Path) -> Result<Vec<QueryResult>> {
    let reader = open_parquet(path)?
        .build()
        .map_err(|source| IngestError::Parquet {
            path: path.to_path_buf(),
            source,
        })?;
    let arrow = |source| IngestError::Arrow {
        path: path.to_path_buf(),
        source,
    };
    let wrong = |column: &str, found: &DataType, expected: &str| IngestError::WrongType {
        path: path.to_path_buf(),
        column: column.to_owned(),
        found: found.to_string(),
        expected: expected.to_owned(),
    };
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow)?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| IngestError::MissingColumn {
                    path: path.to_path_buf(),
                    column: name.to_owned(),
                    found: "a results file needs query, ids, scores".to_owned(),
                })
        };
        let (q, i, s) = (column("query")?, column("ids")?, column("scores")?);
        let queries = q
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| wrong("query", q.data_type(), "int64"))?;
        let ids = i
            .as_list_opt::<i32>()
            .ok_or_else(|| wrong("ids", i.data_type(), "list<string>"))?;
        let scores = s
            .as_list_opt::<i32>()
            .ok_or_else(|| wrong("scores", s.data_type(), "list<float32>"))?;
        for row in 0..batch.num_rows() {
            let id_list = ids.value(row);
            let id_values = id_list
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong("ids", i.data_type(), "list<string>"))?;
            let score_list = scores.value(row);
            let score_values = score_list
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| wrong("scores", s.data_type(), "list<float32>"))?;
            out.push(QueryResult {
                query: queries.value(row),
                ids: id_values
                    .iter()
                    .map(|v| v.unwrap_or("").to_owned())
                    .collect(),
                scores: score_values.values().to_vec(),
            });
        }
    }
    Ok(out)
}

/// Reads the `embedding` column of a query file (any embedding type Glimpse reads), checking
/// that every vector is non-null, non-empty, finite and of one dimension. Rows are named
/// `row N` (zero-based) in errors.
pub fn read_query_vectors(path: &Path) -> Result<Vec<Vec<f32>>> {
    contain_panics(path, || read_query_vectors_unguarded(path))
}

fn read_query_vectors_unguarded(path: &Path) -> Result<Vec<Vec<f32>>> {
    let builder = open_parquet(path)?;
    let schema = builder.schema().clone();
    let Some((index, field)) = schema
        .fields()
        .iter()
        .enumerate()
        .find(|(_, f)| f.name() == "embedding")
    else {
        return Err(IngestError::MissingColumn {
            path: path.to_path_buf(),
            column: "embedding".to_owned(),
            found: schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if !columns::embedding_type_ok(field.data_type()) {
        return Err(IngestError::WrongType {
            path: path.to_path_buf(),
            column: "embedding".to_owned(),
            found: field.data_type().to_string(),
            expected: columns::EMBEDDING_TYPES.to_owned(),
        });
    }
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|source| IngestError::Parquet {
            path: path.to_path_buf(),
            source,
        })?;
    let mut dim = columns::schema_dim(field.data_type());
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| IngestError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
        let column = batch.column(0);
        for row in 0..batch.num_rows() {
            let row_id = format!("row {}", out.len());
            let vector = columns::vector_at(column.as_ref(), row).map_err(|e| match e {
                CellError::Null | CellError::NullComponent(_) => IngestError::NullValue {
                    path: path.to_path_buf(),
                    row_id: row_id.clone(),
                    column: "embedding".to_owned(),
                },
                CellError::ByteLength(len) => IngestError::EmbeddingByteLength {
                    path: path.to_path_buf(),
                    row_id: row_id.clone(),
                    len,
                },
                CellError::Type => IngestError::WrongType {
                    path: path.to_path_buf(),
                    column: "embedding".to_owned(),
                    found: column.data_type().to_string(),
                    expected: columns::EMBEDDING_TYPES.to_owned(),
                },
            })?;
            check_vector(path, &row_id, &vector, &mut dim)?;
            out.push(vector);
        }
    }
    Ok(out)
}
