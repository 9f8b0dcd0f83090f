//! Parquet ingest: reading embedding shards into neutral [`IngestRow`]s, and writing the Parquet
//! files the CLI produces.
//!
//! Two schemas are read (see `docs/format.md`, "Parquet formats Glimpse reads and writes"):
//! Glimpse's own (`id`, `embedding`, `image_path`, extra scalar columns) and the original Python
//! pipeline's (`idx`, `output` = a pickled `(image, numpy array)`), the latter decoded by a small
//! non-executing pickle interpreter ([`pickle`]). Everything here is synchronous and meant to run
//! on a blocking thread (`tokio::task::spawn_blocking`); rows are produced in bounded batches.

mod columns;
mod discover;
mod error;
pub mod pickle;
mod reader;
mod row;
mod write;

pub(crate) use columns::meta_kind;
pub use discover::{discover_shards, natural_cmp};
pub use error::{IngestError, Result};
pub use reader::{
    DEFAULT_BATCH_SIZE, DatasetBatches, DatasetReader, ShardBatches, ShardLayout, ShardReader,
};
pub use row::{IngestRow, MAX_ID_BYTES, MetaValue};
pub use write::{
    DEFAULT_ROW_GROUP_ROWS, EmbeddingShardWriter, ExtraColumn, META_DIM, META_MODEL,
    META_NORMALIZED, MetaKind, PartitionWriter, QueryResult, QueryResultsWriter, ShardRecord,
    ShardWriterOptions, read_query_results, read_query_vectors, write_partition_atomic,
};

/// The server moves readers and writers into `spawn_blocking` and errors into `anyhow`.
const _: () = {
    const fn send<T: Send>() {}
    const fn send_sync<T: Send + Sync + 'static>() {}
    send::<ShardReader>();
    send::<ShardBatches>();
    send::<DatasetReader>();
    send::<PartitionWriter>();
    send::<QueryResultsWriter>();
    send_sync::<IngestError>();
    send_sync::<IngestRow>();
};
