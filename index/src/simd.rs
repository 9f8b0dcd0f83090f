//! Which SIMD instruction set the index's own kernels use (the 4-bit scan,
//! the `i8` coarse ranking, k-means assignment and PQ encoding), and the
//! embedder's few-rows matrix kernel, which asks [`level`] too.
//!
//! Detected once at run time. `GLIMPSE_SIMD=scalar|neon|avx2|avx512` caps the
//! level, which is how benchmarks compare kernels on one machine and how an
//! operator avoids AVX-512 on a CPU that clocks down for it: the level used is
//! the best one this CPU supports at or below the cap (so `avx2` on an ARM
//! machine means NEON, and `neon` on x86-64 means scalar); an unknown value is
//! ignored (and the detected level used).
//! Every kernel returns bit-identical results, so the cap never changes an
//! answer, only its speed.
//!
//! # Dispatch
//! Callers in this crate never test the level themselves: [`kernels`] is a
//! table of function pointers ([`Kernels`]) filled once from [`level`], and
//! each module with per-instruction-set code contributes its entry through
//! a `kernel_for(level)` function (`fastscan`, `coarse`, `kmeans`, `pq`).

use std::sync::OnceLock;

use crate::coarse::{self, DotsKernel};
use crate::exact_batch::{self, TileKernel};
use crate::fastscan::{self, BLOCK, ScanKernel};
use crate::kmeans::{self, AssignKernel, SmallCentroids};
use crate::pq::{self, EncodeKernel, PqEncoder};
use crate::tier::{self, Rq6Kernel, Sq8Kernel};

/// An instruction-set level, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable Rust (also the reference the SIMD kernels are tested against).
    Scalar,
    /// AArch64 Advanced SIMD (NEON, part of the base AArch64 instruction set).
    Neon,
    /// x86-64 AVX2 with FMA and F16C. F16C (half-float conversion) is for the
    /// embedder's f16 weights; every CPU with AVX2 has it (Intel since Ivy
    /// Bridge, AMD since Piledriver), so requiring it excludes none in practice.
    Avx2,
    /// x86-64 AVX-512 F + BW (512-bit integer shuffles and arithmetic).
    Avx512,
}

impl SimdLevel {
    /// Every level, least capable first (what benchmarks and tests iterate).
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
    ];

    /// Name as accepted by `GLIMPSE_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(SimdLevel::Scalar),
            "neon" => Some(SimdLevel::Neon),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx-512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// Whether this CPU can run kernels of this level.
    pub fn supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                SimdLevel::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The most capable level this CPU supports.
    pub fn detected() -> SimdLevel {
        SimdLevel::best_at_most(SimdLevel::Avx512)
    }

    /// The most capable level this CPU supports that is not above `cap`.
    pub fn best_at_most(cap: SimdLevel) -> SimdLevel {
        SimdLevel::ALL
            .into_iter()
            .rev()
            .find(|l| *l <= cap && l.supported())
            .unwrap_or(SimdLevel::Scalar)
    }
}

/// Whether the CPU has AVX-512 VNNI (`vpdpbusd`), used by the coarse
/// ranking at [`SimdLevel::Avx512`].
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
}

/// The level the kernels use: the detected one, capped by `GLIMPSE_SIMD`.
pub fn level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        match std::env::var("GLIMPSE_SIMD")
            .ok()
            .as_deref()
            .and_then(SimdLevel::parse)
        {
            Some(cap) => SimdLevel::best_at_most(cap),
            None => SimdLevel::detected(),
        }
    })
}

/// The crate's SIMD kernels for one [`SimdLevel`]: one function pointer per
/// kernel, chosen when the table is made, so a hot loop pays one indirect
/// call and no level test.
///
/// The pointers are `unsafe fn`s (the SIMD kernels need their instruction
/// set); a `Kernels` is only ever made for a level this CPU supports
/// ([`Kernels::of`] checks), and each method checks the slice lengths its
/// kernel relies on, which is what makes the methods safe.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    level: SimdLevel,
    scan_block: ScanKernel,
    dots_i8: DotsKernel,
    assign_rows: AssignKernel,
    pq_encode: EncodeKernel,
    dots_tile: TileKernel,
    sq8_dot: Sq8Kernel,
    rq6_dot: Rq6Kernel,
}

impl Kernels {
    /// The kernels of `level`, or `None` when this CPU cannot run them
    /// (benchmarks and tests compare every level this way).
    pub fn of(level: SimdLevel) -> Option<Kernels> {
        level.supported().then(|| Kernels::unchecked(level))
    }

    /// The table of `level` without the support check: only for a supported level.
    fn unchecked(level: SimdLevel) -> Kernels {
        Kernels {
            level,
            scan_block: fastscan::kernel_for(level),
            dots_i8: coarse::kernel_for(level),
            assign_rows: kmeans::kernel_for(level),
            pq_encode: pq::kernel_for(level),
            dots_tile: exact_batch::kernel_for(level),
            sq8_dot: tier::sq8_kernel_for(level),
            rq6_dot: tier::rq6_kernel_for(level),
        }
    }

