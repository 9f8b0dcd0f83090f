//! Which SIMD instruction set the index's own kernels use (the 4-bit scan
//! and the `i8` coarse ranking).
//!
//! Detected once at run time. `GLIMPSE_SIMD=scalar|neon|avx2|avx512` caps the
//! level, which is how benchmarks compare kernels on one machine and how an
//! operator avoids AVX-512 on a CPU that clocks down for it: the level used is
//! the best one this CPU supports at or below the cap (so `avx2` on an ARM
//! machine means NEON, and `neon` on x86-64 means scalar); an unknown value is
//! ignored (and the detected level used).
//! Every kernel returns bit-identical results, so the cap never changes an
//! answer, only its speed.

use std::sync::OnceLock;

/// An instruction-set level, ordered from least to most capable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable Rust (also the reference the SIMD kernels are tested against).
    Scalar,
    /// AArch64 Advanced SIMD (NEON, part of the base AArch64 instruction set).
    Neon,
    /// x86-64 AVX2 (with FMA).
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
