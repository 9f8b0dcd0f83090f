//! The one place where mapped bytes become typed values: zero-copy `f32`
//! views ([`MappedF32`]) and rkyv archives ([`MappedArchive`]) of
//! memory-mapped segment files.
//!
//! # Safety
//!
//! Every `unsafe` in this module rests on two facts, checked or guaranteed
//! here and nowhere else:
//! 1. **The bytes never change while mapped.** Segment files are immutable
//!    once written (written in a temp directory, fsynced, renamed, never
//!    modified in place; a dropped segment's directory is unlinked, which
//!    leaves existing mappings intact). A process that truncated or rewrote
//!    a live segment file behind Glimpse's back would break this, as it
//!    would for any mmap-based engine.
//! 2. **Typed views are validated once, at construction.** [`MappedF32`]
//!    checks length and alignment; [`MappedArchive`] runs rkyv's bytecheck
//!    over the whole archive. After that, the accessors reinterpret the same
//!    immutable bytes without re-checking them.
//!
//! Other modules hold these types and never cast mapped bytes themselves.

use std::fs::File;
use std::marker::PhantomData;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{IoContext, Result, StorageError};

#[cfg(not(target_endian = "little"))]
compile_error!(
    "glimpse-storage stores little-endian f32 and maps it zero-copy; big-endian targets are not supported"
);

/// Maps a whole file read-only. An empty file gives `None` (zero-length maps
/// are not portable).
pub(crate) fn map_file(path: &Path) -> Result<Option<Mmap>> {
    let f = File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: fact 1 of the module's contract: segment files are immutable
    // once written, so the mapping cannot change under us while it is held.
    let m = unsafe { Mmap::map(&f) }.at(path)?;
    Ok(Some(m))
}

/// Asks for `m` to be mapped with 2 MiB pages: faults then read 2 MiB folios and map them
/// with one TLB entry each, which scattered row reads need (the re-rank's raw rows, the
/// compact tier's codes; see `chunk_writer`). Only a hint: kernels or filesystems without
/// large folios ignore it.
pub(crate) fn advise_huge_pages(m: &Mmap) {
    #[cfg(target_os = "linux")]
    let _ = m.advise(memmap2::Advice::HugePage);
    #[cfg(not(target_os = "linux"))]
    let _ = m;
}

/// A read-only mapped file seen as row-major little-endian `f32`s.
pub struct MappedF32 {
    map: Option<Mmap>,
    floats: usize,
}

impl MappedF32 {
    /// Maps `path`, requiring exactly `expected_floats` floats in it.
    pub fn open(path: &Path, expected_floats: usize) -> Result<Self> {
        let map = map_file(path)?;
        if let Some(m) = &map {
            advise_huge_pages(m);
        }
        Self::from_map(path, map, expected_floats)
    }

    fn from_map(path: &Path, map: Option<Mmap>, expected_floats: usize) -> Result<Self> {
        let len = map.as_ref().map_or(0, |m| m.len());
        if len != expected_floats * 4 {
            return Err(StorageError::corrupt(
                path,
                len as u64,
                format!("expected {} bytes of f32, found {len}", expected_floats * 4),
            ));
        }
        if let Some(m) = &map
            && bytemuck::try_cast_slice::<u8, f32>(&m[..]).is_err()
        {
            return Err(StorageError::corrupt(
                path,
                0,
                "mapping is not 4-byte aligned",
            ));
        }
        Ok(Self {
            map,
            floats: expected_floats,
        })
    }

    /// All floats of the file.
    pub fn as_slice(&self) -> &[f32] {
        match &self.map {
            // Checked in `from_map`: length is a multiple of 4 and the map is
            // page aligned, so this cast cannot fail.
            Some(m) => bytemuck::try_cast_slice(&m[..]).unwrap_or(&[]),
            None => &[],
        }
    }

    /// Number of floats.
    pub fn len(&self) -> usize {
        self.floats
    }

    /// Whether the file holds no floats.
    pub fn is_empty(&self) -> bool {
        self.floats == 0
    }

    /// Row `row` of width `dim`, or `None` past the end.
    pub fn row(&self, row: usize, dim: usize) -> Option<&[f32]> {
        self.as_slice().get(row * dim..(row + 1) * dim)
    }

