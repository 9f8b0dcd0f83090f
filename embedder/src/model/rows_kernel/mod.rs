//! The CPU kernel behind [`super::dense`]: `rows × weightsᵀ` over weights packed once, at
//! load, into panels of [`PANEL`] output columns (`[panel][k][PANEL]`), for f32, f16 and int8
//! (scaled) weights. Builds for AVX-512 and AVX2 + FMA (one picked once from [`simd::level`])
//! and a portable one that the tests hold them to.
//!
//! Each output is one accumulator that takes the `k` products in order (an outer-product
//! micro-kernel: a weight vector of the panel times each row's broadcast activation), so
//! - a row's result never depends on the other rows of the call, nor on the tile it lands in:
//!   batched queries and images keep their bits;
//! - one kernel serves every row count: a query of five tokens reads each weight once (all
//!   its rows share one tile), a batch of images runs GEMM-sized tiles (12 rows × 32 columns
//!   with AVX-512) with no transposes and no horizontal sums.

use std::sync::OnceLock;

use glimpse_index::simd;
use half::f16;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Output columns per panel: two AVX-512 vectors, four AVX2 ones.
pub(crate) const PANEL: usize = 32;

/// Element type of stored weights: f32, f16 or int8, widened to f32 in registers.
pub(crate) trait WeightElem: Copy + Send + Sync {
    /// Zero (the padding of a last, partial panel).
    const ZERO: Self;

    /// The value as f32.
    fn widen(self) -> f32;

    /// Eight consecutive weights from `p`, widened to f32.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be enabled in the caller; `p` must point at eight readable
    /// elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;

    /// Sixteen consecutive weights from `p`, widened to f32.
    ///
    /// # Safety
    /// AVX-512F must be enabled in the caller; `p` must point at sixteen readable elements.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl WeightElem for f32 {
    const ZERO: Self = 0.0;

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

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        // SAFETY: forwarded from the caller.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl WeightElem for i8 {
    const ZERO: Self = 0;

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

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{
            __m128i, _mm_loadu_si128, _mm512_cvtepi8_epi32, _mm512_cvtepi32_ps,
        };
        // SAFETY: forwarded from the caller (sixteen i8 = 16 readable bytes, AVX-512F enabled).
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast::<__m128i>()))) }
    }
}

impl WeightElem for f16 {
    const ZERO: Self = f16::ZERO;

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

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_cvtph_ps};
        // SAFETY: forwarded from the caller (sixteen f16 = 32 readable bytes, AVX-512F enabled).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>())) }
    }
}

/// A `[n, k]` weight matrix (PyTorch's `[out, in]`) repacked as `n.div_ceil(PANEL)` panels,
/// each `[k][PANEL]`: the [`PANEL`] weights of one input index for consecutive outputs sit
/// together, so the kernel loads them as vectors. The last panel is padded with zeros.
///
/// The panels start on a cache line ([`PANEL_ALIGN`] bytes), so no panel row straddles two
/// (a row of f32 is two lines, of f16 one, of int8 a half): each vector load of the kernel
/// reads one line instead of two. The allocator promises 16 bytes (glibc starts a buffer
/// mapped on its own 16 bytes into a page), so before this the panels' alignment depended on
/// where each allocation landed; aligned, a 16-image pass in the server went from 1.26–1.28 s
/// to 1.16–1.17 s on an AVX2 machine.
pub(crate) struct PackedWeights<T> {
    /// The panels from `data[start]`, a cache-line boundary; each panel is a whole number of
    /// rows, so every row starts on a line boundary or (int8) half of one.
    data: Vec<T>,
    start: usize,
    n: usize,
    k: usize,
}

/// Where panels start: a multiple of a cache line.
pub(crate) const PANEL_ALIGN: usize = 64;

