//! Reading one Parquet shard, or a whole data set of shards, as batches of [`IngestRow`]s.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch};
use base64::Engine as _;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};

use crate::ingest::columns::{self, CellError, ScalarColumn};
use crate::ingest::discover::discover_shards;
use crate::ingest::error::{IngestError, Result, contain_panics};
use crate::ingest::pickle::{PickledImage, decode_pipeline_output};
use crate::ingest::row::{IngestRow, check_id, check_vector};

/// Rows per batch when the caller does not choose.
pub const DEFAULT_BATCH_SIZE: usize = 4096;

/// The two schemas Glimpse reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardLayout {
    /// Glimpse's own: `id`, `embedding`, optional `image_path`, extra scalar columns.
    Glimpse,
    /// The original Python pipeline's: `idx` int64 and `output` pickled `(image, embedding)`.
    Pipeline,
}

/// Column names by role.
const ID: &str = "id";
const EMBEDDING: &str = "embedding";
const IMAGE_PATH: &str = "image_path";
const IDX: &str = "idx";
const OUTPUT: &str = "output";

/// How to turn a record batch of one shard into rows; shared by the first-row probe and the
/// batch iterator.
#[derive(Debug, Clone)]
struct Converter {
    path: PathBuf,
    layout: ShardLayout,
    has_image_path: bool,
    metadata_columns: Vec<String>,
}

/// One Parquet shard, opened: schema checked, dimension known, no rows held.
///
/// No file handle is kept open between calls, so a data set of thousands of shards can be
/// opened up front without exhausting descriptors.
#[derive(Debug, Clone)]
pub struct ShardReader {
    converter: Converter,
    metadata: ArrowReaderMetadata,
    projection: Vec<usize>,
    dim: Option<usize>,
    num_rows: u64,
    batch_size: usize,
}

