//! Asking the kernel for the pages of the rows a re-rank is about to read, all at once.
//!
//! With a compact tier the raw vectors may be a file mapping mostly out of memory, and each row
//! the re-rank reads would then fault on its own: one read after another, each waited for.
//! When the first row's pages are not resident, one `process_madvise(MADV_WILLNEED)` over every
//! row's pages starts all their reads at once, so the re-rank waits for about one of them. A
//! resident first row costs one `mincore` call and nothing more; so does a heap slice (always
//! resident). Only a hint: where the calls are missing or refused, the rows fault as before.

/// Whether the first page of row `row` (`dim` floats in `vectors`) is in memory: one
/// `mincore`. True for a row past the end, where the call fails, and off Linux: the caller
/// then reads the row as if resident.
#[cfg(target_os = "linux")]
pub(super) fn row_resident(vectors: &[f32], dim: usize, row: u32) -> bool {
    let Some((first, _)) = row_pages(vectors, dim, row) else {
        return true;
    };
    let mut resident = 0u8;
    // SAFETY: `first..first + page` is one page-aligned page within the pages of `vectors`, a
    // live allocation or mapping of this process; `resident` takes its one byte.
    let probed = unsafe { libc::mincore(first as *mut libc::c_void, page_size(), &mut resident) };
    probed != 0 || resident & 1 == 1
}

/// Off Linux every row counts as resident.
#[cfg(not(target_os = "linux"))]
pub(super) fn row_resident(_vectors: &[f32], _dim: usize, _row: u32) -> bool {
    true
}

/// The page-aligned address and length of the pages holding row `row`; `None` past the end or
/// for a width of 0.
#[cfg(target_os = "linux")]
fn row_pages(vectors: &[f32], dim: usize, row: u32) -> Option<(usize, usize)> {
    let page = page_size();
    let (base, r) = (vectors.as_ptr() as usize, row as usize);
    (dim > 0 && r < vectors.len() / dim).then(|| {
        let start = base + r * dim * 4;
        let first = start & !(page - 1);
        let end = (start + dim * 4).next_multiple_of(page);
        (first, end - first)
    })
}

/// Starts reading the pages of `rows` (`dim` floats each in `vectors`) into memory if the
/// first page of the first of them is not resident (see the module doc); whether it asked.
/// Allocates nothing when that page is resident (the search's every query with the rows in
/// memory).
#[cfg(target_os = "linux")]
pub(super) fn page_in_rows(
    vectors: &[f32],
    dim: usize,
    rows: impl Iterator<Item = u32> + Clone,
) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Set once a call was refused (an older kernel, a seccomp filter): never tried again.
    static REFUSED: AtomicBool = AtomicBool::new(false);
    if rows.clone().nth(1).is_none() || dim == 0 || REFUSED.load(Ordering::Relaxed) {
        return false;
    }
    let pages_of = |r: u32| row_pages(vectors, dim, r);
    match rows.clone().next() {
        Some(r) if !row_resident(vectors, dim, r) => {}
        _ => return false,
    }
    let ranges: Vec<libc::iovec> = rows
        .filter_map(pages_of)
        .map(|(at, len)| libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    let Some(pidfd) = own_pidfd() else {
        REFUSED.store(true, Ordering::Relaxed);
        return false;
    };
    for chunk in ranges.chunks(MAX_RANGES) {
        // SAFETY: the ranges lie within `vectors`' pages and are only read ahead, never
        // changed; `chunk` is a live array of `chunk.len()` iovecs.
        let done = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd,
                chunk.as_ptr(),
                chunk.len(),
                libc::MADV_WILLNEED,
                0u32,
            )
        };
        if done < 0 {
            REFUSED.store(true, Ordering::Relaxed);
            return false;
        }
    }
    true
}

/// Elsewhere the rows fault one by one.
#[cfg(not(target_os = "linux"))]
pub(super) fn page_in_rows(
    _vectors: &[f32],
    _dim: usize,
    _rows: impl Iterator<Item = u32> + Clone,
) -> bool {
    false
}

/// Most ranges one `process_madvise` takes (`UIO_MAXIOV`).
#[cfg(target_os = "linux")]
const MAX_RANGES: usize = 1024;

/// The page size, read once.
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(p)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// A descriptor of this process for `process_madvise`, opened once and kept; `None` where
/// `pidfd_open` is refused.
#[cfg(target_os = "linux")]
fn own_pidfd() -> Option<i32> {
    static PIDFD: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *PIDFD.get_or_init(|| {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0u32) };
        i32::try_from(fd).ok().filter(|&fd| fd >= 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of a heap slice are resident: nothing is asked; rows past the end, an empty list or
    /// a width of 0 are ignored; nothing panics and the floats are unchanged.
    #[test]
    fn resident_and_out_of_range_rows_are_left_alone() {
        let dim = 512;
        let v: Vec<f32> = (0..dim * 64).map(|i| i as f32).collect();
        let rows = |r: &'static [u32]| r.iter().copied();
        assert!(!page_in_rows(&v, dim, rows(&[3, 40, 7, 1_000_000])));
        assert!(!page_in_rows(&v, dim, rows(&[])));
        assert!(!page_in_rows(&v, 0, rows(&[1, 2])));
        assert!(!page_in_rows(&v, dim, rows(&[1_000_000, 2_000_000])));
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
    }

    /// A file mapping whose pages were dropped comes back resident after the hint, before any
    /// row is read (the reads it starts complete in the background).
    #[cfg(target_os = "linux")]
    #[test]
    fn evicted_rows_of_a_mapped_file_are_read_ahead() {
        let dim = 1024; // one 4 KiB page a row
        let rows = 256usize;
        let floats: Vec<f32> = (0..rows * dim).map(|i| i as f32).collect();
        let mut m = crate::search::prune_tests::MappedFloats::write("ahead", &floats);
        let resident =
            |m: &crate::search::prune_tests::MappedFloats, r: usize| m.resident_at(r * dim * 4);
        let wanted = [5u32, 77, 130, 201, 250];
        if !m.evict() || wanted.iter().any(|&r| resident(&m, r as usize)) {
            eprintln!("the page cache kept the file's pages: nothing to show here");
            return;
        }
        assert!(!row_resident(m.floats(), dim, 77));
        if !page_in_rows(m.floats(), dim, wanted.iter().copied()) {
            // The calls were refused (a kernel before 5.10, or an emulator without them): the
            // rows fault one by one as before, which the other tests cover.
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !wanted.iter().all(|&r| resident(&m, r as usize)) {
            assert!(
                std::time::Instant::now() < deadline,
                "rows never read ahead"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!resident(&m, 100), "a row nobody asked for was read");
        assert!(row_resident(m.floats(), dim, 77));
        assert_eq!(m.floats()[77 * dim], (77 * dim) as f32);
    }
}