impl<T: WeightElem> PackedWeights<T> {
    /// Packs row-major `w` (`n` rows of `k`).
    pub(crate) fn pack(w: &[T], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "weights shorter than {n}x{k}");
        let panels = n.div_ceil(PANEL);
        let len = panels * k * PANEL;
        let slack = PANEL_ALIGN / size_of::<T>();
        let mut data = vec![T::ZERO; len + slack];
        // Elements to skip to reach a line boundary (the buffer is aligned to `T`, whose size
        // divides the line).
        let misalign = data.as_ptr() as usize % PANEL_ALIGN;
        let start = (PANEL_ALIGN - misalign) % PANEL_ALIGN / size_of::<T>();
        let packed = &mut data[start..start + len];
        for (j, row) in w[..n * k].chunks_exact(k.max(1)).enumerate() {
            let (p, c) = (j / PANEL, j % PANEL);
            let panel = &mut packed[p * k * PANEL..(p + 1) * k * PANEL];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * PANEL + c] = v;
            }
        }
        Self { data, start, n, k }
    }

    /// Output size.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Input size.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Panel `p`: `k·PANEL` elements.
    fn panel(&self, p: usize) -> &[T] {
        let at = self.start + p * self.k * PANEL;
        &self.data[at..at + self.k * PANEL]
    }

    /// Bytes held by the panels (the alignment slack aside).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        (self.data.len() - PANEL_ALIGN / size_of::<T>()) * size_of::<T>()
    }
}

/// What the kernel applies to each output after scale and bias, while it is in cache: one
/// pass over the activation instead of three separate ops (each a full read and write, single
/// threaded in candle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Epilogue {
    /// Nothing.
    #[default]
    None,
    /// OpenAI CLIP's `x · sigmoid(1.702 x)`, with the exponential of [`exp_poly`].
    QuickGelu,
}

impl Epilogue {
    /// The epilogue of one output.
    #[inline(always)]
    pub(super) fn apply(self, v: f32) -> f32 {
        match self {
            Epilogue::None => v,
            Epilogue::QuickGelu => quick_gelu(v),
        }
    }

    /// [`Epilogue::apply_row`] in place over the `len` outputs from `row`, written without it.
    ///
    /// # Safety
    /// `row..row + len` lies within one output buffer, and no other thread writes that range.
    #[inline(always)]
    pub(super) unsafe fn finish(self, row: *mut f32, len: usize) {
        if self == Epilogue::None {
            return;
        }
        // SAFETY: forwarded from the caller.
        self.apply_row(unsafe { std::slice::from_raw_parts_mut(row, len) });
    }

    /// [`Epilogue::apply`] over a row, in a loop the compiler vectorizes (the kernels inline
    /// it, so it takes their SIMD width).
    #[inline(always)]
    pub(super) fn apply_row(self, row: &mut [f32]) {
        match self {
            Epilogue::None => {}
            Epilogue::QuickGelu => {
                for v in row {
                    *v = quick_gelu(*v);
                }
            }
        }
    }
}

/// `x · 1 / (exp(-(1.702 x)) + 1)`, the order of candle's ops, with [`exp_poly`] for the
/// exponential: libm's `expf` is a call per output, which took 5–6 % of an image batch and
/// of a text query.
#[inline(always)]
pub(crate) fn quick_gelu(v: f32) -> f32 {
    v * (exp_poly(-(v * 1.702)) + 1.0).recip()
}

