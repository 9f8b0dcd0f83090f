//! Tests of when a search scores its candidates on the compact tier before the re-rank
//! (`prunes_on_tier`): by depth, by margin and kind, and when its raw rows are out of memory.

use super::pagein::row_resident;
use super::{COMPACT_MIN_PER_RESULT, min_per_result};
use crate::synthetic::{SyntheticSpec, generate};
use crate::tier::{CompactCodes, CompactKind};
use crate::{Cancel, IndexParams, IvfPqIndex, IvfPqView, Metric, SearchParams, SearchStats};

/// A read-only shared mapping of a file of floats this test wrote: the form the engine
/// serves raw vectors in.
pub(super) struct MappedFloats {
    file: std::fs::File,
    path: std::path::PathBuf,
    ptr: *mut libc::c_void,
    len: usize,
}

impl MappedFloats {
    /// Writes `floats` to a new file named after `tag`, synced, and maps it.
    pub(super) fn write(tag: &str, floats: &[f32]) -> MappedFloats {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!(
            "glimpse-pagein-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = std::fs::File::create(&path).expect("create");
        let bytes: Vec<u8> = floats.iter().flat_map(|x| x.to_le_bytes()).collect();
        f.write_all(&bytes).expect("write");
        f.sync_all().expect("sync");
        let file = std::fs::File::open(&path).expect("open");
        let mut m = MappedFloats {
            file,
            path,
            ptr: std::ptr::null_mut(),
            len: bytes.len(),
        };
        m.map();
        m
    }

    fn map(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a read-only shared mapping of a file this test owns and does not change.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                self.len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // SAFETY: the mapping just made; random access as the engine advises for rows.
        unsafe { libc::madvise(ptr, self.len, libc::MADV_RANDOM) };
        self.ptr = ptr;
    }

    /// Unmaps, drops the file's clean pages from the page cache and maps it again, so no
    /// page is resident (pages mapped by a process are not dropped, hence the remap);
    /// whether the page cache let go of them (some filesystems keep their pages).
    pub(super) fn evict(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: unmaps this struct's own mapping; `floats()` borrows end before this.
        unsafe { libc::munmap(self.ptr, self.len) };
        // SAFETY: drops clean pages of this test's own file.
        unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        self.map();
        !self.resident_at(0) && !self.resident_at(self.len / 2 / 4096 * 4096)
    }

    /// Whether the page at byte `at` is resident.
    pub(super) fn resident_at(&self, at: usize) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: one page of the live mapping.
        unsafe { libc::mincore(self.ptr.cast::<u8>().add(at).cast(), 4096, b.as_mut_ptr()) };
        b[0] & 1 == 1
    }

    pub(super) fn floats(&self) -> &[f32] {
        // SAFETY: the mapping is `len` bytes, page-aligned, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.ptr as *const f32, self.len / 4) }
    }
}

impl Drop for MappedFloats {
    fn drop(&mut self) {
        // SAFETY: this struct's own mapping, not used after.
        unsafe { libc::munmap(self.ptr, self.len) };
        let _ = std::fs::remove_file(&self.path);
    }
}

/// 6,000 rows of the hard mixture (`dim` wide, seeded) and a cosine index over them.
fn hard_index(dim: usize, seed: u64) -> (crate::synthetic::SyntheticData, IvfPqIndex) {
    let data = generate(&SyntheticSpec::hard(6_000, 40, dim, seed));
    let ix = IvfPqIndex::build(
        &data.vectors,
        dim,
        Metric::Cosine,
        &IndexParams::default(),
        Cancel::NEVER,
    )
    .expect("build");
    (data, ix)
}

