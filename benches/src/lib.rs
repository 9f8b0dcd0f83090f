//! Shared benchmark helpers.

pub mod embed_common;
pub mod http;
pub mod npy;