/// `eˣ` within 2 ulp (Cody–Waite reduction by `n·ln 2`, Cephes' degree-5 polynomial), for
/// `x` clamped to [-87, 88], where the result stays a normal float (the sigmoid is 0 or 1 to
/// f32 beyond). Written in operations that every lane of a vector computes alike (min, max,
/// fused multiply-add, rounding half to even, an exponent built from the integer `n`), so
/// the compiler vectorizes a row of them and a value gets the same bits from every kernel
/// build, in any position of any batch.
#[inline(always)]
pub(crate) fn exp_poly(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2⁸.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = 1.987_569_1e-4_f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // n ∈ [-126, 127] after the clamp: 2ⁿ is a normal float with exponent field n + 127.
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `out[r·n + j] = act((Σₖ x[r·k + kk] · w[j·k + kk]) (· scales[j]) (+ bias[j]))` for `m`
/// activation rows, with `kernel` ([`RowsKernel::get`] outside tests).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_times_packed<T: WeightElem>(
    kernel: RowsKernel,
    x: &[f32],
    m: usize,
    w: &PackedWeights<T>,
    scales: Option<&[f32]>,
    bias: Option<&[f32]>,
    act: Epilogue,
    out: &mut [f32],
) {
    let (n, k) = (w.n, w.k);
    assert!(x.len() >= m * k && out.len() >= m * n);
    assert!(bias.is_none_or(|b| b.len() >= n));
    assert!(scales.is_none_or(|s| s.len() >= n));
    if m == 0 || n == 0 {
        return;
    }
    let tasks = n.div_ceil(PANEL);
    let base = SyncPtr(out.as_mut_ptr());
    // candle's own worker pool, not rayon's: its workers spin between the many short ops of
    // a forward pass, where rayon's fall asleep and every linear layer paid a futex wake-up.
    candle_core::utils::barrier_pool().execute_chunked(tasks, |range| {
        for p in range {
            let j0 = p * PANEL;
            let ctx = PanelTask {
                x,
                m,
                k,
                panel: w.panel(p),
                cols: PANEL.min(n - j0),
                scales: scales.map(|s| &s[j0..]),
                bias: bias.map(|b| &b[j0..]),
                act,
                out: base.at(j0),
                ldo: n,
            };
            // SAFETY: panels write disjoint column ranges `j0..j0 + cols` of `out` (m·n
            // floats), each panel index is handed out once, and `out` outlives the pool call.
            unsafe { kernel.panel_task(&ctx) };
        }
    });
}

/// One panel's work: all `m` rows against `cols` (≤ [`PANEL`]) outputs starting at `out`.
pub(super) struct PanelTask<'a, T> {
    /// Activations, `m` rows of `k`.
    pub x: &'a [f32],
    /// Rows.
    pub m: usize,
    /// Inner size.
    pub k: usize,
    /// The panel, `[k][PANEL]`.
    pub panel: &'a [T],
    /// Valid columns of the panel.
    pub cols: usize,
    /// Per-output scales from this panel's first column on.
    pub scales: Option<&'a [f32]>,
    /// Bias from this panel's first column on.
    pub bias: Option<&'a [f32]>,
    /// Applied last.
    pub act: Epilogue,
    /// Row 0, column 0 of this panel's outputs.
    pub out: *mut f32,
    /// Distance between output rows.
    pub ldo: usize,
}

impl<T> PanelTask<'_, T> {
    /// Writes `acc[c]` (the sums of row `r`, columns `c < cols`) with scale, bias and epilogue.
    ///
    /// # Safety
    /// `out + r·ldo + cols` lies within the output and no other thread writes there.
    #[inline(always)]
    unsafe fn store_row(&self, r: usize, acc: &[f32]) {
        // SAFETY: forwarded from the caller.
        unsafe { self.store_cols(r, 0, acc) };
    }

    /// [`PanelTask::store_row`] for the columns from `c0` on: `acc[c]` is column `c0 + c`
    /// (those at or past `cols` are padding and are dropped).
    ///
    /// # Safety
    /// As [`PanelTask::store_row`].
    #[inline(always)]
    unsafe fn store_cols(&self, r: usize, c0: usize, acc: &[f32]) {
        let cols = self.cols.saturating_sub(c0);
        for (c, &v) in acc.iter().enumerate().take(cols) {
            let j = c0 + c;
            let v = match self.scales {
                Some(s) => v * s[j],
                None => v,
            };
            let v = match self.bias {
                Some(b) => v + b[j],
                None => v,
            };
            // SAFETY: forwarded from the caller; j < cols.
            unsafe { *self.out.add(r * self.ldo + j) = self.act.apply(v) };
        }
    }

    /// Applies the epilogue to row `r`'s `cols` outputs, written without it.
    ///
    /// # Safety
    /// As [`PanelTask::store_row`].
    #[inline(always)]
    unsafe fn finish_row(&self, r: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.act.finish(self.out.add(r * self.ldo), self.cols) };
    }
}