/// A search whose re-rank is too shallow to use the compact tier with the raw rows in
/// memory (fewer than `COMPACT_MIN_PER_RESULT` candidates per result) scores its
/// candidates on the tier when they are out, and re-ranks only the survivors: the same
/// results as the plain re-rank of every candidate, from fewer raw rows. With the rows
/// resident it reads them all, as before.
#[test]
fn a_shallow_search_prunes_on_the_tier_only_when_its_rows_are_out() {
    let dim = 256;
    let (data, ix) = hard_index(dim, 21);
    let codes = CompactCodes::build(CompactKind::Rotated6, &data.vectors, dim, Metric::Cosine)
        .expect("codes");
    let (with_tier, plain) = (ix.to_bytes_with(None, Some(&codes)), ix.to_bytes());
    let (tiered, plain) = (
        IvfPqView::from_bytes(&with_tier).expect("view"),
        IvfPqView::from_bytes(&plain).expect("view"),
    );
    let params = SearchParams {
        k: 10,
        nprobe: Some(8),
        refine: Some(6),
        ..SearchParams::default()
    };
    const { assert!(6 < COMPACT_MIN_PER_RESULT) };
    let mut m = MappedFloats::write("shallow", &data.vectors);
    let (mut out, mut plain_stats) = (SearchStats::default(), SearchStats::default());
    for i in 0..data.n_queries() {
        if !m.evict() {
            eprintln!("the page cache kept the file's pages: nothing to show here");
            return;
        }
        let q = data.query(i);
        let got = tiered.search_with_stats(q, m.floats(), &params, None, &mut out);
        let want = plain.search_with_stats(q, &data.vectors, &params, None, &mut plain_stats);
        assert_eq!(got, want, "query {i}");
    }
    assert_eq!(out.compact_scored, plain_stats.reranked);
    assert!(
        out.reranked * 2 < plain_stats.reranked,
        "{} raw rows read against {} without the tier",
        out.reranked,
        plain_stats.reranked
    );
    // Every page resident: no codes scored, every candidate re-ranked.
    let _sum: f32 = m.floats().iter().step_by(1024).sum();
    let mut resident = SearchStats::default();
    for i in 0..data.n_queries() {
        let q = data.query(i);
        let got = tiered.search_with_stats(q, m.floats(), &params, None, &mut resident);
        assert_eq!(got, plain.search(q, &data.vectors, &params, None));
    }
    assert_eq!(resident.compact_scored, 0);
    assert_eq!(resident.reranked, plain_stats.reranked);
}

/// With the rows resident, a search prunes on the tier from [`min_per_result`] candidates per
/// result: [`COMPACT_MIN_PER_RESULT`] under the full margin whatever the codes; under a measured
/// margin from 6 with 8-bit codes and from 12 with rotated 6-bit ones. Pruned or not, it returns
/// the plain re-rank's results (under the narrower margin, but for a rare near-tie).
#[test]
fn resident_rows_are_pruned_from_the_depth_where_each_kind_and_margin_pays() {
    let dim = 128;
    let (data, ix) = hard_index(dim, 5);
    let plain_bytes = ix.to_bytes();
    let plain = IvfPqView::from_bytes(&plain_bytes).expect("view");
    assert_eq!(
        min_per_result(CompactKind::Sq8, 1.0),
        COMPACT_MIN_PER_RESULT
    );
    assert_eq!(
        min_per_result(CompactKind::Rotated6, 1.0),
        COMPACT_MIN_PER_RESULT
    );
    for (kind, below, from) in [(CompactKind::Sq8, 5, 6), (CompactKind::Rotated6, 11, 12)] {
        assert_eq!(min_per_result(kind, 0.3), from);
        let codes = CompactCodes::build(kind, &data.vectors, dim, Metric::Cosine).expect("codes");
        let bytes = ix.to_bytes_with(None, Some(&codes));
        let view = IvfPqView::from_bytes(&bytes).expect("view");
        let full_below = COMPACT_MIN_PER_RESULT - 1;
        for (share, refine, prunes) in [
            (1.0, full_below, false),
            (1.0, COMPACT_MIN_PER_RESULT, true),
            (0.3, below, false),
            (0.3, from, true),
        ] {
            let params = SearchParams {
                k: 10,
                nprobe: Some(16),
                refine: Some(refine),
                tier_margin: share,
                ..SearchParams::default()
            };
            let (mut stats, mut differ) = (SearchStats::default(), 0);
            for i in 0..data.n_queries() {
                let q = data.query(i);
                let got = view.search_with_stats(q, &data.vectors, &params, None, &mut stats);
                differ += usize::from(got != plain.search(q, &data.vectors, &params, None));
            }
            let allowed = if share < 1.0 { 2 } else { 0 };
            assert!(
                differ <= allowed,
                "{kind:?} share {share} refine {refine}: {differ} differ"
            );
            assert_eq!(
                stats.compact_scored > 0,
                prunes,
                "{kind:?} share {share} refine {refine}: {stats:?}"
            );
            if prunes {
                assert!(stats.reranked * 2 < stats.compact_scored, "{stats:?}");
            }
        }
    }
    // Heap rows are resident.
    assert!(row_resident(&data.vectors, dim, 17));
}