impl ShardReader {
    /// Opens `path`, detects its layout, checks the column types and reads the first row to learn
    /// the dimension (and fail early on a bad first row).
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_file(path)?;
        let metadata = contain_panics(path, || {
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|source| {
                IngestError::Parquet {
                    path: path.to_path_buf(),
                    source,
                }
            })
        })?;
        check_chunk_ranges(path, &metadata)?;
        let schema = metadata.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let missing = |column: &str| IngestError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_owned(),
            found: names.join(", "),
        };
        let field = |name: &str| schema.fields().iter().find(|f| f.name() == name);
        let wrong_type =
            |column: &str, found: &arrow_schema::DataType, expected: &str| IngestError::WrongType {
                path: path.to_path_buf(),
                column: column.to_owned(),
                found: found.to_string(),
                expected: expected.to_owned(),
            };

        let (layout, reserved, schema_dim): (ShardLayout, &[&str], Option<usize>) =
            if let Some(embedding) = field(EMBEDDING) {
                let dt = embedding.data_type();
                if !columns::embedding_type_ok(dt) {
                    return Err(wrong_type(EMBEDDING, dt, columns::EMBEDDING_TYPES));
                }
                let id = field(ID).ok_or_else(|| missing(ID))?;
                if !columns::id_type_ok(id.data_type()) {
                    return Err(wrong_type(ID, id.data_type(), columns::ID_TYPES));
                }
                if let Some(image) = field(IMAGE_PATH)
                    && !columns::str_type_ok(image.data_type())
                {
                    return Err(wrong_type(IMAGE_PATH, image.data_type(), "string"));
                }
                (
                    ShardLayout::Glimpse,
                    &[ID, EMBEDDING, IMAGE_PATH],
                    columns::schema_dim(dt),
                )
            } else if let Some(output) = field(OUTPUT) {
                if !columns::binary_type_ok(output.data_type()) {
                    return Err(wrong_type(OUTPUT, output.data_type(), "binary (a pickle)"));
                }
                let idx = field(IDX).ok_or_else(|| missing(IDX))?;
                if !columns::id_type_ok(idx.data_type()) {
                    return Err(wrong_type(IDX, idx.data_type(), columns::ID_TYPES));
                }
                (ShardLayout::Pipeline, &[IDX, OUTPUT], None)
            } else {
                return Err(missing(EMBEDDING));
            };

        let mut projection = Vec::new();
        let mut metadata_columns = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            let name = f.name().as_str();
            if reserved.contains(&name) {
                projection.push(i);
            } else if name.starts_with("__index_level_") {
                // pandas' saved RangeIndex/Index: an artefact of to_parquet, not user data.
            } else if columns::scalar_type_ok(f.data_type()) {
                projection.push(i);
                metadata_columns.push(name.to_owned());
            } else {
                tracing::warn!(
                    path = %path.display(),
                    column = name,
                    data_type = %f.data_type(),
                    "ignoring column of a type Glimpse does not carry into metadata"
                );
            }
        }
        let num_rows = u64::try_from(metadata.metadata().file_metadata().num_rows()).unwrap_or(0);
        let mut reader = Self {
            converter: Converter {
                path: path.to_path_buf(),
                layout,
                has_image_path: layout == ShardLayout::Glimpse && field(IMAGE_PATH).is_some(),
                metadata_columns,
            },
            metadata,
            projection,
            dim: schema_dim,
            num_rows,
            batch_size: DEFAULT_BATCH_SIZE,
        };
        if num_rows > 0 {
            let mut probe = reader.build_batches(1, 0, Some(1), schema_dim)?;
            if let Some(first) = probe.next() {
                let first = first?;
                reader.dim = first.first().map(|r| r.vector.len()).or(schema_dim);
            }
        }
        Ok(reader)
    }

    /// Sets the number of rows per batch (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The shard's path.
    pub fn path(&self) -> &Path {
        &self.converter.path
    }

    /// Which schema the shard uses.
    pub fn layout(&self) -> ShardLayout {
        self.converter.layout
    }

    /// The vector dimension; `None` only for a shard with no rows whose schema does not fix it.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Number of rows, from the file footer.
    pub fn num_rows(&self) -> u64 {
        self.num_rows
    }

    /// Names of the extra columns that become [`IngestRow::metadata`].
    pub fn metadata_columns(&self) -> &[String] {
        &self.converter.metadata_columns
    }

    /// The file's key-value metadata (e.g. `glimpse.model`), minus Arrow's own schema blob.
    pub fn key_value_metadata(&self) -> BTreeMap<String, String> {
        self.metadata
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter(|kv| kv.key != "ARROW:schema")
            .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?)))
            .collect()
    }

    /// Iterates over the shard's rows in batches of the configured size.
    ///
    /// Every row is validated (id, dimension, finite values); the first error ends the iteration.
    pub fn batches(&self) -> Result<ShardBatches> {
        self.build_batches(self.batch_size, 0, None, self.dim)
    }

    /// Like [`Self::batches`], but skips the first `first_row` rows: resumes an interrupted
    /// ingest without decoding (or unpickling) what was already loaded.
    pub fn batches_from(&self, first_row: u64) -> Result<ShardBatches> {
        self.build_batches(self.batch_size, first_row, None, self.dim)
    }

    fn build_batches(
        &self,
        batch_size: usize,
        offset: u64,
        limit: Option<usize>,
        dim: Option<usize>,
    ) -> Result<ShardBatches> {
        let path = &self.converter.path;
        let file = open_file(path)?;
        let inner = contain_panics(path, || {
            let builder =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone());
            let mask =
                ProjectionMask::roots(builder.parquet_schema(), self.projection.iter().copied());
            let mut builder = builder.with_projection(mask).with_batch_size(batch_size);
            if offset > 0 {
                // Beyond usize::MAX there is nothing left to read anyway.
                builder = builder.with_offset(usize::try_from(offset).unwrap_or(usize::MAX));
            }
            if let Some(limit) = limit {
                builder = builder.with_limit(limit);
            }
            builder.build().map_err(|source| IngestError::Parquet {
                path: path.clone(),
                source,
            })
        })?;
        Ok(ShardBatches {
            converter: self.converter.clone(),
            inner,
            dim,
            rows_done: offset,
            finished: false,
        })
    }
}

