//! `glimpse embed`: batch CLIP image embeddings into partitioned Parquet, resumable and sliced
//! by id range so many machines can share one input (see `docs/pipeline.md`).
//!
//! * [`source`] lists the input (folder, image list, Hugging Face style Parquet, hub dataset
//!   via [`hub`]) as one sequence with stable ids.
//! * [`plan`] cuts `start..end` into partitions and names their folders.
//! * [`prepare`] reads, decodes, optionally saves and preprocesses one image.
//! * [`pipeline`] runs decode (rayon) and model + writer concurrently over bounded channels.
//! * [`partition`] writes a partition folder atomically and validates existing ones on resume.
//! * [`progress`] reports to a terminal bar or to log lines.

pub mod error;
pub mod hf_parquet;
pub mod hub;
pub mod item;
pub mod partition;
pub mod pipeline;
pub mod plan;
pub mod prepare;
pub mod progress;
pub mod source;

pub use error::{EmbedError, Result};
pub use partition::{FailedItem, PartitionState, RunIdentity, check_partition, read_failures};
pub use pipeline::{
    DEFAULT_BATCH_SIZE, DEFAULT_PARTITION_SIZE, EmbedOptions, EmbedSummary, InputSpec, embed,
    embed_with_encoder, open_input,
};
pub use plan::{DATA_FILE, ERRORS_FILE, PartitionPlan, split_range};
pub use prepare::ImageSaver;
pub use progress::ProgressMode;
pub use source::{ImageInput, ImageSource};