/// A raw pointer the pool's workers may share; each writes only its own part of the buffer
/// (columns here, sequence-and-head blocks in [`super::attention_core`]).
pub(crate) struct SyncPtr<T = f32>(pub(crate) *mut T);

// Not derived: a derive would ask `T: Clone`, and a pointer copies whatever it points at.
impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SyncPtr<T> {}

// SAFETY: used only to hand disjoint parts of one buffer to the pool's workers.
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// The pointer `offset` elements further (a method, so closures capture the whole struct).
    pub(crate) fn at(self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}

/// Which build of the kernel runs, chosen once from the index crate's [`simd::level`], so one
/// detection (and its `GLIMPSE_SIMD` cap) serves every SIMD kernel of the process. An enum
/// rather than a function pointer because the kernel is generic over the weight type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// Plain Rust, vectorized by the compiler for the baseline target.
    Portable,
    /// AVX2 + FMA (F16C for f16 weights): 6 rows × 16 columns per tile.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F: 12 rows × 32 columns per tile.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// A kernel build this CPU runs. The field is private: [`RowsKernel::get`] and
/// [`RowsKernel::available`] are the only constructors, which is what makes
/// [`rows_times_packed`] safe to call with any value of this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowsKernel(Build);

impl RowsKernel {
    /// Runs one panel's task.
    ///
    /// # Safety
    /// `t.out` covers `m` rows `t.ldo` apart of at least `t.cols` floats that no other thread
    /// writes; `t.x` holds `m·k` floats and `t.panel` `k·PANEL` elements.
    unsafe fn panel_task<T: WeightElem>(self, t: &PanelTask<'_, T>) {
        debug_assert!(t.x.len() >= t.m * t.k && t.panel.len() >= t.k * PANEL);
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is made only for CPUs with AVX2, FMA and F16C (`get`,
            // `available`); the rest is forwarded from the caller.
            Build::Avx2 => unsafe { avx2::panel_task(t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512` is made only for CPUs with AVX-512F and BW besides AVX2, FMA
            // and F16C (`get`, `available`); the rest is forwarded from the caller.
            Build::Avx512 => unsafe { avx512::panel_task(t) },
            // SAFETY: forwarded from the caller.
            Build::Portable => unsafe { portable_panel_task(t) },
        }
    }

    /// Every kernel this CPU runs, whatever `GLIMPSE_SIMD` says: the tests hold each to the
    /// same results.
    #[cfg(test)]
    pub(super) fn available() -> Vec<RowsKernel> {
        #[allow(unused_mut)]
        let mut kernels = vec![RowsKernel(Build::Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            if avx2 {
                kernels.push(RowsKernel(Build::Avx2));
            }
            if avx2 && has!("avx512f") && has!("avx512bw") {
                kernels.push(RowsKernel(Build::Avx512));
            }
        }
        kernels
    }

    /// The kernel for the process's SIMD level (decided on first use).
    pub(crate) fn get() -> RowsKernel {
        static KERNEL: OnceLock<RowsKernel> = OnceLock::new();
        *KERNEL.get_or_init(|| match simd::level() {
            // `glimpse_index::simd` grants Avx2 only with AVX2, FMA and F16C, and Avx512 only
            // with AVX-512F and BW besides.
            #[cfg(target_arch = "x86_64")]
            simd::SimdLevel::Avx2 => RowsKernel(Build::Avx2),
            #[cfg(target_arch = "x86_64")]
            simd::SimdLevel::Avx512 => RowsKernel(Build::Avx512),
            _ => RowsKernel(Build::Portable),
        })
    }
}

/// `m` rows as tiles of at most `max` rows, `(first row, rows)`, as even as possible: a tile
/// of few rows has few independent sums and waits on the FMA latency, so 7 rows run as 4 + 3,
/// not 6 + 1. (A row's result does not depend on its tile.)
pub(super) fn row_tiles(m: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = m.div_ceil(max.max(1));
    let base = m.checked_div(tiles).unwrap_or(0);
    let extra = m.checked_rem(tiles).unwrap_or(0);
    (0..tiles).scan(0, move |start, i| {
        let rows = base + usize::from(i < extra);
        let tile = (*start, rows);
        *start += rows;
        Some(tile)
    })
}

/// Portable version: one row at a time, the panel's columns in the inner loop (which the
/// compiler vectorizes), each output summed over `k` in order.
///
/// # Safety
/// As [`RowsKernel::panel_task`].
unsafe fn portable_panel_task<T: WeightElem>(t: &PanelTask<'_, T>) {
    let mut acc = [0f32; PANEL];
    for r in 0..t.m {
        acc.fill(0.0);
        let xr = &t.x[r * t.k..(r + 1) * t.k];
        for (&xv, wk) in xr.iter().zip(t.panel.chunks_exact(PANEL)) {
            for (a, &w) in acc.iter_mut().zip(wk) {
                *a += xv * w.widen();
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { t.store_row(r, &acc) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panels start on a cache line, so that no panel row straddles two (an int8 row is
    /// half a line: its panels start on half lines), for each weight type, and they hold the
    /// weights in their packed places.
    #[test]
    fn panels_start_on_a_cache_line() {
        fn check<T: WeightElem + PartialEq + std::fmt::Debug>(make: impl Fn(usize) -> T) {
            // Several sizes, so that the allocator hands out differently placed buffers.
            for (n, k) in [(3, 5), (33, 7), (64, 129), (70, 768)] {
                let w: Vec<T> = (0..n * k).map(&make).collect();
                let packed = PackedWeights::pack(&w, n, k);
                for p in 0..n.div_ceil(PANEL) {
                    let panel = packed.panel(p);
                    let row_bytes = PANEL * size_of::<T>();
                    let align = PANEL_ALIGN.min(row_bytes);
                    assert_eq!(panel.as_ptr() as usize % align, 0, "{n}x{k} panel {p}");
                    for c in 0..PANEL.min(n - p * PANEL) {
                        for kk in [0, k - 1] {
                            assert_eq!(panel[kk * PANEL + c], w[(p * PANEL + c) * k + kk]);
                        }
                    }
                }
                assert_eq!(
                    packed.bytes(),
                    n.div_ceil(PANEL) * k * PANEL * size_of::<T>()
                );
            }
        }
        check(|i| i as f32);
        check(|i| f16::from_f32((i % 1000) as f32));
        check(|i| (i % 251) as i8);
    }

    /// `exp_poly` is within 2 ulp of the exact exponential wherever it is not clamped.
    #[test]
    fn exp_poly_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in 0..=1_750_000 {
            let x = -87.0 + i as f32 * 1e-4;
            let want = f64::from(x).exp();
            let got = f64::from(exp_poly(x));
            let ulp = f64::from(f32::EPSILON) * want;
            worst = worst.max((got - want).abs() / ulp);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    /// QuickGELU to float rounding of the exact function; far in the negative tail, where
    /// the clamp keeps `eˣ` finite, it gives a value below 1e-35 instead of (about) zero.
    #[test]
    fn quick_gelu_matches_the_exact_function() {
        for i in -200_000..=200_000 {
            let v = i as f32 * 5e-4;
            // The exponent as the f32 formula rounds it (far out, that rounding alone moves
            // eˣ by more than the tolerance; candle's ops round it the same way).
            let t = f64::from(-(v * 1.702));
            let want = f64::from(v) / (1.0 + t.exp());
            let got = f64::from(quick_gelu(v));
            assert!(
                (got - want).abs() <= 4.0 * f64::from(f32::EPSILON) * want.abs() + 1e-35,
                "quick_gelu({v}) = {got}, exact {want}"
            );
        }
        assert_eq!(quick_gelu(1e4), 1e4);
        assert!(quick_gelu(-1e4).abs() < 1e-30);
        assert!(quick_gelu(f32::NAN).is_nan());
    }
}
