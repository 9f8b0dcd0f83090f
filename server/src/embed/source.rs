//! The inputs `glimpse embed` reads, as one indexed sequence of images.
//!
//! Every input has a fixed order, so an id (the zero-based position in that order) names the
//! same image on every machine and every rerun:
//! * a folder: image files found recursively, ordered by the bytes of their `/`-separated path
//!   relative to the folder;
//! * an image list: non-blank lines in file order;
//! * Parquet files in the Hugging Face datasets layout: rows in file order, files in the order
//!   given (a folder's files in natural order, see [`crate::ingest::discover_shards`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::embed::error::{EmbedError, Result, io_err};
use crate::embed::hf_parquet::ParquetImages;
pub use crate::embed::item::{Payload, SourceItem};
use crate::ingest::ExtraColumn;

/// File extensions (compared case-insensitively) taken from an image folder.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "gif", "bmp"];

/// The input a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageInput {
    /// A folder walked recursively.
    Folder(PathBuf),
    /// A text file of image paths, one a line.
    List(PathBuf),
    /// Parquet files (or folders of them) in the Hugging Face datasets image layout.
    Parquet(Vec<PathBuf>),
}

/// An opened input: its length, its extra columns and access to any id range.
#[derive(Debug)]
pub enum ImageSource {
    /// Files from a folder or a list, in id order: (path to read, path to record).
    Files(Vec<(PathBuf, String)>),
    /// Rows of Parquet files.
    Parquet(ParquetImages),
}

impl ImageSource {
    /// Lists the input (reads no image yet).
    pub fn open(input: &ImageInput) -> Result<Self> {
        match input {
            ImageInput::Folder(dir) => Ok(Self::Files(list_folder(dir)?)),
            ImageInput::List(file) => Ok(Self::Files(read_list(file)?)),
            ImageInput::Parquet(paths) => Ok(Self::Parquet(ParquetImages::open(paths)?)),
        }
    }

    /// Number of items; ids are `0..len`.
    pub fn len(&self) -> u64 {
        match self {
            Self::Files(f) => f.len() as u64,
            Self::Parquet(p) => p.len(),
        }
    }

    /// True when the input holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Columns carried through into the output (Parquet inputs only).
    pub fn extra_columns(&self) -> &[ExtraColumn] {
        match self {
            Self::Files(_) => &[],
            Self::Parquet(p) => p.extra_columns(),
        }
    }

    /// The items with ids in `range`, in id order.
    pub fn items(
        &self,
        range: Range<u64>,
    ) -> Result<Box<dyn Iterator<Item = Result<SourceItem>> + Send + '_>> {
        match self {
            Self::Files(files) => {
                let lo = usize::try_from(range.start)
                    .unwrap_or(usize::MAX)
                    .min(files.len());
                let hi = usize::try_from(range.end)
                    .unwrap_or(usize::MAX)
                    .min(files.len());
                Ok(Box::new(files[lo..hi].iter().enumerate().map(
                    move |(i, (path, shown))| {
                        Ok(SourceItem {
                            id: range.start + i as u64,
                            image_path: Some(shown.clone()),
                            payload: Payload::File(path.clone()),
                            extra: BTreeMap::new(),
                        })
                    },
                )))
            }
            Self::Parquet(p) => Ok(Box::new(p.items(range)?)),
        }
    }
}

fn has_image_extension(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// Image files under `root`, ordered by the bytes of their relative `/`-joined paths.
/// Names starting with `.` (hidden files and folders) are skipped; symlinks are followed
/// (each real folder is walked once).
pub fn list_folder(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(EmbedError::InvalidArgs(format!(
            "--images {} is not a folder",
            root.display()
        )));
    }
    let mut found: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let real = std::fs::canonicalize(&dir).map_err(io_err(&dir))?;
        if !seen.insert(real) {
            continue;
        }
        for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %entry.path().display(), "skipping a name that is not UTF-8");
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(meta) = std::fs::metadata(&path) else {
                tracing::warn!(path = %path.display(), "skipping a dangling link");
                continue;
            };
            if meta.is_dir() {
                stack.push((path, child_rel));
            } else if meta.is_file() && has_image_extension(&name) {
                found.push((child_rel.into_bytes(), path));
            }
        }
    }
    found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(found
        .into_iter()
        .map(|(_, path)| {
            let shown = path.display().to_string();
            (path, shown)
        })
        .collect())
}

/// Paths of an image list: one per line, trailing `\r` removed, blank (empty or
/// whitespace-only) lines skipped. Relative paths are resolved against the list's folder; the
/// line as written is what gets recorded as `image_path`.
pub fn read_list(file: &Path) -> Result<Vec<(PathBuf, String)>> {
    let text = std::fs::read_to_string(file).map_err(io_err(file))?;
    let base = file.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
        .map(|l| (base.join(l), l.to_owned()))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn folder_order_is_by_relative_path_bytes() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "b/z.PNG",
            "a.jpg",
            "a/b.jpeg",
            "B.gif",
            "c.txt",
            ".hidden.jpg",
            "b/a.WebP",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let got: Vec<String> = list_folder(d.path())
            .unwrap()
            .into_iter()
            .map(|(p, _)| {
                p.strip_prefix(d.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(got, ["B.gif", "a.jpg", "a/b.jpeg", "b/a.WebP", "b/z.PNG"]);
    }

    #[test]
    fn list_skips_blank_lines_and_resolves_against_its_folder() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("list.txt");
        std::fs::write(&list, "x.jpg\r\n\n   \n/abs/y.png\n").unwrap();
        let got = read_list(&list).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (d.path().join("x.jpg"), "x.jpg".to_owned()));
        assert_eq!(got[1].0, PathBuf::from("/abs/y.png"));
    }
}
