//! Shared benchmark helpers.

pub mod embed_common;
pub mod http;
pub mod mapped_files;
pub mod npy;
