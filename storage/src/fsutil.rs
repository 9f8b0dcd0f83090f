//! Durable file-system primitives: fsync of files and directories, atomic
//! replacement, and the small "framed" file format used for the manifest and
//! the segment footer.
//!
//! A framed file is `magic[8] | version u32 | len u32 | payload[len] | crc32 u32`
//! (little endian), the crc covering every byte before it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result, StorageError};

/// Fsyncs a directory so that renames and creations inside it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).at(dir)?;
    f.sync_all().at(dir)
}

/// Writes `bytes` to a new file at `path` and fsyncs it (not the directory).
pub(crate) fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)?;
    f.write_all(bytes).at(path)?;
    f.sync_all().at(path)
}

/// Replaces `path` atomically: temp file, fsync, rename, fsync of the parent.
/// After a crash the old or the new content is visible, never a mix.
pub(crate) fn atomic_replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!("{file_name}.tmp"));
    write_file_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).at(path)?;
    fsync_dir(parent)
}

/// Encodes a framed file.
pub(crate) fn encode_framed(magic: &[u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a framed file, checking magic, length, crc and version
/// (`max_version` is the newest this build understands).
pub(crate) fn decode_framed<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: &[u8; 8],
    max_version: u32,
) -> Result<(u32, &'a [u8])> {
    if bytes.len() < 20 {
        return Err(StorageError::corrupt(
            path,
            0,
            "file shorter than its 20-byte frame",
        ));
    }
    if &bytes[..8] != magic {
        return Err(StorageError::corrupt(path, 0, "bad magic"));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    if bytes.len() != len + 20 {
        return Err(StorageError::corrupt(
            path,
            12,
            format!(
                "frame says {} payload bytes, file has {}",
                len,
                bytes.len().saturating_sub(20)
            ),
        ));
    }
    let body_end = 16 + len;
    let stored = u32::from_le_bytes([
        bytes[body_end],
        bytes[body_end + 1],
        bytes[body_end + 2],
        bytes[body_end + 3],
    ]);
    if crc32fast::hash(&bytes[..body_end]) != stored {
        return Err(StorageError::corrupt(
            path,
            body_end as u64,
            "crc32 mismatch",
        ));
    }
    if version == 0 || version > max_version {
        return Err(StorageError::corrupt(
            path,
            8,
            format!("unsupported format version {version} (this build reads up to {max_version})"),
        ));
    }
    Ok((version, &bytes[16..body_end]))
}

/// crc32 of a whole file, streamed in 1 MiB chunks.
pub(crate) fn crc32_file(path: &Path) -> Result<(u64, u32)> {
    use std::io::Read;
    let mut f = File::open(path).at(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((total, h.finalize()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn framed_roundtrip_and_corruption() {
        let p = Path::new("x");
        let enc = encode_framed(b"TESTMAGI", 1, b"hello");
        let (v, body) = decode_framed(p, &enc, b"TESTMAGI", 1).unwrap();
        assert_eq!((v, body), (1, &b"hello"[..]));
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(
                decode_framed(p, &bad, b"TESTMAGI", 1).is_err(),
                "flip at {i}"
            );
        }
        assert!(decode_framed(p, &enc[..enc.len() - 1], b"TESTMAGI", 1).is_err());
        let newer = encode_framed(b"TESTMAGI", 2, b"hello");
        assert!(decode_framed(p, &newer, b"TESTMAGI", 1).is_err());
    }
}
