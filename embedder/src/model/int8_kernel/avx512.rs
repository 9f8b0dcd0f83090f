//! The AVX-512 VNNI build of the integer kernel: tiles of up to 12 rows × 32 columns (24 zmm
//! accumulators, two weight vectors, one broadcast dword of four activations). Each
//! `vpdpbusd` adds 16 columns × 4 inputs of byte products to its sums: four times the
//! products of an f32 FMA, which is what a batch of queries is bound by.

use std::arch::x86_64::*;

use super::{GROUP, Int8Task, PANEL};

/// How many dwords of a panel ahead of the sums the weights are prefetched (a hint; past the
/// end it never faults).
const PREFETCH_GROUPS: usize = 4;

/// Most rows per tile.
const MR: usize = 12;

/// All rows of one panel, in tiles of up to [`MR`] rows.
///
/// # Safety
/// AVX-512F, BW and VNNI; the task as [`super::Int8Kernel::panel_task`] requires.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn panel_task(t: &Int8Task<'_>) {
    for (r, rows) in crate::model::rows_kernel::row_tiles(t.m, MR) {
        // SAFETY: forwarded from the caller; rows r..r + rows exist.
        unsafe {
            match rows {
                12 => tile::<12>(t, r),
                11 => tile::<11>(t, r),
                10 => tile::<10>(t, r),
                9 => tile::<9>(t, r),
                8 => tile::<8>(t, r),
                7 => tile::<7>(t, r),
                6 => tile::<6>(t, r),
                5 => tile::<5>(t, r),
                4 => tile::<4>(t, r),
                3 => tile::<3>(t, r),
                2 => tile::<2>(t, r),
                1 => tile::<1>(t, r),
                _ => unreachable!("row tiles hold 1 to {MR} rows"),
            }
        }
    }
}

/// Rows `r0..r0 + R` against the whole panel: exact sums, then `(sum as f32) · (sx · sw)`,
/// bias and epilogue as they are written.
///
/// # Safety
/// As [`panel_task`], and `r0 + R <= t.m`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
unsafe fn tile<const R: usize>(t: &Int8Task<'_>, r0: usize) {
    let xp: [*const u8; R] = std::array::from_fn(|i| t.row(r0 + i).as_ptr());
    // SAFETY: forwarded from the caller.
    let acc = unsafe { accumulate::<R>(&xp, t.panel.as_ptr(), t.offsets.as_ptr(), t.groups) };
    for (i, a) in acc.iter().enumerate() {
        let r = r0 + i;
        if t.cols == PANEL {
            // SAFETY: a full panel has PANEL scales (and bias values) from its first column;
            // row r's PANEL outputs are this task's (caller's contract).
            unsafe {
                let sx = _mm512_set1_ps(t.x_scales[r]);
                let ws = t.w_scales.as_ptr();
                let mut v0 = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(a[0]),
                    _mm512_mul_ps(sx, _mm512_loadu_ps(ws)),
                );
                let mut v1 = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(a[1]),
                    _mm512_mul_ps(sx, _mm512_loadu_ps(ws.add(16))),
                );
                if let Some(b) = t.bias {
                    v0 = _mm512_add_ps(v0, _mm512_loadu_ps(b.as_ptr()));
                    v1 = _mm512_add_ps(v1, _mm512_loadu_ps(b.as_ptr().add(16)));
                }
                let o = t.out.add(r * t.ldo);
                _mm512_storeu_ps(o, v0);
                _mm512_storeu_ps(o.add(16), v1);
                t.finish_row(r);
            }
        } else {
            let mut sums = [0i32; PANEL];
            // SAFETY: `sums` holds 32 i32.
            unsafe {
                _mm512_storeu_si512(sums.as_mut_ptr().cast(), a[0]);
                _mm512_storeu_si512(sums.as_mut_ptr().add(16).cast(), a[1]);
            }
            // SAFETY: forwarded from the caller (the same operations as above).
            unsafe { t.store_row(r, &sums) };
        }
    }
}

/// The exact sums of `R` rows (pointers to their first code) against a panel, `[row][half]`,
/// starting from the panel's offsets (which cancel the activations' `+128`).
///
/// # Safety
/// AVX-512F and VNNI; each row holds `4·groups` bytes, the panel `groups·PANEL·4` and the
/// offsets [`PANEL`] values.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
#[inline]
unsafe fn accumulate<const R: usize>(
    xp: &[*const u8; R],
    wp: *const i8,
    offsets: *const i32,
    groups: usize,
) -> [[__m512i; 2]; R] {
    // SAFETY: offsets holds PANEL values.
    let (o0, o1) = unsafe {
        (
            _mm512_loadu_si512(offsets.cast()),
            _mm512_loadu_si512(offsets.add(16).cast()),
        )
    };
    let mut acc = [[o0, o1]; R];
    let step = PANEL * GROUP;
    for g in 0..groups {
        // SAFETY: g < groups: the panel holds step bytes from g·step, each row 4 from 4·g.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add((g + PREFETCH_GROUPS) * step).cast());
            let w0 = _mm512_loadu_si512(wp.add(g * step).cast());
            let w1 = _mm512_loadu_si512(wp.add(g * step + 64).cast());
            for i in 0..R {
                let dword = xp[i].add(g * GROUP).cast::<i32>().read_unaligned();
                let xb = _mm512_set1_epi32(dword);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], xb, w0);
                acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], xb, w1);
            }
        }
    }
    acc
}

/// [`super::quantize_row`] in this build's vectors.
///
/// # Safety
/// The CPU has the features this build enables.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn quantize_row(row: &[f32], out: &mut [u8]) -> f32 {
    super::quantize_row(row, out)
}
