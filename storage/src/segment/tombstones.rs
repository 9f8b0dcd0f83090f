//! Tombstone bitmaps: rows of a segment hidden by deletes or newer versions.
//!
//! A generation is written as a new file `del-<gen:08>.bits` (framed:
//! magic `GLIMPDEL`, payload = rows u64 | ceil(rows/64) × u64 words), the
//! manifest names the current generation, and old generations are removed
//! once the manifest naming the new one is durable.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{decode_framed, encode_framed, write_file_synced};

const MAGIC: &[u8; 8] = b"GLIMPDEL";
const VERSION: u32 = 1;

/// A fixed-size bitset over the rows of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tombstones {
    rows: u32,
    words: Vec<u64>,
    count: u32,
}

impl Tombstones {
    pub(crate) fn empty(rows: u32) -> Self {
        Self {
            rows,
            words: vec![0; (rows as usize).div_ceil(64)],
            count: 0,
        }
    }

    pub(crate) fn file_name(generation: u64) -> String {
        format!("del-{generation:08}.bits")
    }

    pub(crate) fn path(seg_dir: &Path, generation: u64) -> PathBuf {
        seg_dir.join(Self::file_name(generation))
    }

    #[inline]
    pub(crate) fn contains(&self, row: u32) -> bool {
        let r = row as usize;
        self.words
            .get(r / 64)
            .is_some_and(|w| w & (1 << (r % 64)) != 0)
    }

    /// Sets `row`; returns whether it was newly set.
    pub(crate) fn insert(&mut self, row: u32) -> bool {
        let r = row as usize;
        if row >= self.rows {
            return false;
        }
        let w = &mut self.words[r / 64];
        let bit = 1u64 << (r % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.count += 1;
        true
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let mut payload = Vec::with_capacity(8 + self.words.len() * 8);
        payload.extend_from_slice(&(self.rows as u64).to_le_bytes());
        for w in &self.words {
            payload.extend_from_slice(&w.to_le_bytes());
        }
        write_file_synced(path, &encode_framed(MAGIC, VERSION, &payload))
    }

    pub(crate) fn read(path: &Path, rows: u32) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        let (_, payload) = decode_framed(path, &bytes, MAGIC, VERSION)?;
        let want = 8 + (rows as usize).div_ceil(64) * 8;
        if payload.len() != want {
            return Err(StorageError::corrupt(
                path,
                16,
                format!("bitmap of {} bytes, expected {want}", payload.len()),
            ));
        }
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&payload[..8]);
        if u64::from_le_bytes(stored) != rows as u64 {
            return Err(StorageError::corrupt(
                path,
                16,
                "bitmap row count differs from the segment's",
            ));
        }
        let words: Vec<u64> = payload[8..]
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect();
        if !rows.is_multiple_of(64)
            && let Some(last) = words.last()
            && last >> (rows % 64) != 0
        {
            return Err(StorageError::corrupt(
                path,
                16,
                "bits set past the last row",
            ));
        }
        let count = words.iter().map(|w| w.count_ones()).sum();
        Ok(Self { rows, words, count })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tombstones::empty(130);
        assert!(t.insert(0) && t.insert(129) && !t.insert(129) && !t.insert(130));
        let p = dir.path().join("d");
        t.write(&p).unwrap();
        let r = Tombstones::read(&p, 130).unwrap();
        assert_eq!(r, t);
        assert!(r.contains(129) && !r.contains(1) && r.count() == 2);
        assert!(Tombstones::read(&p, 131).is_err());
    }
}
