//! The portable block kernel: the reference every SIMD kernel must match bit
//! for bit, and the kernel of [`SimdLevel::Scalar`](crate::simd::SimdLevel::Scalar).

use super::{BLOCK, byte_pos};

/// Sums the 32 codes of one block in plain integer arithmetic, in the
/// order the layout defines; slices shorter than `pairs` groups panic.
pub(super) fn scan_block_scalar(
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
