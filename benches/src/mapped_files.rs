//! Benchmark files mapped the way the storage engine maps a segment's files, and a guard that
//! keeps evicting one from memory (`index_bench --evict 1`).

use glimpse_storage::mmap_f32::MappedF32;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn ctx<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> Result<T> {
    r.map_err(|e| format!("{what}: {e}").into())
}

/// Writes `vectors` to a temporary file and maps it the way the storage engine maps a
/// segment's vectors. Returns the mapping and the kB of huge pages mapped in the process.
pub fn mapped_copy(vectors: &[f32]) -> Result<(tempfile::TempDir, MappedF32, u64)> {
    let bytes: Vec<u8> = vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_and_map("vectors.f32", &bytes)
}

/// Writes an index's `bytes` to a temporary file and maps it as the storage engine maps
/// `index.ivfpq` (read-only, 2 MiB pages advised), so the compact tier's scattered code reads
/// pay what they pay in a server. Returns the mapping (seen as `f32`s; index files are whole
/// 64-byte blocks) and the kB of huge pages mapped in the process after it.
pub fn mapped_index(bytes: &[u8]) -> Result<(tempfile::TempDir, MappedF32, u64)> {
    write_and_map("index.ivfpq", bytes)
}

/// Writes `bytes` (a multiple of 4) as `name` in a new temporary directory, syncs it, maps it
/// with `MappedF32` (2 MiB pages advised) and touches every 4 KiB of it.
pub fn write_and_map(name: &str, bytes: &[u8]) -> Result<(tempfile::TempDir, MappedF32, u64)> {
    let dir = ctx(tempfile::tempdir(), "creating a temp dir")?;
    let path = dir.path().join(name);
    // One large write: the page cache takes it as large folios, as it does the storage
    // engine's 2 MiB-aligned chunks.
    ctx(std::fs::write(&path, bytes), "writing a benchmark file")?;
    // Clean pages only: `posix_fadvise(DONTNEED)` (the `--evict` runs) cannot drop dirty ones.
    ctx(
        std::fs::File::open(&path).and_then(|f| f.sync_all()),
        "syncing a benchmark file",
    )?;
    let map = ctx(
        MappedF32::open(&path, bytes.len() / 4),
        "mapping a benchmark file",
    )?;
    let mut sum = 0.0f32;
    for page in map.as_slice().chunks(1024) {
        sum += page[0];
    }
    std::hint::black_box(sum);
    Ok((dir, map, file_pmd_mapped_kb()))
}

/// The bytes of a mapping made by [`mapped_index`].
pub fn map_bytes(map: &MappedF32) -> &[u8] {
    let floats = map.as_slice();
    // SAFETY: any initialised `f32` memory is valid as bytes, `u8` has alignment 1, and the
    // byte length is exactly that of the floats; the borrow ties the slice to the mapping.
    unsafe {
        std::slice::from_raw_parts(floats.as_ptr().cast::<u8>(), std::mem::size_of_val(floats))
    }
}

/// While alive, drops a mapped vector file from memory every `period` (`--evict-ms`, default a
/// second): `madvise(MADV_DONTNEED)`
/// unmaps its pages from this process, `posix_fadvise(POSIX_FADV_DONTNEED)` then drops them from
/// the page cache, so the next read of a row goes to the disk.
pub struct EvictGuard {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EvictGuard {
    /// Starts dropping `mapping` (the file at `path`) from memory every `period_ms`.
    pub fn start(path: std::path::PathBuf, mapping: &[f32], period_ms: u64) -> Result<EvictGuard> {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::Ordering;
        let file = ctx(std::fs::File::open(&path), "opening the vectors file")?;
        let (ptr, len) = (mapping.as_ptr() as usize, std::mem::size_of_val(mapping));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: `ptr..ptr + len` is a read-only file mapping that outlives this thread
                // (the guard joins it before the mapping can go); MADV_DONTNEED on it only drops
                // page-table entries, and later reads fault the same file bytes back in.
                unsafe {
                    libc::madvise(ptr as *mut libc::c_void, len, libc::MADV_DONTNEED);
                    libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
                }
                // Sleep in short steps, so the guard's drop does not wait out a long period.
                let mut left = period_ms;
                while left > 0 && !flag.load(Ordering::Relaxed) {
                    let step = left.min(50);
                    std::thread::sleep(std::time::Duration::from_millis(step));
                    left -= step;
                }
            }
        });
        Ok(EvictGuard {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EvictGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `FilePmdMapped` of this process (Linux), 0 where unknown.
pub fn file_pmd_mapped_kb() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("FilePmdMapped:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// While alive, this process runs in a child memory cgroup capped at a number of bytes (cgroup
/// v1 `memory.limit_in_bytes`, Linux, as root), so the pages it faults in from now on (a vector
/// file evicted just before) compete for that much memory: a vector file larger than the cap
/// cannot come back whole, as on a machine whose memory is smaller than its data. What the
/// process had charged before entering stays where it was (the index files it already read
/// stay resident). Dropping it moves the process back and removes the cgroup.
pub struct MemoryCap {
    dir: std::path::PathBuf,
    parent: std::path::PathBuf,
}

impl MemoryCap {
    /// Moves this process into a new memory cgroup under its own, capped at `bytes`.
    pub fn enter(bytes: u64) -> Result<MemoryCap> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let path = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
                ctl.split(',')
                    .any(|c| c == "memory")
                    .then(|| path.to_string())
            })
            .ok_or("no cgroup v1 memory controller for this process")?;
        let parent =
            std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        let dir = parent.join(format!("glimpse-bench-{}", std::process::id()));
        ctx(std::fs::create_dir_all(&dir), "creating a memory cgroup")?;
        let cap = MemoryCap { dir, parent };
        ctx(
            std::fs::write(cap.dir.join("memory.limit_in_bytes"), bytes.to_string()),
            "capping the memory cgroup",
        )?;
        ctx(
            std::fs::write(cap.dir.join("cgroup.procs"), std::process::id().to_string()),
            "entering the memory cgroup",
        )?;
        Ok(cap)
    }

    /// Times the cgroup reclaimed pages to stay under its cap (`memory.failcnt`).
    pub fn failcnt(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.failcnt"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.parent.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}
