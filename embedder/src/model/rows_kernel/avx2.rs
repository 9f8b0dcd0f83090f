//! The AVX2 + FMA build of the panel kernel: each panel in two halves of 16 columns, tiles of
//! up to 6 rows (12 ymm accumulators, two weight vectors, one broadcast: 15 of 16 registers).

use std::arch::x86_64::*;

use super::{PANEL, PanelTask, WeightElem};

/// How many panel rows ahead of the FMAs the weights are prefetched (a hint; past the end it
/// never faults).
const PREFETCH_ROWS: usize = 8;

/// Most rows per tile.
const MR: usize = 6;

/// Columns per half panel.
const HALF: usize = PANEL / 2;

/// All rows of one panel, in tiles of up to [`MR`] rows, one half panel at a time.
///
/// # Safety
/// AVX2, FMA and F16C; the task as [`super::RowsKernel::panel_task`] requires.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn panel_task<T: WeightElem>(t: &PanelTask<'_, T>) {
    for (r, rows) in super::row_tiles(t.m, MR) {
        for half in 0..2 {
            // SAFETY: forwarded from the caller; rows r..r + rows exist.
            unsafe {
                match rows {
                    6 => tile::<T, 6>(t, r, half),
                    5 => tile::<T, 5>(t, r, half),
                    4 => tile::<T, 4>(t, r, half),
                    3 => tile::<T, 3>(t, r, half),
                    2 => tile::<T, 2>(t, r, half),
                    1 => tile::<T, 1>(t, r, half),
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
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<T: WeightElem, const R: usize>(t: &PanelTask<'_, T>, r0: usize, half: usize) {
    let c0 = half * HALF;
    if c0 >= t.cols {
        return;
    }
    let xp: [*const f32; R] = std::array::from_fn(|i| t.x[(r0 + i) * t.k..].as_ptr());
    // SAFETY: forwarded from the caller; c0 < PANEL.
    // (`wrapping_add`: with k = 0 the panel is empty and nothing is read.)
    let acc = unsafe {
        if half == 0 {
            accumulate::<T, R, true>(&xp, t.panel.as_ptr(), t.k)
        } else {
            accumulate::<T, R, false>(&xp, t.panel.as_ptr().wrapping_add(c0), t.k)
        }
    };
    for (i, a) in acc.iter().enumerate() {
        let mut lanes = [0f32; HALF];
        // SAFETY: `lanes` holds 16 floats.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), a[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), a[1]);
        }
        // SAFETY: row r0 + i's columns below `t.cols` are this task's (caller's contract).
        unsafe { t.store_cols(r0 + i, c0, &lanes) };
    }
}

/// The sums of `R` rows (pointers to their first input) against 16 columns of a panel
/// (`wp` points at the first): `[row][8 columns]`. Returned by value so that the accumulators
/// live in registers through the loop.
///
/// `BOTH_HALVES`: prefetch the other half's weights too (the first half's pass). An f32 panel
/// row is two cache lines, one per half, so the first pass would otherwise fetch only every
/// other line from memory and the second pass the rest: for a query's few rows, which read
/// each panel once, from memory, fetching the whole row ahead is what keeps the stream going.
///
/// # Safety
/// AVX2, FMA (and F16C for f16); each row holds `k` floats and `wp` starts 16 readable
/// elements in each of `k` panel rows.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn accumulate<T: WeightElem, const R: usize, const BOTH_HALVES: bool>(
    xp: &[*const f32; R],
    wp: *const T,
    k: usize,
) -> [[__m256; 2]; R] {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..k {
        // SAFETY: kk < k (caller's contract).
        unsafe {
            // A query's tile reads the panel once, from memory: fetch ahead of the stream.
            let ahead = wp.wrapping_add((kk + PREFETCH_ROWS) * PANEL);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            if BOTH_HALVES {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(HALF).cast());
            }
            let w0 = T::load8(wp.add(kk * PANEL));
            let w1 = T::load8(wp.add(kk * PANEL + 8));
            for i in 0..R {
                let xb = _mm256_set1_ps(*xp[i].add(kk));
                acc[i][0] = _mm256_fmadd_ps(xb, w0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(xb, w1, acc[i][1]);
            }
        }
    }
    acc
}
