//! 4-bit "fast scan" ADC: codes of 32 vectors packed so that one
//! `pshufb` (`_mm256_shuffle_epi8`; `tbl` on NEON, 16 codes at a time) looks
//! up 32 codes in a 16-entry `u8` distance table at once, with `u16`
//! accumulators.
//!
//! # Code layout
//! A list's codes are stored in blocks of 32 vectors (the last block padded
//! with zero codes). A block is `pairs = ceil(m / 2)` groups of 32 bytes;
//! in group `p` the byte at [`byte_pos`]`(v)` holds vector `v`'s code of
//! sub-quantizer `2p` in its low nibble and of `2p + 1` in its high nibble.
//! The permutation puts vectors 0..16 in the even bytes and 16..32 in the
//! odd bytes, so the even/odd 16-bit accumulators come out in row order.
//!
//! # Table layout
//! The quantized LUT has 64 bytes per pair: the 16 entries of sub-quantizer
//! `2p` twice (once per 128-bit lane), then those of `2p + 1` twice.
//!
//! Kernels return the 32 accumulators and a bit mask of the vectors whose
//! accumulator is `<= threshold`; every kernel returns identical results
//! (integer arithmetic only), which the tests check.
//!
//! # Files
//! As in faiss's `impl/fast_scan`, one file per instruction set
//! (`scalar.rs`, `x86.rs`, `neon.rs`); this file holds the layout code and
//! `kernel_for`, the scan's entry in the crate's kernel table
//! ([`Kernels`](crate::simd::Kernels)), which is how callers reach a kernel
//! ([`Kernels::scan_block`](crate::simd::Kernels::scan_block)).

use crate::simd::SimdLevel;

mod scalar;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Vectors per block.
pub const BLOCK: usize = 32;

/// Bytes of one block for `m` sub-quantizers.
#[inline]
pub fn block_bytes(m: usize) -> usize {
    m.div_ceil(2) * BLOCK
}

/// Bytes of the LUT for `m` sub-quantizers.
#[inline]
pub fn lut_bytes(m: usize) -> usize {
    m.div_ceil(2) * 64
}

/// Position of vector `v` (0..32) inside each 32-byte group.
#[inline]
pub const fn byte_pos(v: usize) -> usize {
    let u = v % 16;
    (u / 8) * 16 + 2 * (u % 8) + v / 16
}

/// Writes the `m` codes (each `< 16`) of entry `i` of a list into the packed
/// `codes` (which must already hold the block of `i`).
pub fn put_codes(codes: &mut [u8], m: usize, i: usize, entry: &[u8]) {
    let bb = block_bytes(m);
    let base = (i / BLOCK) * bb;
    let pos = byte_pos(i % BLOCK);
    for (q, &c) in entry.iter().enumerate().take(m) {
        let byte = &mut codes[base + (q / 2) * BLOCK + pos];
        if q % 2 == 0 {
            *byte = (*byte & 0xf0) | (c & 0x0f);
        } else {
            *byte = (*byte & 0x0f) | ((c & 0x0f) << 4);
        }
    }
}

/// Reads back the `m` codes of entry `i` (used by tests and validation).
pub fn get_codes(codes: &[u8], m: usize, i: usize, out: &mut [u8]) {
    let bb = block_bytes(m);
    let base = (i / BLOCK) * bb;
    let pos = byte_pos(i % BLOCK);
    for (q, o) in out.iter_mut().enumerate().take(m) {
        let byte = codes[base + (q / 2) * BLOCK + pos];
        *o = if q % 2 == 0 { byte & 0x0f } else { byte >> 4 };
    }
}

/// Quantizes float tables (`m` rows of 16, lower is better) into the packed
/// `u8` LUT: `round((v - row_min) * scale)` saturated to 255. Missing odd
/// rows are zero.
pub fn quantize_lut(lut: &[f32], m: usize, mins: &[f32], scale: f32, out: &mut [u8]) {
    out.iter_mut().for_each(|b| *b = 0);
    for q in 0..m {
        let base = (q / 2) * 64 + (q % 2) * 32;
        let row = &lut[q * 16..q * 16 + 16];
        let mut bytes = [0u8; 16];
        for (b, &x) in bytes.iter_mut().zip(row) {
            // Round half up by hand (`f32::round` is a libm call, and this runs per
            // query), branch-free so it vectorizes: below 0.5 gives 0, from 254.5 on 255,
            // and NaN 0 (a float-to-int `as` saturates and maps NaN to 0).
            *b = ((x - mins[q]) * scale + 0.5).clamp(0.0, 255.0) as u8;
        }
        out[base..base + 16].copy_from_slice(&bytes);
        out[base + 16..base + 32].copy_from_slice(&bytes);
    }
}

/// Signature of the block kernels: `(block, lut, pairs, threshold, out) ->
/// mask`. `unsafe` because the SIMD ones need their instruction set and
/// `pairs` groups of `block` and `lut`; [`Kernels::scan_block`](crate::simd::Kernels::scan_block)
/// is the safe way in.
pub(crate) type ScanKernel = unsafe fn(&[u8], &[u8], usize, u16, &mut [u16; BLOCK]) -> u32;