    /// Hints the kernel that the mapping is read a few scattered rows at a time and may not
    /// stay in memory (a segment whose index has a compact re-rank tier reads only the raw rows
    /// its codes cannot rule out): no 2 MiB pages and no read-around, so a fault on an evicted
    /// row reads that row's 4 KiB page(s), not the 2 MiB folio or 128 KiB window around it.
    /// Sequential scans of an evicted file fault page by page then; resident pages cost the
    /// same either way.
    pub fn advise_row_reads(&self) {
        #[cfg(target_os = "linux")]
        if let Some(m) = &self.map {
            // Huge-page advice takes precedence over random advice in the kernel's fault path,
            // so it is withdrawn first.
            let _ = m.advise(memmap2::Advice::NoHugePage);
            let _ = m.advise(memmap2::Advice::Random);
        }
    }

    /// Hints the kernel that the whole mapping will be read soon.
    pub fn advise_willneed(&self) {
        if let Some(m) = &self.map {
            let _ = m.advise(memmap2::Advice::WillNeed);
        }
    }
}

/// A memory-mapped rkyv archive of type `T`, validated once when opened.
pub(crate) struct MappedArchive<T> {
    map: Mmap,
    _archive: PhantomData<fn() -> T>,
}

impl<T> MappedArchive<T>
where
    T: rkyv::Portable
        + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>,
{
    /// Maps `path` and validates it as a `T` archive (`what` names it in
    /// the error). An empty file is corrupt: every archive has a root.
    pub(crate) fn open(path: &Path, what: &str) -> Result<Self> {
        let map = map_file(path)?.ok_or_else(|| StorageError::corrupt(path, 0, "empty file"))?;
        rkyv::access::<T, rkyv::rancor::Error>(&map)
            .map_err(|e| StorageError::corrupt(path, 0, format!("invalid {what}: {e}")))?;
        Ok(Self {
            map,
            _archive: PhantomData,
        })
    }

    /// The archived root.
    pub(crate) fn get(&self) -> &T {
        // SAFETY: fact 2 of the module's contract: `open` validated these
        // bytes as a `T` with bytecheck, and by fact 1 they have not changed.
        unsafe { rkyv::access_unchecked::<T>(&self.map) }
    }
}

/// Views `floats` as bytes (little endian, the on-disk layout).
pub(crate) fn f32_bytes(floats: &[f32]) -> &[u8] {
    bytemuck::cast_slice(floats)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn maps_rows_and_checks_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f32");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        std::fs::write(&p, f32_bytes(&data)).unwrap();
        let m = MappedF32::open(&p, 12).unwrap();
        assert_eq!(m.as_slice(), &data[..]);
        assert_eq!(m.row(1, 4).unwrap(), &data[4..8]);
        assert!(m.row(3, 4).is_none());
        assert!(MappedF32::open(&p, 11).is_err());
        std::fs::write(&p, &f32_bytes(&data)[..47]).unwrap();
        assert!(MappedF32::open(&p, 12).is_err());
        std::fs::write(&p, b"").unwrap();
        let e = MappedF32::open(&p, 0).unwrap();
        assert!(e.is_empty() && e.as_slice().is_empty());
    }

    /// The kernel's flags of the mapping that starts at `addr` (`/proc/self/smaps`'s
    /// `VmFlags` line).
    #[cfg(target_os = "linux")]
    fn vm_flags(addr: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((start, _)) = range.split_once('-')
                && let Ok(start) = usize::from_str_radix(start, 16)
            {
                ours = start == addr;
            } else if ours && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(str::to_string).collect();
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    /// A mapping advised for row reads has the kernel's random-read flag and no huge-page
    /// advice left (which would otherwise make a fault read a 2 MiB folio), and still reads
    /// the same floats.
    #[cfg(target_os = "linux")]
    #[test]
    fn row_read_advice_reaches_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f32");
        let data: Vec<f32> = (0..4096).map(|i| i as f32).collect();
        std::fs::write(&p, f32_bytes(&data)).unwrap();
        let m = MappedF32::open(&p, data.len()).unwrap();
        let addr = m.as_slice().as_ptr() as usize;
        let before = vm_flags(addr);
        assert!(!before.iter().any(|f| f == "rr"), "{before:?}");
        m.advise_row_reads();
        let after = vm_flags(addr);
        assert!(after.iter().any(|f| f == "rr"), "{after:?}");
        assert!(!after.iter().any(|f| f == "hg"), "{after:?}");
        assert_eq!(m.as_slice(), &data[..]);
    }
}
