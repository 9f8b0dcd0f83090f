//! Finding the Parquet shards under the paths a user names.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::ingest::error::{IngestError, Result};

/// Expands files and folders into the list of Parquet shards to read, in a deterministic order.
///
/// A file path is taken as is, whatever its name. A folder is walked recursively and yields every
/// file whose name ends in `.parquet`; this covers plain `*.parquet` files, the pipeline's
/// `x.parquet_part_N.parquet` files and its `x.parquet_part_N/data.parquet` folders. Names starting
/// with `.` (hidden files, in-progress temporary files of [`write_partition_atomic`]) and `_`
/// (Spark/Hadoop markers) are skipped. Within a folder, entries are ordered naturally, number runs
/// compared by value, so `part_2` precedes `part_10` and `embeddings_0_500` precedes
/// `embeddings_500_1000`. Inputs keep their given order; a file reached twice is listed once.
///
/// [`write_partition_atomic`]: crate::ingest::write_partition_atomic
pub fn discover_shards(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut shards = Vec::new();
    let mut seen_files = HashSet::new();
    let mut seen_dirs = HashSet::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                IngestError::NotFound { path: path.clone() }
            } else {
                IngestError::Io {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        if meta.is_dir() {
            walk(path, &mut shards, &mut seen_files, &mut seen_dirs)?;
        } else if meta.is_file() {
            push_unique(path.clone(), &mut shards, &mut seen_files);
        } else {
            return Err(IngestError::NotRegularFile { path: path.clone() });
        }
    }
    if shards.is_empty() {
        return Err(IngestError::NoShards {
            paths: paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(shards)
}

fn push_unique(path: PathBuf, shards: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) {
    let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    if seen.insert(key) {
        shards.push(path);
    }
}

fn walk(
    dir: &Path,
    shards: &mut Vec<PathBuf>,
    seen_files: &mut HashSet<PathBuf>,
    seen_dirs: &mut HashSet<PathBuf>,
) -> Result<()> {
    let io_err = |source| IngestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    // Symlinked folders are followed once: a link cycle must not recurse forever.
    let canonical = std::fs::canonicalize(dir).map_err(io_err)?;
    if !seen_dirs.insert(canonical) {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    for (name, path) in entries {
        let meta = std::fs::metadata(&path).map_err(|source| IngestError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(&path, shards, seen_files, seen_dirs)?;
        } else if name.to_ascii_lowercase().ends_with(".parquet") {
            if !meta.is_file() {
                return Err(IngestError::NotRegularFile { path });
            }
            push_unique(path, shards, seen_files);
        }
    }
    Ok(())
}

/// Compares names so that runs of ASCII digits compare by numeric value.
///
/// Ties between equal values with different zero padding are broken by the plain byte order, so
/// the order is total and deterministic.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(cx), Some(cy)) if cx.is_ascii_digit() && cy.is_ascii_digit() => {
                let (dx, rx) = split_digits(x);
                let (dy, ry) = split_digits(y);
                let (tx, ty) = (trim_zeros(dx), trim_zeros(dy));
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                (x, y) = (rx, ry);
            }
            (Some(cx), Some(cy)) => {
                if cx != cy {
                    return cx.cmp(cy);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names = vec![
            "x.parquet_part_10.parquet",
            "embeddings_500_1000.parquet",
            "x.parquet_part_2.parquet",
            "embeddings_0_500.parquet",
            "x.parquet_part_1.parquet",
            "a010",
            "a9",
            "a09",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            vec![
                "a09",
                "a9",
                "a010",
                "embeddings_0_500.parquet",
                "embeddings_500_1000.parquet",
                "x.parquet_part_1.parquet",
                "x.parquet_part_2.parquet",
                "x.parquet_part_10.parquet",
            ]
        );
    }
}
