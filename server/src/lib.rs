//! The Glimpse server: the `glimpse` binary's library. It wires the storage
//! engine, the index and the CLIP embedder together behind an HTTP API, a
//! search page and a command line.

pub mod bulk;
pub mod cli;
pub mod config;
pub mod embed;
pub mod error;
pub mod filter;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod paths;
pub mod photos;
pub mod state;
pub mod storage_err;
