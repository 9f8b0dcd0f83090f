//! [`MetaValue`], the one definition of a metadata value, used by the
//! storage engine, the filter language and every layer above them. Imports
//! nothing of this crate, so `types` and `filter` can both depend on it.

use serde::{Deserialize, Serialize};

/// A metadata value: flat, typed, comparable.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(untagged)]
pub enum MetaValue {
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
}
