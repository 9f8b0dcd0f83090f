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

pub use crate::simd::SimdLevel;

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

/// Signature shared by the kernels: `(block, lut, pairs, threshold, out) -> mask`.
pub type BlockKernel = fn(&[u8], &[u8], usize, u16, &mut [u16; BLOCK]) -> u32;

/// Portable kernel; the reference the SIMD kernels must match bit for bit.
pub fn scan_block_scalar(
    block: &[u8],
    lut: &[u8],
    pairs: usize,
    thr: u16,
    out: &mut [u16; BLOCK],
) -> u32 {
    let mut mask = 0u32;
    for (v, o) in out.iter_mut().enumerate() {
        let pos = byte_pos(v);
        let mut acc = 0u16;
        for p in 0..pairs {
            let b = block[p * BLOCK + pos];
            let t = &lut[p * 64..p * 64 + 64];
            acc = acc
                .wrapping_add(t[(b & 0x0f) as usize] as u16)
                .wrapping_add(t[32 + (b >> 4) as usize] as u16);
        }
        *o = acc;
        if acc <= thr {
            mask |= 1 << v;
        }
    }
    mask
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// AVX2 kernel.
    ///
    /// # Safety
    /// The CPU must support AVX2; `block` must hold `pairs * 32` bytes and
    /// `lut` `pairs * 64` bytes (checked by the safe wrapper).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_block_avx2(
        block: &[u8],
        lut: &[u8],
        pairs: usize,
        thr: u16,
        out: &mut [u16; BLOCK],
    ) -> u32 {
        // `whole` sums both bytes of each u16 lane (wrapping), `high` the odd
        // bytes; even-byte sums are recovered as `whole - (high << 8)`.
        let mut acc = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for p in 0..pairs {
            // SAFETY: p < pairs and the wrapper checked the slice lengths.
            acc = unsafe { pair_step(acc, block, lut, p) };
        }
        finish(acc.0, acc.1, thr, out)
    }

    /// Adds pair `p`'s table entries for the 32 codes of the block to the
    /// `(whole, high)` accumulators.
    ///
    /// # Safety
    /// `block` must hold `(p + 1) * 32` bytes and `lut` `(p + 1) * 64`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pair_step(
        (whole, high): (__m256i, __m256i),
        block: &[u8],
        lut: &[u8],
        p: usize,
    ) -> (__m256i, __m256i) {
        let nib = _mm256_set1_epi8(0x0f);
        // SAFETY: the caller guarantees both ranges are inside the slices.
        let (c, t0, t1) = unsafe {
            (
                _mm256_loadu_si256(block.as_ptr().add(p * BLOCK) as *const __m256i),
                _mm256_loadu_si256(lut.as_ptr().add(p * 64) as *const __m256i),
                _mm256_loadu_si256(lut.as_ptr().add(p * 64 + 32) as *const __m256i),
            )
        };
        let r0 = _mm256_shuffle_epi8(t0, _mm256_and_si256(c, nib));
        let r1 = _mm256_shuffle_epi8(t1, _mm256_and_si256(_mm256_srli_epi16(c, 4), nib));
        let whole = _mm256_add_epi16(_mm256_add_epi16(whole, r0), r1);
        let high = _mm256_add_epi16(
            _mm256_add_epi16(high, _mm256_srli_epi16(r0, 8)),
            _mm256_srli_epi16(r1, 8),
        );
        (whole, high)
    }

    /// Splits the accumulators into the 32 row sums (even bytes = rows 0..16,
    /// odd bytes = rows 16..32), stores them and returns the `<= thr` mask.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn finish(whole: __m256i, high: __m256i, thr: u16, out: &mut [u16; BLOCK]) -> u32 {
        let even = _mm256_sub_epi16(whole, _mm256_slli_epi16(high, 8));
        // SAFETY: `out` is 32 u16 = 64 bytes.
        unsafe {
            _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, even);
            _mm256_storeu_si256(out.as_mut_ptr().add(16) as *mut __m256i, high);
        }
        let t = _mm256_set1_epi16(thr as i16);
        let le_e = _mm256_cmpeq_epi16(_mm256_min_epu16(even, t), even);
        let le_o = _mm256_cmpeq_epi16(_mm256_min_epu16(high, t), high);
        let packed = _mm256_packs_epi16(le_e, le_o);
        let ordered = _mm256_permute4x64_epi64(packed, 0b11_01_10_00);
        _mm256_movemask_epi8(ordered) as u32
    }

    /// AVX-512 BW kernel: two pairs of sub-quantizers per step. The 64 code
    /// bytes of pairs `p` and `p + 1` fill one register; the tables are
    /// regrouped so that each 256-bit half sees its own pair's tables, and
    /// the two halves' sums are folded at the end. Integer sums wrap the same
    /// way in any order, so the result equals the AVX2 and scalar kernels'.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F and BW (and AVX2); `block` must hold
    /// `pairs * 32` bytes and `lut` `pairs * 64` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx2")]
    pub(super) unsafe fn scan_block_avx512(
        block: &[u8],
        lut: &[u8],
        pairs: usize,
        thr: u16,
        out: &mut [u16; BLOCK],
    ) -> u32 {
        let nib = _mm512_set1_epi8(0x0f);
        let mut whole = _mm512_setzero_si512();
        let mut high = _mm512_setzero_si512();
        let bp = block.as_ptr();
        let lp = lut.as_ptr();
        let mut p = 0;
        while p + 2 <= pairs {
            // SAFETY: p + 2 <= pairs: codes [p*32, p*32+64) and tables
            // [p*64, p*64+128) are inside the checked lengths.
            let (c, l0, l1) = unsafe {
                (
                    _mm512_loadu_si512(bp.add(p * BLOCK).cast()),
                    _mm512_loadu_si512(lp.add(p * 64).cast()),
                    _mm512_loadu_si512(lp.add(p * 64 + 64).cast()),
                )
            };
            // l0 = [A A B B], l1 = [C C D D] (16-byte tables of sub-quantizers
            // 2p, 2p+1, 2p+2, 2p+3): low nibbles need [A A C C], high [B B D D].
            let t0 = _mm512_shuffle_i64x2(l0, l1, 0b01_00_01_00);
            let t1 = _mm512_shuffle_i64x2(l0, l1, 0b11_10_11_10);
            let lo = _mm512_and_si512(c, nib);
            let hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), nib);
            let r0 = _mm512_shuffle_epi8(t0, lo);
            let r1 = _mm512_shuffle_epi8(t1, hi);
            whole = _mm512_add_epi16(whole, r0);
            whole = _mm512_add_epi16(whole, r1);
            high = _mm512_add_epi16(high, _mm512_srli_epi16(r0, 8));
            high = _mm512_add_epi16(high, _mm512_srli_epi16(r1, 8));
            p += 2;
        }
        let mut acc = (
            _mm256_add_epi16(
                _mm512_castsi512_si256(whole),
                _mm512_extracti64x4_epi64(whole, 1),
            ),
            _mm256_add_epi16(
                _mm512_castsi512_si256(high),
                _mm512_extracti64x4_epi64(high, 1),
            ),
        );
        if p < pairs {
            // SAFETY: p < pairs and the wrapper checked the slice lengths.
            acc = unsafe { pair_step(acc, block, lut, p) };
        }
        finish(acc.0, acc.1, thr, out)
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::BLOCK;
    use std::arch::aarch64::*;

    /// `(whole, high)` accumulators of one 16-byte half of a block, summed the
    /// same way as the AVX2 kernel: `whole` adds each table byte pair as one
    /// wrapping `u16`, `high` the odd bytes alone.
    #[derive(Clone, Copy)]
    struct Half {
        whole: uint16x8_t,
        high: uint16x8_t,
    }

    impl Half {
        #[target_feature(enable = "neon")]
        #[inline]
        fn zero() -> Half {
            Half {
                whole: vdupq_n_u16(0),
                high: vdupq_n_u16(0),
            }
        }

        /// Adds the lookups of 16 code bytes `c` in tables `ta` (low nibbles)
        /// and `tb` (high nibbles).
        #[target_feature(enable = "neon")]
        #[inline]
        fn add(self, c: uint8x16_t, ta: uint8x16_t, tb: uint8x16_t) -> Half {
            let r0 = vreinterpretq_u16_u8(vqtbl1q_u8(ta, vandq_u8(c, vdupq_n_u8(0x0f))));
            let r1 = vreinterpretq_u16_u8(vqtbl1q_u8(tb, vshrq_n_u8::<4>(c)));
            Half {
                whole: vaddq_u16(vaddq_u16(self.whole, r0), r1),
                high: vaddq_u16(
                    vaddq_u16(self.high, vshrq_n_u16::<8>(r0)),
                    vshrq_n_u16::<8>(r1),
                ),
            }
        }

        /// The even-byte sums (`whole - high * 256`, wrapping) and the odd-byte sums.
        #[target_feature(enable = "neon")]
        #[inline]
        fn split(self) -> (uint16x8_t, uint16x8_t) {
            (
                vsubq_u16(self.whole, vshlq_n_u16::<8>(self.high)),
                self.high,
            )
        }
    }

    /// Bit `i` set where lane `i` of `v` is `<= thr`.
    #[target_feature(enable = "neon")]
    #[inline]
    fn le_mask(v: uint16x8_t, thr: uint16x8_t) -> u32 {
        const BITS: [u16; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
        // SAFETY: BITS is 8 u16.
        let bits = unsafe { vld1q_u16(BITS.as_ptr()) };
        vaddvq_u16(vandq_u16(vcleq_u16(v, thr), bits)) as u32
    }

    /// NEON kernel: each 32-byte group is two 16-byte halves, looked up with
    /// `tbl` (`vqtbl1q_u8`). Byte `j` of half `h` holds vector
    /// `16 (j % 2) + 8 h + j / 2`, so the even-byte sums of halves 0 and 1 are
    /// rows 0..8 and 8..16, the odd-byte sums rows 16..24 and 24..32. Integer
    /// sums wrap the same way in any order: the result equals the scalar kernel's.
    ///
    /// # Safety
    /// `block` must hold `pairs * 32` bytes and `lut` `pairs * 64` bytes
    /// (checked by the safe wrapper). NEON is part of base AArch64.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn scan_block_neon(
        block: &[u8],
        lut: &[u8],
        pairs: usize,
        thr: u16,
        out: &mut [u16; BLOCK],
    ) -> u32 {
        let (mut h0, mut h1) = (Half::zero(), Half::zero());
        let bp = block.as_ptr();
        let lp = lut.as_ptr();
        for p in 0..pairs {
            // SAFETY: p < pairs: codes [p*32, p*32+32) and tables [p*64, p*64+48)
            // are inside the checked lengths.
            let (c0, c1, ta, tb) = unsafe {
                (
                    vld1q_u8(bp.add(p * BLOCK)),
                    vld1q_u8(bp.add(p * BLOCK + 16)),
                    vld1q_u8(lp.add(p * 64)),
                    vld1q_u8(lp.add(p * 64 + 32)),
                )
            };
            h0 = h0.add(c0, ta, tb);
            h1 = h1.add(c1, ta, tb);
        }
        let (e0, o0) = h0.split();
        let (e1, o1) = h1.split();
        let o = out.as_mut_ptr();
        // SAFETY: `out` holds 32 u16; each store writes 8 of them.
        unsafe {
            vst1q_u16(o, e0);
            vst1q_u16(o.add(8), e1);
            vst1q_u16(o.add(16), o0);
            vst1q_u16(o.add(24), o1);
        }
        let t = vdupq_n_u16(thr);
        le_mask(e0, t) | le_mask(e1, t) << 8 | le_mask(o0, t) << 16 | le_mask(o1, t) << 24
    }
}

