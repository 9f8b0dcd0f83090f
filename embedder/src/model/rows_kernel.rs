//! The few-rows kernel behind [`super::dense`]: `rows × weightsᵀ` reading each weight row
//! once, straight from the checkpoint's `[out, in]` layout, for f32, f16 and int8 (scaled)
//! weights, with an AVX2 + FMA path picked once from [`simd::level`] and a scalar one that the
//! tests hold it to. Every output row is computed alone, so a row's result never depends on the
//! other rows of the call (batched queries keep their bits).

use std::sync::OnceLock;

use glimpse_index::simd;
use half::f16;

/// Element type of stored weights: f32, or f16 widened on load.
pub(crate) trait WeightElem: Copy + Send + Sync {
    /// The value as f32.
    fn widen(self) -> f32;

    /// Eight consecutive weights from `p`, widened to f32.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be enabled in the caller; `p` must point at eight readable
    /// elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: forwarded from the caller.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl WeightElem for i8 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::{
            __m128i, _mm_loadl_epi64, _mm256_cvtepi8_epi32, _mm256_cvtepi32_ps,
        };
        // SAFETY: forwarded from the caller (eight i8 = 8 readable bytes, AVX2 enabled).
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast::<__m128i>()))) }
    }
}

impl WeightElem for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps};
        // SAFETY: forwarded from the caller (eight f16 = 16 readable bytes, F16C enabled).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
    }
}

/// Output columns computed per parallel task: small enough that both cores get several tasks
/// for a 512-wide layer, large enough that a task's weights (32 rows) amortise its dispatch.
const COLUMNS_PER_TASK: usize = 32;

/// `out[r·n + j] = Σₖ x[r·k + kk] · w[j·k + kk] (+ bias[j])`: `m` activation rows against
/// `n` weight rows.
///
/// Parallel over blocks of weight rows, so each weight byte is read from memory once in
/// total. Each task writes a transposed block (`[j][r]`), gathered into `out` at the end.
pub(crate) fn rows_times_weights<T: WeightElem>(
    x: &[f32],
    m: usize,
    w: &[T],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    rows_times_weights_scaled(x, m, w, n, k, None, bias, out);
}

/// [`rows_times_weights`] with each output `j` multiplied by `scales[j]` before the bias
/// (int8 weights).
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_times_weights_scaled<T: WeightElem>(
    x: &[f32],
    m: usize,
    w: &[T],
    n: usize,
    k: usize,
    scales: Option<&[f32]>,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    assert!(bias.is_none_or(|b| b.len() >= n));
    let mut transposed = vec![0f32; n * m];
    if m == 0 || n == 0 {
        return;
    }
    // candle's own worker pool, not rayon's: its workers spin between the many short ops of
    // a forward pass, where rayon's fall asleep and every linear layer paid a futex wake-up.
    let tasks = n.div_ceil(COLUMNS_PER_TASK);
    let base = SyncPtr(transposed.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
        for task in range {
            let j0 = task * COLUMNS_PER_TASK;
            let cols = COLUMNS_PER_TASK.min(n - j0);
            // SAFETY: task blocks are disjoint ranges of `transposed` (n·m floats), each task
            // index is handed out once, and `transposed` outlives the pool call.
            let block = unsafe { std::slice::from_raw_parts_mut(base.at(j0 * m), cols * m) };
            weight_block(x, m, &w[j0 * k..(j0 + cols) * k], cols, k, block);
        }
    });
    for (j, col) in transposed.chunks_exact(m).enumerate() {
        let b = bias.map_or(0.0, |b| b[j]);
        match scales {
            None => {
                for (r, &v) in col.iter().enumerate() {
                    out[r * n + j] = v + b;
                }
            }
            Some(s) => {
                for (r, &v) in col.iter().enumerate() {
                    out[r * n + j] = v * s[j] + b;
                }
            }
        }
    }
}

/// A raw pointer the pool's workers may share; each writes only its own block.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);

// SAFETY: used only to hand disjoint blocks of one buffer to the pool's workers.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer `offset` floats further (a method, so closures capture the whole struct).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// One task: `cols` weight rows against all `m` activation rows, written `[j][r]`.
fn weight_block<T: WeightElem>(
    x: &[f32],
    m: usize,
    w: &[T],
    cols: usize,
    k: usize,
    out: &mut [f32],
) {
    match RowsKernel::get() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `RowsKernel::Avx2` is chosen only at `SimdLevel::Avx2` or above, which
        // `glimpse_index::simd` grants only to CPUs with AVX2, FMA and F16C.
        RowsKernel::Avx2 => unsafe { avx2::weight_block(x, m, w, cols, k, out) },
        RowsKernel::Portable => scalar_weight_block(x, m, w, cols, k, out),
    }
}

/// Which build of the few-rows kernel runs, chosen once from the index crate's
/// [`simd::level`], so one detection (and its `GLIMPSE_SIMD` cap) serves every
/// SIMD kernel of the process. An enum rather than a function pointer because
/// the kernel is generic over the weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowsKernel {
    /// Plain Rust, vectorized by the compiler for the baseline target.
    Portable,
    /// AVX2 + FMA, with F16C for f16 weights.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl RowsKernel {
    /// The kernel for the process's SIMD level (decided on first use).
    fn get() -> RowsKernel {
        static KERNEL: OnceLock<RowsKernel> = OnceLock::new();
        *KERNEL.get_or_init(|| match simd::level() {
            #[cfg(target_arch = "x86_64")]
            simd::SimdLevel::Avx2 | simd::SimdLevel::Avx512 => RowsKernel::Avx2,
            _ => RowsKernel::Portable,
        })
    }
}

