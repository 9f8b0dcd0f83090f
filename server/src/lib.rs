//! The Glimpse server: the `glimpse` binary's library. It wires the storage
//! engine, the index and the CLIP embedder together behind an HTTP API, a
//! search page and a command line.
//!
//! Only what the binary, the end-to-end tests (`tests/`) and the benchmarks
//! (`benches/`) call from outside is public: the subcommands (`cli`), the
//! router (`http`), the embed pipeline (`embed`), the Parquet readers and
//! writers (`ingest`) and the model and its loading state (`model`, `model_slot`). Everything else is an
//! implementation detail of those and stays private to the crate.

mod chroma;
pub mod cli;
mod config;
pub mod embed;
mod embed_batcher;
mod error;
mod filter_json;
pub mod http;
pub mod ingest;
mod jobs;
mod metrics;
pub mod model;
pub mod model_slot;
mod paths;
mod photos;
mod remote_link;
mod shard_loader;
mod state;
