//! Readers for the query-vector files the HTTP benchmarks take: NumPy `.npy`
//! (`<f4`, C order, format 1.0/2.0/3.0) and `.fvecs` (each row prefixed by
//! its dimension as a little-endian `i32`, the ANN-benchmarks format).
//!
//! Only what the benchmarks need: a row-major `f32` matrix. Anything else
//! (other dtypes, Fortran order, ragged `.fvecs`) is refused with an error
//! naming the file, never a panic.

use std::fmt;
use std::path::{Path, PathBuf};

/// A row-major `f32` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns (the vector dimension).
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i` as a slice; `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        self.data.get(i * self.cols..(i + 1) * self.cols)
    }
}

/// Why a vector file could not be read.
#[derive(Debug)]
pub enum VectorFileError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not in a supported layout.
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for VectorFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorFileError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            VectorFileError::Format { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for VectorFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VectorFileError::Io { source, .. } => Some(source),
            VectorFileError::Format { .. } => None,
        }
    }
}

/// Reads `.npy` or `.fvecs` (chosen by the NumPy magic, else by extension).
pub fn read_vectors(path: &Path) -> Result<Matrix, VectorFileError> {
    let bytes = std::fs::read(path).map_err(|source| VectorFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fail = |reason: String| VectorFileError::Format {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.starts_with(NPY_MAGIC) {
        parse_npy(&bytes).map_err(fail)
    } else if path.extension().is_some_and(|e| e == "fvecs") {
        parse_fvecs(&bytes).map_err(fail)
    } else {
        Err(fail(
            "neither a .npy file (no \\x93NUMPY magic) nor .fvecs".into(),
        ))
    }
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Parses an in-memory `.npy` holding a 2-D little-endian `f32` C-order array.
pub fn parse_npy(bytes: &[u8]) -> Result<Matrix, String> {
    if !bytes.starts_with(NPY_MAGIC) || bytes.len() < 10 {
        return Err("not a .npy file".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated .npy header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| ".npy header is not text")?;
    let descr = dict_value(header, "descr").ok_or("no 'descr' in .npy header")?;
    if !matches!(descr.trim_matches(['\'', '"']), "<f4" | "=f4" | "f4") {
        return Err(format!("dtype {descr} is not little-endian float32 (<f4)"));
    }
    let fortran = dict_value(header, "fortran_order").ok_or("no 'fortran_order'")?;
    if fortran != "False" {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape = dict_value(header, "shape").ok_or("no 'shape' in .npy header")?;
    let dims: Vec<usize> = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|e| format!("shape {shape}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let (rows, cols) = match dims.as_slice() {
        [r, c] => (*r, *c),
        [c] => (1, *c),
        _ => return Err(format!("shape {shape} is not a 2-D matrix")),
    };
    let want = rows
        .checked_mul(cols)
        .and_then(|x| x.checked_mul(4))
        .ok_or("shape overflows")?;
    let data = &bytes[start + header_len..];
    if data.len() != want {
        return Err(format!(
            "shape {shape} needs {want} data bytes, the file has {}",
            data.len()
        ));
    }
    Ok(Matrix {
        rows,
        cols,
        data: f32s(data),
    })
}

/// Parses `.fvecs`: rows of `i32 dim` followed by `dim` little-endian `f32`.
pub fn parse_fvecs(bytes: &[u8]) -> Result<Matrix, String> {
    let head = bytes.get(0..4).ok_or("empty .fvecs file")?;
    let dim = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if dim <= 0 {
        return Err(format!("dimension {dim} is not positive"));
    }
    let cols = dim as usize;
    let stride = 4 + cols * 4;
    if !bytes.len().is_multiple_of(stride) {
        return Err(format!(
            "{} bytes is not a whole number of {stride}-byte rows",
            bytes.len()
        ));
    }
    let rows = bytes.len() / stride;
    let mut data = Vec::with_capacity(rows * cols);
    for (i, row) in bytes.chunks_exact(stride).enumerate() {
        let d = i32::from_le_bytes([row[0], row[1], row[2], row[3]]);
        if d != dim {
            return Err(format!("row {i} has dimension {d}, row 0 has {dim}"));
        }
        data.extend(f32s(&row[4..]));
    }
    Ok(Matrix { rows, cols, data })
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The raw text of `'key': value` in a NumPy header dict (value up to the
/// next top-level comma or closing brace).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use glimpse_index::synthetic::to_npy;

    #[test]
    fn npy_written_by_glimpse_index_reads_back() {
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        let m = parse_npy(&to_npy(&data, 3, 4)).unwrap();
        assert_eq!((m.rows, m.cols), (3, 4));
        assert_eq!(m.data, data);
        assert_eq!(m.row(2).unwrap(), &data[8..12]);
        assert!(m.row(3).is_none());
    }

    #[test]
    fn npy_version_2_header_and_numpy_spacing() {
        // NumPy writes "(2, 3)"; version 2.0 has a 4-byte header length.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n";
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for x in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let m = parse_npy(&b).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.data[5], 6.0);
    }

    #[test]
    fn npy_refuses_other_dtypes_order_and_short_data() {
        // Same-length edits of the header text, leaving the binary parts intact.
        let edit = |from: &str, to: &str| {
            let mut b = to_npy(&[1.0, 2.0], 1, 2);
            let at = b
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap();
            b[at..at + to.len()].copy_from_slice(to.as_bytes());
            b
        };
        let err = parse_npy(&edit("<f4", "<f8")).unwrap_err();
        assert!(err.contains("<f8"), "{err}");
        let err = parse_npy(&edit("False", "True ")).unwrap_err();
        assert!(err.contains("Fortran"), "{err}");

        let mut short = to_npy(&[1.0, 2.0, 3.0, 4.0], 2, 2);
        short.truncate(short.len() - 3);
        assert!(parse_npy(&short).unwrap_err().contains("data bytes"));
        assert!(parse_npy(b"\x93NUMPY").is_err());
        assert!(parse_npy(b"hello").is_err());
    }

    #[test]
    fn fvecs_round_trip_and_ragged_rows() {
        let mut b = Vec::new();
        for row in [[1.0f32, 2.0], [3.0, 4.0]] {
            b.extend_from_slice(&2i32.to_le_bytes());
            for x in row {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        let m = parse_fvecs(&b).unwrap();
        assert_eq!((m.rows, m.cols), (2, 2));
        assert_eq!(m.data, vec![1.0, 2.0, 3.0, 4.0]);
        b[12..16].copy_from_slice(&3i32.to_le_bytes());
        assert!(parse_fvecs(&b).unwrap_err().contains("row 1"));
        assert!(parse_fvecs(&b[..5]).is_err());
    }

    #[test]
    fn read_vectors_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.bin");
        std::fs::write(&p, b"junk").unwrap();
        let err = read_vectors(&p).unwrap_err().to_string();
        assert!(err.contains("q.bin"), "{err}");
        let missing = read_vectors(&dir.path().join("nope.npy")).unwrap_err();
        assert!(missing.to_string().contains("nope.npy"));
        let ok = dir.path().join("q.npy");
        std::fs::write(&ok, to_npy(&[0.5, 0.25], 1, 2)).unwrap();
        assert_eq!(read_vectors(&ok).unwrap().data, vec![0.5, 0.25]);
    }
}