/// Portable version: eight partial sums per dot product so the compiler can keep them in
/// vector registers without reassociating floats.
pub(super) fn scalar_weight_block<T: WeightElem>(
    x: &[f32],
    m: usize,
    w: &[T],
    cols: usize,
    k: usize,
    out: &mut [f32],
) {
    for j in 0..cols {
        let wj = &w[j * k..(j + 1) * k];
        for r in 0..m {
            let xr = &x[r * k..(r + 1) * k];
            let mut lanes = [0f32; 8];
            let mut wc = wj.chunks_exact(8);
            let mut xc = xr.chunks_exact(8);
            for (wv, xv) in (&mut wc).zip(&mut xc) {
                for l in 0..8 {
                    lanes[l] += wv[l].widen() * xv[l];
                }
            }
            let mut sum: f32 = lanes.iter().sum();
            for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
                sum += a.widen() * b;
            }
            out[j * m + r] = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::WeightElem;

    /// How far ahead of the FMAs the weight rows are prefetched (elements).
    const PREFETCH_ELEMS: usize = 512;

    /// Horizontal sum of eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Weight rows `j..j+nj` (≤ W) against activation rows `r..r+nr` (≤ R), written
    /// `out[col·m + row]`. `W·R ≤ 12` accumulators plus `W` weight and one activation
    /// register fit the 16 ymm registers, and every weight vector loaded feeds `R` FMAs.
    /// Short tiles repeat their last row (loaded, never stored) to keep one code path.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `x` holds `m·k` floats, `w` the tile's rows, `out` `cols·m`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<T: WeightElem, const W: usize, const R: usize>(
        x: &[f32],
        m: usize,
        w: &[T],
        k: usize,
        j: usize,
        nj: usize,
        r: usize,
        nr: usize,
        out: &mut [f32],
    ) {
        let k8 = k / 8 * 8;
        let mut acc = [[_mm256_setzero_ps(); W]; R];
        let wp: [*const T; W] = std::array::from_fn(|q| w[(j + q.min(nj - 1)) * k..].as_ptr());
        let xp: [*const f32; R] = std::array::from_fn(|q| x[(r + q.min(nr - 1)) * k..].as_ptr());
        let mut kk = 0;
        while kk < k8 {
            // SAFETY: kk + 8 <= k and every pointer starts a row of k floats; a prefetch of
            // an address past the row is a hint that never faults.
            unsafe {
                if (kk * size_of::<T>()).is_multiple_of(64) {
                    for &p in &wp {
                        let ahead = p.wrapping_add(kk + PREFETCH_ELEMS);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    }
                }
                let wv: [__m256; W] = std::array::from_fn(|q| T::load8(wp[q].add(kk)));
                for (a, &p) in acc.iter_mut().zip(&xp) {
                    let xv = _mm256_loadu_ps(p.add(kk));
                    for (acc_q, &w_q) in a.iter_mut().zip(&wv) {
                        *acc_q = _mm256_fmadd_ps(xv, w_q, *acc_q);
                    }
                }
            }
            kk += 8;
        }
        for (ri, a) in acc.iter().enumerate().take(nr) {
            let xr = &x[(r + ri) * k..(r + ri + 1) * k];
            for (q, &v) in a.iter().enumerate().take(nj) {
                let wr = &w[(j + q) * k..(j + q + 1) * k];
                let mut sum = hsum(v);
                for t in k8..k {
                    sum += xr[t] * wr[t].widen();
                }
                out[(j + q) * m + r + ri] = sum;
            }
        }
    }

    /// All `m` activation rows against `cols` weight rows. Rows go in groups of up to six;
    /// the tile shape follows the group so that one pass over a weight tile serves as many
    /// rows as the registers allow (a 5-token query reads each weight from memory once).
    /// Later groups re-read the task's weight block from L2, not from memory.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; slices hold `m·k`, `cols·k` and `cols·m`
    /// elements.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weight_block<T: WeightElem>(
        x: &[f32],
        m: usize,
        w: &[T],
        cols: usize,
        k: usize,
        out: &mut [f32],
    ) {
        let mut r = 0;
        while r < m {
            let nr = (m - r).min(6);
            let width = match nr {
                5 | 6 => 2,
                4 => 3,
                3 => 4,
                2 => 6,
                _ => 8,
            };
            let mut j = 0;
            while j < cols {
                let nj = (cols - j).min(width);
                // SAFETY: forwarded from the caller; the tile stays inside the slices.
                unsafe {
                    match nr {
                        6 => tile::<T, 2, 6>(x, m, w, k, j, nj, r, nr, out),
                        5 => tile::<T, 2, 5>(x, m, w, k, j, nj, r, nr, out),
                        4 => tile::<T, 3, 4>(x, m, w, k, j, nj, r, nr, out),
                        3 => tile::<T, 4, 3>(x, m, w, k, j, nj, r, nr, out),
                        2 => tile::<T, 6, 2>(x, m, w, k, j, nj, r, nr, out),
                        _ => tile::<T, 8, 1>(x, m, w, k, j, nj, r, nr, out),
                    }
                }
                j += nj;
            }
            r += nr;
        }
    }
}
