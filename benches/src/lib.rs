//! Shared benchmark helpers.

pub mod http;
pub mod npy;
