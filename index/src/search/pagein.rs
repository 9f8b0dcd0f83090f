//! Asking the kernel for the pages of the rows a re-rank is about to read, all at once.
//!
//! With a compact tier the raw vectors may be a file mapping mostly out of memory, and each row
//! the re-rank reads would then fault on its own: one read after another, each waited for.
//! When the first row's pages are not resident, one `process_madvise(MADV_WILLNEED)` over every
//! row's pages starts all their reads at once, so the re-rank waits for about one of them. A
//! resident first row costs one `mincore` call and nothing more; so does a heap slice (always
//! resident). Only a hint: where the calls are missing or refused, the rows fault as before.

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
    let page = page_size();
    let (base, n) = (vectors.as_ptr() as usize, vectors.len() / dim);
    let pages_of = |r: u32| {
        let r = r as usize;
        (r < n).then(|| {
            let start = base + r * dim * 4;
            let first = start & !(page - 1);
            let end = (start + dim * 4).next_multiple_of(page);
            (first, end - first)
        })
    };
    let Some((first, _)) = rows.clone().find_map(pages_of) else {
        return false;
    };
    let mut resident = 0u8;
    // SAFETY: `first..first + page` is one page-aligned page within the pages of `vectors`, a
    // live allocation or mapping of this process; `resident` takes its one byte.
    let probed = unsafe { libc::mincore(first as *mut libc::c_void, page, &mut resident) };
    if probed == 0 && resident & 1 == 1 {
        return false;
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
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let dim = 1024; // one 4 KiB page a row
        let rows = 256usize;
        let path = std::env::temp_dir().join(format!("glimpse-pagein-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).expect("create");
        let bytes: Vec<u8> = (0..rows * dim)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        f.write_all(&bytes).expect("write");
        f.sync_all().expect("sync");
        let f = std::fs::File::open(&path).expect("open");
        let len = bytes.len();
        // SAFETY: a read-only shared mapping of a file this test owns and does not change.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // SAFETY: the mapping is `len` bytes, page-aligned, alive until the munmap below.
        let floats = unsafe { std::slice::from_raw_parts(ptr as *const f32, len / 4) };
        let resident = |r: usize| {
            let mut b = [0u8; 1];
            // SAFETY: one page of the live mapping.
            unsafe {
                libc::mincore(
                    ptr.cast::<u8>().add(r * dim * 4).cast(),
                    4096,
                    b.as_mut_ptr(),
                )
            };
            b[0] & 1 == 1
        };
        // SAFETY: drops clean pages of this test's own file; the mapping stays valid.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_RANDOM);
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
        let wanted = [5u32, 77, 130, 201, 250];
        if wanted.iter().any(|&r| resident(r as usize)) {
            // The page cache would not let go (some filesystems keep pages): nothing to show.
            return;
        }
        if !page_in_rows(floats, dim, wanted.iter().copied()) {
            // The calls were refused (a kernel before 5.10, or an emulator without them): the
            // rows fault one by one as before, which the other tests cover.
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !wanted.iter().all(|&r| resident(r as usize)) {
            assert!(
                std::time::Instant::now() < deadline,
                "rows never read ahead"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!resident(100), "a row nobody asked for was read");
        assert_eq!(floats[77 * dim], (77 * dim) as f32);
        // SAFETY: unmaps the mapping made above; `floats` is not used after.
        unsafe { libc::munmap(ptr, len) };
        let _ = std::fs::remove_file(&path);
    }
}
