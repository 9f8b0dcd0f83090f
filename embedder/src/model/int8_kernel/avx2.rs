//! The AVX2 build of the integer kernel, for CPUs without VNNI: each panel in two halves of
//! 16 columns, tiles of up to 4 rows (8 ymm accumulators). A dword of four activations `a`
//! and four weights `w` becomes `vpmaddubsw(|a|, sign(w, a))` (pairs of products in 16 bits,
//! at most `2·127²`, so never saturated) and `vpmaddwd` by ones (the pairs summed in 32). The
//! sums are exact, so they equal the VNNI build's to the bit; the arithmetic is about that of
//! the f32 kernel, but the weights are read as bytes.

use std::arch::x86_64::*;

use super::{GROUP, Int8Task, PANEL};

/// Most rows per tile.
const MR: usize = 4;

/// Columns per half panel.
const HALF: usize = PANEL / 2;

/// All rows of one panel, in tiles of up to [`MR`] rows, one half panel at a time.
///
/// # Safety
/// AVX2; the task as [`super::Int8Kernel::panel_task`] requires.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn panel_task(t: &Int8Task<'_>) {
    for (r, rows) in crate::model::rows_kernel::row_tiles(t.m, MR) {
        for half in 0..2 {
            // SAFETY: forwarded from the caller; rows r..r + rows exist.
            unsafe {
                match rows {
                    4 => tile::<4>(t, r, half),
                    3 => tile::<3>(t, r, half),
                    2 => tile::<2>(t, r, half),
                    1 => tile::<1>(t, r, half),
                    _ => unreachable!("row tiles hold 1 to {MR} rows"),
                }
            }
        }
    }
}

/// Rows `r0..r0 + R` against columns `half·16..half·16 + 16` of the panel.
///
/// # Safety
/// As [`panel_task`], and `r0 + R <= t.m`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(t: &Int8Task<'_>, r0: usize, half: usize) {
    let c0 = half * HALF;
    if c0 >= t.cols {
        return;
    }
    let xp: [*const u8; R] = std::array::from_fn(|i| t.row(r0 + i).as_ptr());
    // SAFETY: forwarded from the caller; the half panel starts c0·4 bytes into each dword row.
    let acc = unsafe { accumulate::<R>(&xp, t.panel.as_ptr().wrapping_add(c0 * GROUP), t.groups) };
    for (i, a) in acc.iter().enumerate() {
        let r = r0 + i;
        if c0 + HALF <= t.cols {
            // SAFETY: the half panel's 16 columns are valid, with their scales and bias; row
            // r's outputs are this task's (caller's contract).
            unsafe {
                let sx = _mm256_set1_ps(t.x_scales[r]);
                let ws = t.w_scales.as_ptr().add(c0);
                let o = t.out.add(r * t.ldo + c0);
                for (v, &sums) in a.iter().enumerate() {
                    let mut f = _mm256_mul_ps(
                        _mm256_cvtepi32_ps(sums),
                        _mm256_mul_ps(sx, _mm256_loadu_ps(ws.add(8 * v))),
                    );
                    if let Some(b) = t.bias {
                        f = _mm256_add_ps(f, _mm256_loadu_ps(b.as_ptr().add(c0 + 8 * v)));
                    }
                    _mm256_storeu_ps(o.add(8 * v), f);
                }
                t.act.finish(o, HALF);
            }
        } else {
            let mut sums = [0i32; HALF];
            // SAFETY: `sums` holds 16 i32.
            unsafe {
                _mm256_storeu_si256(sums.as_mut_ptr().cast(), a[0]);
                _mm256_storeu_si256(sums.as_mut_ptr().add(8).cast(), a[1]);
            }
            // SAFETY: forwarded from the caller (the same operations as above).
            unsafe { t.store_cols(r, c0, &sums) };
        }
    }
}

/// The exact sums `Σ a·w` of `R` rows against 16 columns of a panel (`wp` at the half panel's
/// first dword), `[row][8 columns]`.
///
/// # Safety
/// AVX2; each row holds `4·groups` bytes and the panel `groups·PANEL·4` from its start.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn accumulate<const R: usize>(
    xp: &[*const u8; R],
    wp: *const i8,
    groups: usize,
) -> [[__m256i; 2]; R] {
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let step = PANEL * GROUP;
    for g in 0..groups {
        // SAFETY: g < groups: the half panel's 64 bytes lie within the panel, each row holds
        // 4 bytes from 4·g.
        unsafe {
            let w0 = _mm256_loadu_si256(wp.add(g * step).cast());
            let w1 = _mm256_loadu_si256(wp.add(g * step + 32).cast());
            for i in 0..R {
                let dword = xp[i].add(g * GROUP).cast::<i32>().read_unaligned();
                // Offset binary back to signed codes, then |a| and the sign moved to w.
                let a = _mm256_xor_si256(_mm256_set1_epi32(dword), flip);
                let abs = _mm256_abs_epi8(a);
                let p0 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w0, a));
                let p1 = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w1, a));
                acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(p0, ones));
                acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(p1, ones));
            }
        }
    }
    acc
}

/// [`super::quantize_row`] in this build's vectors.
///
/// # Safety
/// The CPU has the features this build enables.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_row(row: &[f32], out: &mut [u8]) -> f32 {
    super::quantize_row(row, out)
}
