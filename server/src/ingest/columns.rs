//! Reading single cells out of Arrow arrays, for the column roles Glimpse understands.
//!
//! Types are checked against the schema when a file is opened ([`id_type_ok`], [`embedding_type_ok`],
//! [`scalar_type_ok`]); the cell readers still never panic on an unexpected type, they return
//! `None`/`Err` instead.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use crate::ingest::row::MetaValue;
use crate::ingest::write::MetaKind;

/// Human-readable list of accepted id types, for error messages.
pub(crate) const ID_TYPES: &str = "string, large_string, or an integer type";
/// Human-readable list of accepted embedding types, for error messages.
pub(crate) const EMBEDDING_TYPES: &str = "fixed_size_list/list/large_list of float32, float16 or \
     float64, or fixed_size_binary/binary of little-endian float32";

fn is_int(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn is_str(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn is_float(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    )
}

/// The metadata kind of a carried-through column of type `dt` in `glimpse embed`'s Parquet
/// inputs; `None` for types that are not carried.
pub(crate) fn meta_kind(dt: &DataType) -> Option<MetaKind> {
    if is_str(dt) {
        Some(MetaKind::Str)
    } else if is_int(dt) {
        Some(MetaKind::Int)
    } else if matches!(dt, DataType::Float32 | DataType::Float64) {
        Some(MetaKind::Float)
    } else if matches!(dt, DataType::Boolean) {
        Some(MetaKind::Bool)
    } else {
        None
    }
}

/// Whether `dt` can hold ids.
pub(crate) fn id_type_ok(dt: &DataType) -> bool {
    is_str(dt) || is_int(dt)
}

/// Whether `dt` can hold a string column such as `image_path`.
pub(crate) fn str_type_ok(dt: &DataType) -> bool {
    is_str(dt)
}

/// Whether `dt` can hold embeddings.
pub(crate) fn embedding_type_ok(dt: &DataType) -> bool {
    match dt {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
            is_float(f.data_type())
        }
        DataType::FixedSizeBinary(n) => *n > 0 && n % 4 == 0,
        // `df['embedding'] = [e.tobytes() for e in embs]` gives plain binary; lengths are
        // checked per row.
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        _ => false,
    }
}

/// Dimension fixed by the schema alone, for fixed-size embedding types.
pub(crate) fn schema_dim(dt: &DataType) -> Option<usize> {
    match dt {
        DataType::FixedSizeList(_, n) => usize::try_from(*n).ok(),
        DataType::FixedSizeBinary(n) => usize::try_from(*n / 4).ok(),
        _ => None,
    }
}

/// Whether `dt` is a scalar type carried into metadata.
pub(crate) fn scalar_type_ok(dt: &DataType) -> bool {
    match dt {
        DataType::Boolean => true,
        DataType::Dictionary(_, values) => scalar_type_ok(values),
        dt => is_str(dt) || is_int(dt) || is_float(dt),
    }
}

/// Whether `dt` is a binary type (the pipeline's `output` column).
pub(crate) fn binary_type_ok(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    )
}

/// The string at `row`, or `None` when null or not a string array.
pub(crate) fn str_at(array: &dyn Array, row: usize) -> Option<&str> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => array.as_string_opt::<i32>().map(|a| a.value(row)),
        DataType::LargeUtf8 => array.as_string_opt::<i64>().map(|a| a.value(row)),
        DataType::Utf8View => array.as_string_view_opt().map(|a| a.value(row)),
        _ => None,
    }
}

/// The bytes at `row`, or `None` when null or not a binary array.
pub(crate) fn bytes_at(array: &dyn Array, row: usize) -> Option<&[u8]> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Binary => array.as_binary_opt::<i32>().map(|a| a.value(row)),
        DataType::LargeBinary => array.as_binary_opt::<i64>().map(|a| a.value(row)),
        DataType::BinaryView => array.as_binary_view_opt().map(|a| a.value(row)),
        _ => None,
    }
}

/// An integer cell as `i128`, which holds every Arrow integer type exactly.
fn int_at(array: &dyn Array, row: usize) -> Option<i128> {
    macro_rules! prim {
        ($t:ty) => {
            array
                .as_primitive_opt::<$t>()
                .map(|a| i128::from(a.value(row)))
        };
    }
    match array.data_type() {
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        _ => None,
    }
}

/// The id at `row` as a string (integers in decimal), or `None` when null.
pub(crate) fn id_at(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    if let Some(s) = str_at(array, row) {
        return Some(s.to_owned());
    }
    int_at(array, row).map(|v| v.to_string())
}