/// Safe wrappers over the `unsafe` SIMD kernels. Each is handed out by
/// [`kernel_of`] only after its instruction set was detected; the slice
/// lengths the kernels rely on are checked here.
macro_rules! checked_kernel {
    ($(#[$doc:meta])* $arch:literal, $name:ident => $inner:path) => {
        $(#[$doc])*
        #[cfg(target_arch = $arch)]
        fn $name(block: &[u8], lut: &[u8], pairs: usize, thr: u16, out: &mut [u16; BLOCK]) -> u32 {
            assert!(block.len() >= pairs * BLOCK && lut.len() >= pairs * 64);
            // SAFETY: `kernel_of` returns this function only when the CPU supports the
            // kernel's instruction set; slice lengths are checked above.
            unsafe { $inner(block, lut, pairs, thr, out) }
        }
    };
}

checked_kernel!(
    /// The AVX2 kernel.
    "x86_64", scan_block_avx2 => x86::scan_block_avx2
);
checked_kernel!(
    /// The AVX-512 F/BW kernel.
    "x86_64", scan_block_avx512 => x86::scan_block_avx512
);
checked_kernel!(
    /// The NEON kernel.
    "aarch64", scan_block_neon => arm::scan_block_neon
);

/// The kernel of the given level, if this CPU can run it.
pub fn kernel_of(level: SimdLevel) -> Option<BlockKernel> {
    if !level.supported() {
        return None;
    }
    match level {
        SimdLevel::Scalar => Some(scan_block_scalar),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => Some(scan_block_avx2),
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => Some(scan_block_avx512),
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => Some(scan_block_neon),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The kernel of [`simd::level`](crate::simd::level) (detected once).
pub fn kernel() -> BlockKernel {
    static BEST: std::sync::OnceLock<BlockKernel> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| kernel_of(crate::simd::level()).unwrap_or(scan_block_scalar))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The level the CPU reports has its own kernel (so the equality test
    /// below exercises it rather than a silent scalar fallback).
    #[test]
    fn detected_level_has_a_kernel() {
        assert!(kernel_of(SimdLevel::detected()).is_some());
        #[cfg(target_arch = "aarch64")]
        assert!(kernel_of(SimdLevel::Neon).is_some());
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
            let ma = scan_block_scalar(&block, &lut, pairs, thr, &mut a);
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
                if let Some(k) = kernel_of(level) {
                    let mut b = [0u16; BLOCK];
                    let mb = k(&block, &lut, pairs, thr, &mut b);
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(ma, mb);
                }
            }
        }
    }
}