/// Refuses a footer whose column chunks start at or span a negative number of bytes: the
/// `parquet` crate asserts against those when it reads the chunk (found by fuzzing), and a clear
/// error at open beats a contained panic on the first read.
fn check_chunk_ranges(path: &Path, metadata: &ArrowReaderMetadata) -> Result<()> {
    for (g, group) in metadata.metadata().row_groups().iter().enumerate() {
        for (c, chunk) in group.columns().iter().enumerate() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            if start < 0 || chunk.compressed_size() < 0 {
                return Err(IngestError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "row group {g}, column {c}: the footer gives a negative offset or size"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Opens a shard, telling a missing file from other IO errors. Only a regular file is read:
/// the open does not block (a FIFO swapped in after the folder walk would hang a worker for
/// good), and the opened file's own type is checked.
pub(crate) fn open_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| open_error(path, source))?;
    let meta = file.metadata().map_err(|source| open_error(path, source))?;
    if !meta.is_file() {
        return Err(IngestError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

fn open_error(path: &Path, source: std::io::Error) -> IngestError {
    if source.kind() == std::io::ErrorKind::NotFound {
        IngestError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        IngestError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Iterator over the row batches of one shard; see [`ShardReader::batches`].
pub struct ShardBatches {
    converter: Converter,
    inner: ParquetRecordBatchReader,
    dim: Option<usize>,
    rows_done: u64,
    finished: bool,
}

impl std::fmt::Debug for ShardBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardBatches")
            .field("path", &self.converter.path)
            .field("rows_done", &self.rows_done)
            .finish_non_exhaustive()
    }
}

impl Iterator for ShardBatches {
    type Item = Result<Vec<IngestRow>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let Self {
            converter,
            inner,
            dim,
            rows_done,
            ..
        } = self;
        let result = contain_panics(&converter.path, || match inner.next() {
            None => Ok(None),
            Some(Ok(batch)) => converter.convert(&batch, *rows_done, dim).map(Some),
            Some(Err(source)) => Err(IngestError::Arrow {
                path: converter.path.clone(),
                source,
            }),
        })
        .transpose()?;
        match &result {
            Ok(rows) => self.rows_done += rows.len() as u64,
            Err(_) => self.finished = true,
        }
        Some(result)
    }
}

impl Converter {
    fn column<'b>(&self, batch: &'b RecordBatch, name: &str) -> Result<&'b dyn Array> {
        batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| IngestError::MissingColumn {
                path: self.path.clone(),
                column: name.to_owned(),
                found: batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn convert(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        dim: &mut Option<usize>,
    ) -> Result<Vec<IngestRow>> {
        let (id_name, data_name) = match self.layout {
            ShardLayout::Glimpse => (ID, EMBEDDING),
            ShardLayout::Pipeline => (IDX, OUTPUT),
        };
        let ids = self.column(batch, id_name)?;
        let data = self.column(batch, data_name)?;
        let image_paths = if self.has_image_path {
            Some(self.column(batch, IMAGE_PATH)?)
        } else {
            None
        };
        let meta = self
            .metadata_columns
            .iter()
            .map(|name| Ok((name, ScalarColumn::new(self.column(batch, name)?))))
            .collect::<Result<Vec<_>>>()?;

        let mut rows = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let row_no = first_row + row as u64;
            let id = columns::id_at(ids, row).ok_or_else(|| IngestError::NullValue {
                path: self.path.clone(),
                row_id: format!("row {row_no}"),
                column: id_name.to_owned(),
            })?;
            check_id(&self.path, row_no, &id)?;
            let (vector, image_path, image_bytes) = match self.layout {
                ShardLayout::Glimpse => {
                    let vector = self.vector(data, row, &id)?;
                    let image_path = image_paths
                        .and_then(|a| columns::str_at(a, row))
                        .map(str::to_owned);
                    (vector, image_path, None)
                }
                ShardLayout::Pipeline => {
                    let bytes =
                        columns::bytes_at(data, row).ok_or_else(|| IngestError::NullValue {
                            path: self.path.clone(),
                            row_id: id.clone(),
                            column: OUTPUT.to_owned(),
                        })?;
                    let out =
                        decode_pipeline_output(bytes).map_err(|source| IngestError::Pickle {
                            path: self.path.clone(),
                            row_id: id.clone(),
                            source,
                        })?;
                    let (path, image) = classify_image(out.image);
                    (out.embedding, path, image)
                }
            };
            check_vector(&self.path, &id, &vector, dim)?;
            let metadata = meta
                .iter()
                .filter_map(|(name, col)| Some(((*name).clone(), col.value(row)?)))
                .collect();
            rows.push(IngestRow {
                id,
                vector,
                image_path,
                image_bytes,
                metadata,
            });
        }
        Ok(rows)
    }

    fn vector(&self, data: &dyn Array, row: usize, id: &str) -> Result<Vec<f32>> {
        columns::vector_at(data, row).map_err(|e| match e {
            CellError::Null => IngestError::NullValue {
                path: self.path.clone(),
                row_id: id.to_owned(),
                column: EMBEDDING.to_owned(),
            },
            CellError::NullComponent(i) => IngestError::NullValue {
                path: self.path.clone(),
                row_id: id.to_owned(),
                column: format!("{EMBEDDING}[{i}]"),
            },
            CellError::ByteLength(len) => IngestError::EmbeddingByteLength {
                path: self.path.clone(),
                row_id: id.to_owned(),
                len,
            },
            CellError::Type => IngestError::WrongType {
                path: self.path.clone(),
                column: EMBEDDING.to_owned(),
                found: data.data_type().to_string(),
                expected: columns::EMBEDDING_TYPES.to_owned(),
            },
        })
    }
}

/// Splits the pickled image field into a path or inline image bytes.
///
/// A `str` is a path unless it is base64 of a recognisable image (JPEG, PNG, GIF, WebP): paths are
/// often valid base64 too, so the decoded magic number is what decides. `bytes` were always the
/// base64 text of the image; if they do not decode they are kept as the raw image.
fn classify_image(image: PickledImage) -> (Option<String>, Option<Vec<u8>>) {
    match image {
        PickledImage::None => (None, None),
        PickledImage::Str(s) => match decode_base64(s.as_bytes()) {
            Some(bytes) if looks_like_image(&bytes) => (None, Some(bytes)),
            _ => (Some(s), None),
        },
        PickledImage::Bytes(b) => match decode_base64(&b) {
            Some(bytes) => (None, Some(bytes)),
            None => (None, Some(b)),
        },
    }
}

fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // Python's base64.encodebytes wraps lines; strip the whitespace it adds.
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return None;
    }
    LENIENT.decode(compact).ok()
}

fn looks_like_image(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8, 0xff])
        || bytes.starts_with(b"\x89PNG\r\n\x1a\n")
        || bytes.starts_with(b"GIF87a")
        || bytes.starts_with(b"GIF89a")
        || (bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP")
}

