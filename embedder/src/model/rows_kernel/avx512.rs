//! The AVX-512 build of the panel kernel: tiles of up to 12 rows × 32 columns (24 zmm
//! accumulators, two weight vectors, one broadcast), so every weight vector loaded feeds 12
//! rows and every broadcast activation two vectors. On CPUs with two 512-bit FMA units this is
//! twice the arithmetic of the AVX2 build, which is what batched passes are bound by.

use std::arch::x86_64::*;

use super::{PANEL, PanelTask, WeightElem};

/// How many panel rows ahead of the FMAs the weights are prefetched (a hint; past the end it
/// never faults).
const PREFETCH_ROWS: usize = 8;

/// Most rows per tile.
const MR: usize = 12;

/// All rows of one panel, in tiles of up to [`MR`] rows.
///
/// Tried and not kept: blocking the inner size so that a block of the panel stays in L1
/// across tiles (slower at image-batch shapes, 1600 × 768 × 3072, where the activation rows
/// then arrive in short strided pieces), and packing each tile's activations `[k][rows]` so
/// the broadcasts read one stream (no gain at batch shapes; a query paid the extra pass).
///
/// # Safety
/// AVX-512F, AVX2, FMA and F16C; the task as [`super::RowsKernel::panel_task`] requires.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn panel_task<T: WeightElem>(t: &PanelTask<'_, T>) {
    for (r, rows) in super::row_tiles(t.m, MR) {
        // SAFETY: forwarded from the caller; rows r..r + rows exist.
        unsafe {
            match rows {
                12 => tile::<T, 12>(t, r),
                11 => tile::<T, 11>(t, r),
                10 => tile::<T, 10>(t, r),
                9 => tile::<T, 9>(t, r),
                8 => tile::<T, 8>(t, r),
                7 => tile::<T, 7>(t, r),
                6 => tile::<T, 6>(t, r),
                5 => tile::<T, 5>(t, r),
                4 => tile::<T, 4>(t, r),
                3 => tile::<T, 3>(t, r),
                2 => tile::<T, 2>(t, r),
                1 => tile::<T, 1>(t, r),
                _ => unreachable!("row tiles hold 1 to {MR} rows"),
            }
        }
    }
}

/// Rows `r0..r0 + R` against the whole panel: sums, then scale, bias and epilogue as they are
/// written.
///
/// # Safety
/// As [`panel_task`], and `r0 + R <= t.m`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn tile<T: WeightElem, const R: usize>(t: &PanelTask<'_, T>, r0: usize) {
    let xp: [*const f32; R] = std::array::from_fn(|i| t.x[(r0 + i) * t.k..].as_ptr());
    // SAFETY: forwarded from the caller.
    let acc = unsafe { accumulate::<T, R>(&xp, t.panel.as_ptr(), t.k) };
    for (i, a) in acc.iter().enumerate() {
        let r = r0 + i;
        if t.cols == PANEL {
            let mut v = *a;
            if let Some(s) = t.scales {
                // SAFETY: a full panel has PANEL scales from its first column on.
                unsafe {
                    v[0] = _mm512_mul_ps(v[0], _mm512_loadu_ps(s.as_ptr()));
                    v[1] = _mm512_mul_ps(v[1], _mm512_loadu_ps(s.as_ptr().add(16)));
                }
            }
            if let Some(b) = t.bias {
                // SAFETY: as above, for the bias.
                unsafe {
                    v[0] = _mm512_add_ps(v[0], _mm512_loadu_ps(b.as_ptr()));
                    v[1] = _mm512_add_ps(v[1], _mm512_loadu_ps(b.as_ptr().add(16)));
                }
            }
            // SAFETY: row r's PANEL outputs are this task's (caller's contract).
            unsafe {
                let o = t.out.add(r * t.ldo);
                _mm512_storeu_ps(o, v[0]);
                _mm512_storeu_ps(o.add(16), v[1]);
                t.finish_row(r);
            }
        } else {
            let mut lanes = [0f32; PANEL];
            // SAFETY: `lanes` holds 32 floats.
            unsafe {
                _mm512_storeu_ps(lanes.as_mut_ptr(), a[0]);
                _mm512_storeu_ps(lanes.as_mut_ptr().add(16), a[1]);
            }
            // SAFETY: forwarded from the caller (the same multiply and add as above, so a
            // column's bits do not depend on its panel being full).
            unsafe { t.store_row(r, &lanes) };
        }
    }
}

/// The sums of `R` rows (pointers to their first input) against a panel: `[row][half]`.
/// Returned by value so that the accumulators live in registers through the loop.
///
/// # Safety
/// AVX-512F (and F16C for f16); each row holds `k` floats and the panel `k·PANEL` elements.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline]
unsafe fn accumulate<T: WeightElem, const R: usize>(
    xp: &[*const f32; R],
    wp: *const T,
    k: usize,
) -> [[__m512; 2]; R] {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..k {
        // SAFETY: kk < k, the panel holds k·PANEL elements and each row k floats.
        unsafe {
            // A query's tile reads the panel once, from memory: fetch ahead of the stream.
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add((kk + PREFETCH_ROWS) * PANEL).cast());
            let w0 = T::load16(wp.add(kk * PANEL));
            let w1 = T::load16(wp.add(kk * PANEL + 16));
            for i in 0..R {
                let xb = _mm512_set1_ps(*xp[i].add(kk));
                acc[i][0] = _mm512_fmadd_ps(xb, w0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(xb, w1, acc[i][1]);
            }
        }
    }
    acc
}
