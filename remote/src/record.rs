//! Small JSON files in the data directory that remember the bucket: which
//! version this writer last published, which version this replica serves.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{RemoteError, Result};

/// Writer record: `<data-dir>/remote.json`.
pub const WRITER_RECORD: &str = "remote.json";
/// Replica record (the whole applied manifest): `<data-dir>/remote-applied.json`.
pub const APPLIED_RECORD: &str = "remote-applied.json";

/// What a writer's data directory remembers of its bucket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterRecord {
    /// The `--remote` URL.
    pub url: String,
    /// The last version this directory published or restored.
    pub version: u64,
    /// The writer session that wrote this record.
    #[serde(default)]
    pub session: String,
    /// A version being created when the record was written: if the bucket's newest version
    /// is this one and names `session`, the create succeeded though its answer was lost.
    #[serde(default)]
    pub pending: Option<u64>,
}

/// What a replica's (or restoring writer's) data directory remembers: the bucket it follows,
/// and the remote manifest it applied last (`None` before the first).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AppliedRecord {
    /// The `--remote` URL.
    pub url: String,
    /// The manifest served.
    pub manifest: Option<crate::layout::RemoteManifest>,
}

/// Reads `path`; `None` when it does not exist.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            RemoteError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RemoteError::io(path, e)),
    }
}

/// Replaces `path` atomically (temp file, fsync, rename, directory fsync).
pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| RemoteError::io(path, std::io::Error::other(e)))?;
    write_bytes(path, &bytes)
}

/// Replaces `path` with `bytes` atomically.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| RemoteError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| RemoteError::io(&tmp, e))?;
    f.sync_all().map_err(|e| RemoteError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RemoteError::io(path, e))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
