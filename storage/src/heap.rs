//! The allocator's thresholds, and returning freed heap to the operating system after large,
//! one-off jobs.
//!
//! Flushes and compactions allocate hundreds of MiB for a moment (merge
//! buffers, k-means samples, the index being built) and free it when they
//! finish. glibc keeps freed memory in its per-thread arenas, so without a
//! trim a server that compacted once stays that large for good, although
//! serving needs almost no heap (the data is memory-mapped).
//!
//! A server that embeds queries is the opposite case: every forward pass allocates and frees
//! its activations (megabytes per layer) many times a second, and memory handed back between
//! two layers must be faulted in and zeroed again by the kernel in the next. So the server
//! picks the thresholds by what it runs ([`HeapThresholds`]).

/// glibc's two thresholds (`mallopt`): both at 1 MiB return memory promptly, both high keep
/// freed blocks for reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapThresholds {
    /// Blocks of this size or more are mapped and unmapped directly (`M_MMAP_THRESHOLD`;
    /// glibc refuses more than [`HeapThresholds::MAX_MMAP`]).
    pub mmap: usize,
    /// An arena's free top beyond this is returned at once (`M_TRIM_THRESHOLD`).
    pub trim: usize,
}

impl HeapThresholds {
    /// The highest mmap threshold glibc accepts on 64-bit targets (half its 64 MiB heap size).
    pub const MAX_MMAP: usize = 32 << 20;

    /// Freed memory goes back to the OS as it is freed, from every arena: for a server whose
    /// heap is small once a load is over (vector search only).
    ///
    /// `malloc_trim` gives back free pages inside each arena but trims the *top* of the main
    /// arena only; the per-thread arenas that bulk loads and index builds run in keep their
    /// freed top (measured: ~12 MiB in each of three arenas after a 200k-row load, while 6 MiB
    /// was in use), and glibc raises its trim threshold up to 64 MiB after large frees. Fixing
    /// both thresholds at 1 MiB turns that off.
    pub const PROMPT_RETURN: HeapThresholds = HeapThresholds {
        mmap: 1 << 20,
        trim: 1 << 20,
    };

    /// Freed blocks up to 32 MiB stay in their arena for the next allocation, and an arena
    /// keeps up to 64 MiB of free top (glibc's own ceilings, reached at once instead of after
    /// the first large frees): for a server that runs forward passes. With the thresholds at
    /// 1 MiB, 16 text queries' pass took 1.5x as long in the server as alone (every
    /// activation of a megabyte or more was unmapped when freed and faulted back in) and an
    /// image batch 1.8x.
    pub const REUSE: HeapThresholds = HeapThresholds {
        mmap: Self::MAX_MMAP,
        trim: 64 << 20,
    };
}

/// Hands the allocator's free memory back to the OS (`malloc_trim`). Costs a
/// walk over the allocator's free lists (milliseconds); call it after a job
/// that freed a lot, not per request. A no-op where glibc is not the allocator.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets glibc's mmap and trim thresholds for the rest of the process; call it once at process
/// start, before heavy allocation. Fixed thresholds also turn off glibc's own adjustment of
/// them. An explicit `MALLOC_TRIM_THRESHOLD_` / `MALLOC_MMAP_THRESHOLD_` in the environment
/// wins. A no-op where glibc is not the allocator.
pub fn set_heap_thresholds(t: HeapThresholds) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: mallopt only sets allocator parameters.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, int(t.trim)) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(
                    libc::M_MMAP_THRESHOLD,
                    int(t.mmap.min(HeapThresholds::MAX_MMAP)),
                )
            };
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = t;
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Whether glibc mapped the block at `ptr` on its own (the `IS_MMAPPED` bit of the chunk's
    /// size word, just before the block) rather than carving it from an arena.
    fn mapped_on_its_own(ptr: *const u8) -> bool {
        // SAFETY: every block glibc's malloc returns is preceded by its chunk's size word.
        let size_word = unsafe { ptr.cast::<usize>().sub(1).read() };
        size_word & 2 != 0
    }

    fn is_mapped(bytes: usize) -> bool {
        let block = vec![1u8; bytes];
        let mapped = mapped_on_its_own(block.as_ptr());
        drop(block);
        mapped
    }

    /// Set in the child process that runs the checks alone.
    const CHILD: &str = "GLIMPSE_HEAP_TEST_CHILD";

    /// The thresholds reach the allocator: a 4 MiB block is mapped on its own under
    /// `PROMPT_RETURN` and comes from an arena under `REUSE`. The checks run in a child process
    /// of this test binary holding this test alone: glibc maps a block only when no free chunk
    /// of its arena can hold it, so blocks other tests freed into a shared arena would decide
    /// it instead of the thresholds (and the thresholds are the process's).
    #[test]
    fn thresholds_decide_whether_a_block_is_mapped_on_its_own() {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        {
            return; // the environment wins by design
        }
        if std::env::var_os(CHILD).is_some() {
            check_thresholds();
            return;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let name = "heap::tests::thresholds_decide_whether_a_block_is_mapped_on_its_own";
        let out = std::process::Command::new(exe)
            .args(["--exact", name, "--test-threads", "1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .expect("running the test binary again");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    }

    fn check_thresholds() {
        set_heap_thresholds(HeapThresholds::PROMPT_RETURN);
        // Twice: glibc's own adjustment would take the second from an arena.
        assert!(is_mapped(4 << 20));
        assert!(is_mapped(4 << 20));
        assert!(!is_mapped(64 << 10));
        set_heap_thresholds(HeapThresholds::REUSE);
        // At once, with no block this large freed before it.
        assert!(!is_mapped(24 << 20));
        assert!(!is_mapped(4 << 20));
        assert!(
            is_mapped(48 << 20),
            "beyond the 32 MiB ceiling blocks are still mapped"
        );
    }
}
