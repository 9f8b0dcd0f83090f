//! 4-bit "fast scan" ADC: codes of 32 vectors packed so that one
//! `pshufb` (`_mm256_shuffle_epi8`) looks up 32 codes in a 16-entry `u8`
//! distance table at once, with `u16` accumulators.
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
        for j in 0..16 {
            // Round half up by hand: `f32::round` is a libm call, and this runs per query.
            let v = (lut[q * 16 + j] - mins[q]) * scale;
            let b = if v.is_nan() || v < 0.5 {
                0
            } else if v >= 254.5 {
                255
            } else {
                (v + 0.5) as u8
            };
            out[base + j] = b;
            out[base + 16 + j] = b;
        }
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
        let nib = _mm256_set1_epi8(0x0f);
        // `whole` sums both bytes of each u16 lane (wrapping), `high` the odd
        // bytes; even-byte sums are recovered as `whole - (high << 8)`.
        let mut whole = _mm256_setzero_si256();
        let mut high = _mm256_setzero_si256();
        let bp = block.as_ptr();
        let lp = lut.as_ptr();
        for p in 0..pairs {
            // SAFETY: p < pairs and the wrapper checked the slice lengths.
            let (c, t0, t1) = unsafe {
                (
                    _mm256_loadu_si256(bp.add(p * BLOCK) as *const __m256i),
                    _mm256_loadu_si256(lp.add(p * 64) as *const __m256i),
                    _mm256_loadu_si256(lp.add(p * 64 + 32) as *const __m256i),
                )
            };
            let lo = _mm256_and_si256(c, nib);
            let hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), nib);
            let r0 = _mm256_shuffle_epi8(t0, lo);
            let r1 = _mm256_shuffle_epi8(t1, hi);
            whole = _mm256_add_epi16(whole, r0);
            whole = _mm256_add_epi16(whole, r1);
            high = _mm256_add_epi16(high, _mm256_srli_epi16(r0, 8));
            high = _mm256_add_epi16(high, _mm256_srli_epi16(r1, 8));
        }
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
}

/// Safe wrapper over the AVX2 kernel (only handed out when AVX2 is present).
#[cfg(target_arch = "x86_64")]
fn scan_block_avx2(
    block: &[u8],
    lut: &[u8],
    pairs: usize,
    thr: u16,
    out: &mut [u16; BLOCK],
) -> u32 {
    assert!(block.len() >= pairs * BLOCK && lut.len() >= pairs * 64);
    // SAFETY: `kernel()` returns this function only when AVX2 was detected;
    // slice lengths are checked above.
    unsafe { x86::scan_block_avx2(block, lut, pairs, thr, out) }
}

/// Instruction set a kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
}

/// The kernel of the given kind, if this CPU can run it.
pub fn kernel_of(kind: KernelKind) -> Option<BlockKernel> {
    match kind {
        KernelKind::Scalar => Some(scan_block_scalar),
        KernelKind::Avx2 => {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    return Some(scan_block_avx2);
                }
            }
            None
        }
    }
}

/// The fastest kernel this CPU supports (detected once).
pub fn kernel() -> BlockKernel {
    static BEST: std::sync::OnceLock<BlockKernel> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| kernel_of(KernelKind::Avx2).unwrap_or(scan_block_scalar))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn byte_pos_is_a_permutation() {
        let mut seen = [false; 32];
        for v in 0..32 {
            assert!(!seen[byte_pos(v)]);
            seen[byte_pos(v)] = true;
        }
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
            for kind in [KernelKind::Avx2] {
                if let Some(k) = kernel_of(kind) {
                    let mut b = [0u16; BLOCK];
                    let mb = k(&block, &lut, pairs, thr, &mut b);
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(ma, mb);
                }
            }
        }
    }
}