    /// The level these kernels are for.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// 4-bit fast scan of one block (see [`fastscan`] for the layouts): the
    /// 32 sums into `out` and the mask of those `<= thr`. `block` must hold
    /// `pairs * 32` bytes and `lut` `pairs * 64` (else this panics).
    #[inline]
    pub fn scan_block(
        &self,
        block: &[u8],
        lut: &[u8],
        pairs: usize,
        thr: u16,
        out: &mut [u16; BLOCK],
    ) -> u32 {
        assert!(block.len() >= pairs * BLOCK && lut.len() >= pairs * 64);
        // SAFETY: `self` exists only for a level the CPU supports (`Kernels::of`, or
        // `kernels` with `level()`, which is always supported); lengths checked above.
        unsafe { (self.scan_block)(block, lut, pairs, thr, out) }
    }

    /// `out[r] = <q, row r of codes>` for `dim`-code rows, exactly in `i32`
    /// (`sums[r]` is row `r`'s code sum). `q` must hold `dim` codes.
    #[inline]
    pub(crate) fn dots_i8(
        &self,
        q: &[i8],
        codes: &[i8],
        sums: &[i32],
        dim: usize,
        out: &mut [i32],
    ) {
        assert!(q.len() >= dim);
        // SAFETY: a supported level (see `scan_block`); `q` holds `dim` codes and the
        // kernels bound every other access by the slices' lengths.
        unsafe { (self.dots_i8)(q, codes, sums, dim, out) }
    }

    /// Nearest centroid of every row of `rows` (see [`SmallCentroids`]).
    #[inline]
    pub(crate) fn assign_rows(
        &self,
        centroids: &SmallCentroids,
        rows: &[f32],
        labels: &mut [u32],
        dists: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        // SAFETY: a supported level (see `scan_block`); the kernels are safe code
        // compiled for that level, with no other requirement.
        unsafe { (self.assign_rows)(centroids, rows, labels, dists, scratch) }
    }

    /// PQ codes of one vector (see [`PqEncoder::encode`]).
    #[inline]
    pub(crate) fn pq_encode(
        &self,
        encoder: &PqEncoder,
        x: &[f32],
        out: &mut [u8],
        scratch: &mut Vec<f32>,
    ) {
        // SAFETY: as in `assign_rows`.
        unsafe { (self.pq_encode)(encoder, x, out, scratch) }
    }
}

impl Kernels {
    /// Inner products of every query in `queries` (`dim` floats each) with the rows of a
    /// transposed tile (`dim × TILE` floats, see `exact_batch`) into `out` (`TILE` per
    /// query). Panics when the slices are shorter than that.
    #[inline]
    pub(crate) fn dots_tile(&self, tile: &[f32], queries: &[f32], dim: usize, out: &mut [f32]) {
        assert!(tile.len() >= dim * exact_batch::TILE);
        assert!(out.len() >= queries.len() / dim.max(1) * exact_batch::TILE);
        // SAFETY: a supported level (see `scan_block`); the kernels are safe code compiled
        // for that level, with the lengths checked above.
        unsafe { (self.dots_tile)(tile, queries, dim, out) }
    }
}

impl Kernels {
    /// `Σ w_j · c_j` (the compact tier's code score); `w` and `c` must have equal lengths.
    #[inline]
    pub(crate) fn sq8_dot(&self, w: &[f32], c: &[u8]) -> f32 {
        // SAFETY: a supported level (see `scan_block`); the kernels are safe code compiled
        // for that level and bound every access by the slices' lengths.
        unsafe { (self.sq8_dot)(w, c) }
    }

    /// `Σ w_j · c_j` over the rotated tier's packed 6-bit codes (32 weights per 24-byte chunk
    /// of `c`, see `tier::rq6`); only whole chunks present in both are summed.
    #[inline]
    pub(crate) fn rq6_dot(&self, w: &[f32], c: &[u8]) -> f32 {
        // SAFETY: a supported level (see `scan_block`); the kernels bound every access by the
        // slices' lengths.
        unsafe { (self.rq6_dot)(w, c) }
    }
}

/// The kernels of [`level`], made on first use.
pub fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    // `level()` is always supported; scalar is the harmless answer if it ever were not.
    KERNELS.get_or_init(|| {
        Kernels::of(level()).unwrap_or_else(|| Kernels::unchecked(SimdLevel::Scalar))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(SimdLevel::parse("AVX2"), Some(SimdLevel::Avx2));
        assert_eq!(SimdLevel::parse("avx512"), Some(SimdLevel::Avx512));
        assert_eq!(SimdLevel::parse("scalar"), Some(SimdLevel::Scalar));
        assert_eq!(SimdLevel::parse("sse9"), None);
        assert_eq!(SimdLevel::parse("NEON"), Some(SimdLevel::Neon));
        assert!(SimdLevel::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(SimdLevel::Scalar.supported());
        assert!(level() <= SimdLevel::detected());
        assert!(level().supported());
        for l in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse(l.name()), Some(l));
            // A cap never yields an unsupported level or one above the cap.
            let got = SimdLevel::best_at_most(l);
            assert!(got <= l && got.supported(), "{l:?} -> {got:?}");
        }
        // The base instruction set of each architecture is always there.
        #[cfg(target_arch = "aarch64")]
        assert_eq!(SimdLevel::detected(), SimdLevel::Neon);
        #[cfg(target_arch = "x86_64")]
        assert!(!SimdLevel::Neon.supported());
    }
}