/// Why an embedding cell could not be read.
pub(crate) enum CellError {
    /// The cell is null.
    Null,
    /// Component `n` is null.
    NullComponent(usize),
    /// The array type is not an embedding type.
    Type,
    /// A binary cell whose length is not a multiple of 4.
    ByteLength(usize),
}

fn le_f32(bytes: &[u8]) -> Result<Vec<f32>, CellError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(CellError::ByteLength(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The embedding at `row`, converted to `f32`.
pub(crate) fn vector_at(array: &dyn Array, row: usize) -> Result<Vec<f32>, CellError> {
    if array.is_null(row) {
        return Err(CellError::Null);
    }
    let child: ArrayRef = match array.data_type() {
        DataType::FixedSizeList(..) => array
            .as_fixed_size_list_opt()
            .ok_or(CellError::Type)?
            .value(row),
        DataType::List(_) => array
            .as_list_opt::<i32>()
            .ok_or(CellError::Type)?
            .value(row),
        DataType::LargeList(_) => array
            .as_list_opt::<i64>()
            .ok_or(CellError::Type)?
            .value(row),
        DataType::FixedSizeBinary(_) => {
            return le_f32(
                array
                    .as_fixed_size_binary_opt()
                    .ok_or(CellError::Type)?
                    .value(row),
            );
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            return le_f32(bytes_at(array, row).ok_or(CellError::Type)?);
        }
        _ => return Err(CellError::Type),
    };
    if child.null_count() > 0 {
        let first = (0..child.len()).find(|&i| child.is_null(i)).unwrap_or(0);
        return Err(CellError::NullComponent(first));
    }
    match child.data_type() {
        DataType::Float32 => Ok(child
            .as_primitive_opt::<Float32Type>()
            .ok_or(CellError::Type)?
            .values()
            .to_vec()),
        DataType::Float16 => Ok(child
            .as_primitive_opt::<Float16Type>()
            .ok_or(CellError::Type)?
            .values()
            .iter()
            .map(|h| h.to_f32())
            .collect()),
        DataType::Float64 => Ok(child
            .as_primitive_opt::<Float64Type>()
            .ok_or(CellError::Type)?
            .values()
            .iter()
            .map(|&d| d as f32)
            .collect()),
        _ => Err(CellError::Type),
    }
}

/// A metadata column prepared once per batch (dictionary keys resolved up front).
pub(crate) struct ScalarColumn<'a> {
    array: &'a dyn Array,
    /// For dictionary arrays: the values array and each row's index into it.
    dictionary: Option<(&'a dyn Array, Vec<usize>)>,
}

impl<'a> ScalarColumn<'a> {
    /// Prepares `array` for [`ScalarColumn::value`].
    pub(crate) fn new(array: &'a dyn Array) -> Self {
        let dictionary = array
            .as_any_dictionary_opt()
            .map(|d| (d.values().as_ref(), d.normalized_keys()));
        Self { array, dictionary }
    }

    /// The value at `row`; `None` for nulls, NaN and unsupported types.
    pub(crate) fn value(&self, row: usize) -> Option<MetaValue> {
        if self.array.is_null(row) {
            return None;
        }
        match &self.dictionary {
            Some((values, keys)) => scalar_at(*values, *keys.get(row)?),
            None => scalar_at(self.array, row),
        }
    }
}

fn scalar_at(array: &dyn Array, row: usize) -> Option<MetaValue> {
    if row >= array.len() || array.is_null(row) {
        return None;
    }
    let dt = array.data_type();
    if is_str(dt) {
        return str_at(array, row).map(|s| MetaValue::Str(s.to_owned()));
    }
    if is_int(dt) {
        let v = int_at(array, row)?;
        return Some(match i64::try_from(v) {
            Ok(v) => MetaValue::Int(v),
            Err(_) => MetaValue::Str(v.to_string()),
        });
    }
    let float = match dt {
        DataType::Boolean => {
            return array
                .as_boolean_opt()
                .map(|a| MetaValue::Bool(a.value(row)));
        }
        DataType::Float16 => {
            f64::from(array.as_primitive_opt::<Float16Type>()?.value(row).to_f32())
        }
        DataType::Float32 => f64::from(array.as_primitive_opt::<Float32Type>()?.value(row)),
        DataType::Float64 => array.as_primitive_opt::<Float64Type>()?.value(row),
        _ => return None,
    };
    // pandas spells a missing float as NaN; JSON cannot carry it either.
    (!float.is_nan()).then_some(MetaValue::Float(float))
}
