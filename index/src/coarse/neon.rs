//! AArch64 NEON `i8` dot-product kernel (`smull` + `sadalp`). Handed out by
//! [`super::kernel_for`] only for a level the CPU supports (see
//! [`crate::simd::Kernels`]).

use std::arch::aarch64::*;

/// Four rows at a time, 16 dimensions per step: `smull`/`smull2` multiply
/// the signed bytes into `i16` (any two `i8` give at most 16 384 in
/// magnitude, so no overflow) and `sadalp` adds adjacent products into
/// `i32` lanes. Exact, like the other kernels. `_sums` is unused (the
/// signature is the table's).
///
/// # Safety
/// NEON must be present (it is part of base AArch64); `q` holds `dim` codes.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dots_i8_neon(
    q: &[i8],
    codes: &[i8],
    _sums: &[i32],
    dim: usize,
    out: &mut [i32],
) {
    let rows = out.len().min(codes.len() / dim.max(1));
    let full = dim.min(q.len()) / 16 * 16;
    // SAFETY: i + 16 <= full <= q.len().
    let qs: Vec<int8x16_t> = (0..full)
        .step_by(16)
        .map(|i| unsafe { vld1q_s8(q.as_ptr().add(i)) })
        .collect();
    let tail = |row: &[i8]| super::scalar::dot_i8_from(q, row, full);
    let step = |acc: int32x4_t, qv: int8x16_t, c: int8x16_t| -> int32x4_t {
        let acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(qv), vget_low_s8(c)));
        vpadalq_s16(acc, vmull_high_s8(qv, c))
    };
    let mut r = 0;
    while r + 4 <= rows {
        let base = codes[r * dim..(r + 4) * dim].as_ptr();
        let mut acc = [vdupq_n_s32(0); 4];
        for (j, &qv) in qs.iter().enumerate() {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: row r + k < rows and 16 * j + 16 <= full <= dim.
                let c = unsafe { vld1q_s8(base.add(k * dim + 16 * j)) };
                *a = step(*a, qv, c);
            }
        }
        for (k, a) in acc.iter().enumerate() {
            out[r + k] = vaddvq_s32(*a) + tail(&codes[(r + k) * dim..(r + k + 1) * dim]);
        }
        r += 4;
    }
    while r < rows {
        let row = &codes[r * dim..(r + 1) * dim];
        let mut acc = vdupq_n_s32(0);
        for (j, &qv) in qs.iter().enumerate() {
            // SAFETY: 16 * j + 16 <= full <= dim = row.len().
            let c = unsafe { vld1q_s8(row.as_ptr().add(16 * j)) };
            acc = step(acc, qv, c);
        }
        out[r] = vaddvq_s32(acc) + tail(row);
        r += 1;
    }
}
