//! AArch64 NEON block kernel (`tbl`, 16 codes per lookup). Handed out by
//! [`super::kernel_for`] only for a level the CPU supports (see
//! [`crate::simd::Kernels`]).

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
/// (checked by [`Kernels::scan_block`](crate::simd::Kernels::scan_block)). NEON is part of base AArch64.
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