/// All shards of a data set, opened and checked to share one dimension.
#[derive(Debug, Clone)]
pub struct DatasetReader {
    shards: Vec<ShardReader>,
    dim: Option<usize>,
}

impl DatasetReader {
    /// Discovers the shards under `paths` (see [`discover_shards`]) and opens each one.
    ///
    /// Fails before any row is returned if a shard is unreadable or its dimension differs from
    /// the first shard's.
    pub fn open(paths: &[PathBuf], batch_size: usize) -> Result<Self> {
        let mut shards = Vec::new();
        let mut reference: Option<(PathBuf, usize)> = None;
        for path in discover_shards(paths)? {
            let shard = ShardReader::open(&path)?.with_batch_size(batch_size);
            if let Some(found) = shard.dim() {
                match &reference {
                    Some((first, expected)) if *expected != found => {
                        return Err(IngestError::ShardDimensionMismatch {
                            path,
                            found,
                            reference: first.clone(),
                            expected: *expected,
                        });
                    }
                    Some(_) => {}
                    None => reference = Some((path, found)),
                }
            }
            shards.push(shard);
        }
        Ok(Self {
            shards,
            dim: reference.map(|(_, d)| d),
        })
    }

    /// The opened shards, in discovery order.
    pub fn shards(&self) -> &[ShardReader] {
        &self.shards
    }

    /// The common dimension; `None` only when every shard is empty.
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Total rows over all shards, from the footers.
    pub fn num_rows(&self) -> u64 {
        self.shards.iter().map(ShardReader::num_rows).sum()
    }

    /// Iterates over the batches of every shard in order; the first error ends the iteration.
    pub fn batches(&self) -> DatasetBatches<'_> {
        DatasetBatches {
            shards: self.shards.iter(),
            current: None,
            finished: false,
        }
    }
}

/// Iterator over all batches of a [`DatasetReader`].
#[derive(Debug)]
pub struct DatasetBatches<'a> {
    shards: std::slice::Iter<'a, ShardReader>,
    current: Option<ShardBatches>,
    finished: bool,
}

impl Iterator for DatasetBatches<'_> {
    type Item = Result<Vec<IngestRow>>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            if let Some(current) = &mut self.current {
                match current.next() {
                    Some(Ok(rows)) => return Some(Ok(rows)),
                    Some(Err(e)) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                    None => self.current = None,
                }
            }
            let shard = self.shards.next()?;
            match shard.batches() {
                Ok(batches) => self.current = Some(batches),
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_classification() {
        assert_eq!(
            classify_image(PickledImage::Str("/data/img/0001.jpg".into())),
            (Some("/data/img/0001.jpg".into()), None)
        );
        // "abcd" is valid base64 but not an image: it stays a path.
        assert_eq!(
            classify_image(PickledImage::Str("abcd".into())),
            (Some("abcd".into()), None)
        );
        let jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
        assert_eq!(
            classify_image(PickledImage::Str(b64.clone())),
            (None, Some(jpeg.clone()))
        );
        assert_eq!(
            classify_image(PickledImage::Bytes(b64.into_bytes())),
            (None, Some(jpeg.clone()))
        );
        assert_eq!(
            classify_image(PickledImage::Bytes(jpeg.clone())),
            (None, Some(jpeg))
        );
        assert_eq!(classify_image(PickledImage::None), (None, None));
    }
}