/// The block kernel of `level`: this module's entry in
/// [`Kernels::of`](crate::simd::Kernels::of), which asks only for levels the
/// CPU supports. Every level of this architecture has its own kernel, so a
/// test of a level never silently measures the scalar one.
pub(crate) fn kernel_for(level: SimdLevel) -> ScanKernel {
    match level {
        SimdLevel::Scalar => scalar::scan_block_scalar,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => x86::scan_block_avx2,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => x86::scan_block_avx512,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => neon::scan_block_neon,
        // The other architecture's levels: never supported here, never asked for.
        #[allow(unreachable_patterns)]
        _ => scalar::scan_block_scalar,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::simd::Kernels;
    use proptest::prelude::*;

    /// The level the CPU reports has its own kernel (so the equality test
    /// below exercises it rather than a silent scalar fallback).
    #[test]
    fn detected_level_has_a_kernel() {
        assert!(Kernels::of(SimdLevel::detected()).is_some());
        #[cfg(target_arch = "aarch64")]
        assert!(Kernels::of(SimdLevel::Neon).is_some());
    }

    #[test]
    fn byte_pos_is_a_permutation() {
        let mut seen = [false; 32];
        for v in 0..32 {
            assert!(!seen[byte_pos(v)]);
            seen[byte_pos(v)] = true;
        }
    }

    /// The branch-free rounding keeps the documented mapping: half up,
    /// saturated to 0..=255, NaN to 0; both lanes of a row hold the same bytes.
    #[test]
    fn quantize_lut_rounds_half_up_and_saturates() {
        let m = 3;
        let mut lut = vec![0.0f32; m * 16];
        let probes = [
            0.0,
            0.49,
            0.5,
            1.49,
            1.5,
            100.5,
            254.49,
            254.5,
            255.0,
            1e9,
            -3.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            7.25,
            128.0,
        ];
        for q in 0..m {
            lut[q * 16..q * 16 + 16].copy_from_slice(&probes);
        }
        let mins = vec![0.0f32; m];
        let mut out = vec![0u8; lut_bytes(m)];
        quantize_lut(&lut, m, &mins, 1.0, &mut out);
        let want = [
            0u8, 0, 1, 1, 2, 101, 254, 255, 255, 255, 0, 0, 255, 0, 7, 128,
        ];
        for q in 0..m {
            let base = (q / 2) * 64 + (q % 2) * 32;
            assert_eq!(out[base..base + 16], want, "row {q}");
            assert_eq!(out[base + 16..base + 32], want, "row {q}, second lane");
        }
        // The missing odd row of the last pair stays zero.
        assert!(out[64 + 32..128].iter().all(|&b| b == 0));
    }

    #[test]
    fn put_get_roundtrip() {
        let m = 7;
        let mut codes = vec![0u8; block_bytes(m) * 2];
        for i in 0..64 {
            let e: Vec<u8> = (0..m).map(|q| ((i * 3 + q * 5) % 16) as u8).collect();
            put_codes(&mut codes, m, i, &e);
        }
        for i in 0..64 {
            let mut out = vec![0u8; m];
            get_codes(&codes, m, i, &mut out);
            let e: Vec<u8> = (0..m).map(|q| ((i * 3 + q * 5) % 16) as u8).collect();
            assert_eq!(out, e);
        }
    }

    proptest! {
        /// Every available SIMD kernel equals the scalar one exactly, and the
        /// scalar one equals the plain definition.
        #[test]
        fn simd_matches_scalar(
            m in 1usize..=64,
            seed in any::<u64>(),
            thr in any::<u16>(),
        ) {
            let mut state = seed | 1;
            let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let block: Vec<u8> = (0..block_bytes(m)).map(|_| next() as u8).collect();
            let lut: Vec<u8> = (0..lut_bytes(m)).map(|_| next() as u8).collect();
            let mut lut = lut;
            // Both lanes of a table row are equal by construction.
            for r in 0..lut.len() / 32 {
                for j in 0..16 { lut[r * 32 + 16 + j] = lut[r * 32 + j]; }
            }
            let pairs = m.div_ceil(2);
            let mut a = [0u16; BLOCK];
            let ma = scalar::scan_block_scalar(&block, &lut, pairs, thr, &mut a);
            for (v, &av) in a.iter().enumerate() {
                let mut codes = vec![0u8; 2 * pairs];
                get_codes(&block, 2 * pairs, v, &mut codes);
                let want: u32 = (0..2 * pairs)
                    .map(|q| lut[(q / 2) * 64 + (q % 2) * 32 + codes[q] as usize] as u32)
                    .sum();
                prop_assert_eq!(av as u32, want);
                prop_assert_eq!(ma >> v & 1 == 1, av <= thr);
            }
            for level in SimdLevel::ALL {
                if let Some(k) = Kernels::of(level) {
                    let mut b = [0u16; BLOCK];
                    let mb = k.scan_block(&block, &lut, pairs, thr, &mut b);
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(ma, mb);
                }
            }
        }
    }
}
