//! x86-64 block kernels: AVX2 (32 codes per `pshufb`) and AVX-512 BW (two
//! pairs of sub-quantizers per step). Handed out by [`super::kernel_for`]
//! only for a level the CPU supports (see [`crate::simd::Kernels`]).

use super::BLOCK;
use std::arch::x86_64::*;

/// AVX2 kernel.
///
/// # Safety
/// The CPU must support AVX2; `block` must hold `pairs * 32` bytes and
/// `lut` `pairs * 64` bytes (checked by [`Kernels::scan_block`](crate::simd::Kernels::scan_block)).
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
        // SAFETY: p < pairs and `Kernels::scan_block` checked the slice lengths.
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
        // SAFETY: p < pairs and `Kernels::scan_block` checked the slice lengths.
        acc = unsafe { pair_step(acc, block, lut, p) };
    }
    finish(acc.0, acc.1, thr, out)
}
