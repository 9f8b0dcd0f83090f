//! The integer CPU kernel behind [`super::dense`]'s `Int8Dynamic` layers: weights quantized
//! to int8 once, at load (one scale per output channel), activations quantized to int8 at
//! every call (dynamic quantization), and the products summed in `i32`. PyTorch's
//! `quantize_dynamic` and ONNX Runtime's dynamic `MatMulInteger` quantize the activations too,
//! but with one scale (and zero point) for the whole call, so a row's codes there depend on
//! the rows batched with it; here each row has its own scale, which is both finer and what
//! keeps a query's bits the same in any batch.
//!
//! Why a second kernel beside [`super::rows_kernel`], whose int8 weights are widened to f32:
//! a batch of queries is bound by arithmetic, and one AVX-512 VNNI instruction (`vpdpbusd`)
//! does 64 byte products where an f32 FMA does 16. Integer sums are also exact, so
//! - every build (VNNI, AVX2, portable) gives every output the same bits, whatever the order
//!   of its sums or the tile a row lands in;
//! - a row's result depends on that row alone (its own scale, its own codes), so batched
//!   queries keep the bits they get alone, as the f32 kernel promises.
//!
//! Weights are packed in panels of [`PANEL`] outputs, each `[k/4][PANEL][4]`: four
//! consecutive inputs of one output form a dword, the unit `vpdpbusd` multiplies against a
//! broadcast dword of four activations.

use std::sync::OnceLock;

use glimpse_index::simd;

use super::rows_kernel::{Epilogue, PANEL, PANEL_ALIGN, SyncPtr};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Inputs per dword of a panel.
const GROUP: usize = 4;

/// The largest code: symmetric quantization to `[-127, 127]`, so `|a·w| ≤ 127²` and the AVX2
/// build's pairwise 16-bit sums (at most `2·127²`) never saturate.
const QMAX: f32 = 127.0;

/// A `[n, k]` weight matrix (PyTorch's `[out, in]`) quantized per output channel and packed
/// for the integer kernel; the inner size is padded with zero codes to a whole dword.
pub(crate) struct Int8Panels {
    /// The panels from `data[start]`, a cache-line boundary.
    data: Vec<i8>,
    start: usize,
    n: usize,
    k: usize,
    /// Dwords per panel row (`k.div_ceil(4)`).
    groups: usize,
    /// `max |w| / 127` of each output, padded with zeros to whole panels.
    scales: Vec<f32>,
    /// `-128 · Σₖ codes` of each output, padded to whole panels: the VNNI build's starting
    /// sums, which cancel the `+128` that makes its activations unsigned.
    offsets: Vec<i32>,
}

impl Int8Panels {
    /// Quantizes and packs row-major `w` (`n` rows of `k`): `scale = max |w| / 127` per row,
    /// codes rounded to the nearest integer (a zero row gets scale 0 and zero codes).
    pub(crate) fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert!(w.len() >= n * k, "weights shorter than {n}x{k}");
        let panels = n.div_ceil(PANEL);
        let groups = k.div_ceil(GROUP);
        let len = panels * groups * PANEL * GROUP;
        let mut data = vec![0i8; len + PANEL_ALIGN];
        let start = (PANEL_ALIGN - data.as_ptr() as usize % PANEL_ALIGN) % PANEL_ALIGN;
        let mut scales = vec![0f32; panels * PANEL];
        let mut offsets = vec![0i32; panels * PANEL];
        let packed = &mut data[start..start + len];
        for (j, row) in w[..n * k].chunks_exact(k.max(1)).enumerate() {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / QMAX;
            scales[j] = scale;
            let (p, c) = (j / PANEL, j % PANEL);
            let panel = &mut packed[p * groups * PANEL * GROUP..(p + 1) * groups * PANEL * GROUP];
            let mut sum = 0i32;
            for (kk, &v) in row.iter().enumerate() {
                let code = if scale > 0.0 {
                    (v / scale).round().clamp(-QMAX, QMAX) as i8
                } else {
                    0
                };
                sum += i32::from(code);
                panel[(kk / GROUP) * PANEL * GROUP + c * GROUP + kk % GROUP] = code;
            }
            offsets[j] = -128 * sum;
        }
        Self {
            data,
            start,
            n,
            k,
            groups,
            scales,
            offsets,
        }
    }

    /// Output size.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Input size.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Panel `p`: `groups · PANEL · 4` codes.
    fn panel(&self, p: usize) -> &[i8] {
        let size = self.groups * PANEL * GROUP;
        let at = self.start + p * size;
        &self.data[at..at + size]
    }

    /// The code of output `j`, input `kk` (tests).
    #[cfg(test)]
    fn code(&self, j: usize, kk: usize) -> i8 {
        self.panel(j / PANEL)[(kk / GROUP) * PANEL * GROUP + (j % PANEL) * GROUP + kk % GROUP]
    }
}

/// Activation rows quantized for one call: each row's codes in offset binary (`code + 128`,
/// the unsigned operand `vpdpbusd` takes), padded with the zero code (128) to whole dwords.
pub(crate) struct QuantizedRows {
    codes: Vec<u8>,
    /// Bytes per row: `4 · groups`.
    stride: usize,
    /// `max |x| / 127` of each row (NaN for a row holding a NaN or an infinity, so that its
    /// outputs are NaN as the f32 kernel's would be, not silently finite).
    scales: Vec<f32>,
}

impl QuantizedRows {
    /// Quantizes `m` rows of `k`, the rows split over candle's worker pool (each row's codes
    /// and scale depend on that row alone), in the widest vectors `kernel`'s build allows:
    /// the same lane-wise operations at any width, so the same codes.
    pub(crate) fn new(kernel: Int8Kernel, x: &[f32], m: usize, k: usize) -> Self {
        assert!(x.len() >= m * k, "activations shorter than {m}x{k}");
        let stride = k.div_ceil(GROUP) * GROUP;
        let mut codes = vec![128u8; m * stride];
        let mut scales = vec![0f32; m];
        if k > 0 && m > 0 {
            let (codes_at, scales_at) = (SyncPtr(codes.as_mut_ptr()), SyncPtr(scales.as_mut_ptr()));
            candle_core::utils::barrier_pool().execute_chunked(m, |range| {
                for r in range {
                    let row = &x[r * k..(r + 1) * k];
                    // SAFETY: each row index is handed out once, so its `stride` codes (from
                    // byte r·stride) and its scale are written by this worker alone; both
                    // buffers outlive the pool call.
                    unsafe {
                        let out = std::slice::from_raw_parts_mut(codes_at.at(r * stride), k);
                        *scales_at.at(r) = kernel.quantize_row(row, out);
                    }
                }
            });
        }
        Self {
            codes,
            stride,
            scales,
        }
    }
}

/// Lanes of the loops below: arrays of this many independent values, which the compiler
/// turns into vector registers (a float reduction in one variable would stay scalar, its
/// order being part of its result).
const LANES: usize = 16;

/// `1.5 · 2²³`: a float in `[-2²², 2²²]` plus this lands in the binade where the spacing is
/// exactly 1, so the addition rounds it to an integer (half to even) and the low bits of the
/// sum hold that integer. Plain arithmetic, unlike `f32::round`, which is a libm call per
/// value on the baseline target.
const ROUNDER: f32 = 12_582_912.0;

/// Writes `row`'s codes (offset binary) into `out` and returns its scale, `max |x| / 127`:
/// NaN when the row holds a NaN or an infinity (its codes are then left at zero).
#[inline(always)]
fn quantize_row(row: &[f32], out: &mut [u8]) -> f32 {
    let mut max = [0f32; LANES];
    // `x · 0` is NaN exactly for a NaN or an infinity, and the NaN survives the sums.
    let mut poison = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            // A compare and select (`vmaxps`), not `f32::max`, whose NaN rule costs a blend
            // per lane; NaNs are caught by `poison`. (Tried: one integer max over the bits
            // of |x|, which finds NaNs too; slower.)
            let a = chunk[i].abs();
            max[i] = if a > max[i] { a } else { max[i] };
            poison[i] += chunk[i] * 0.0;
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        let a = v.abs();
        max[i] = if a > max[i] { a } else { max[i] };
        poison[i] += v * 0.0;
    }
    if poison.iter().any(|p| p.is_nan()) {
        return f32::NAN;
    }
    let max = max.iter().fold(0f32, |a, &b| a.max(b));
    let inv = QMAX / max;
    if !inv.is_finite() {
        // All zeros, or so close (below ~4e-37) that no code could tell them apart: the row
        // stays at code 0 with scale 0, its products 0, as they are to f32 precision.
        return 0.0;
    }
    let offset = ROUNDER.to_bits() as i32 - 128;
    for (c, &v) in out.iter_mut().zip(row) {
        let q = (v * inv).clamp(-QMAX, QMAX) + ROUNDER;
        *c = (q.to_bits() as i32 - offset) as u8;
    }
    max / QMAX
}

/// `out[r·n + j] = act((Σₖ qx[r,k] · qw[j,k]) · (sx[r] · sw[j]) (+ bias[j]))` for the `m`
/// rows of `x`, with `kernel` ([`Int8Kernel::get`] outside tests).
pub(crate) fn rows_times_int8(
    kernel: Int8Kernel,
    x: &QuantizedRows,
    m: usize,
    w: &Int8Panels,
    bias: Option<&[f32]>,
    act: Epilogue,
    out: &mut [f32],
) {
    let n = w.n;
    assert!(x.scales.len() >= m && x.stride == w.groups * GROUP);
    assert!(out.len() >= m * n && bias.is_none_or(|b| b.len() >= n));
    if m == 0 || n == 0 {
        return;
    }
    let base = SyncPtr(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(PANEL), |range| {
        for p in range {
            let j0 = p * PANEL;
            let task = Int8Task {
                x: &x.codes,
                stride: x.stride,
                x_scales: &x.scales,
                m,
                groups: w.groups,
                panel: w.panel(p),
                offsets: &w.offsets[j0..j0 + PANEL],
                w_scales: &w.scales[j0..j0 + PANEL],
                cols: PANEL.min(n - j0),
                bias: bias.map(|b| &b[j0..]),
                act,
                out: base.at(j0),
                ldo: n,
            };
            // SAFETY: panels write disjoint column ranges of `out` (m·n floats), each panel
            // index is handed out once, and `out` outlives the pool call.
            unsafe { kernel.panel_task(&task) };
        }
    });
}

/// One panel's work: all `m` rows against `cols` (≤ [`PANEL`]) outputs starting at `out`.
pub(super) struct Int8Task<'a> {
    /// Activation codes (offset binary), `m` rows `stride` apart.
    pub x: &'a [u8],
    /// Bytes per activation row.
    pub stride: usize,
    /// Per-row activation scales.
    pub x_scales: &'a [f32],
    /// Rows.
    pub m: usize,
    /// Dwords per row.
    pub groups: usize,
    /// The panel, `[groups][PANEL][4]`.
    pub panel: &'a [i8],
    /// This panel's [`Int8Panels`] offsets ([`PANEL`] of them).
    pub offsets: &'a [i32],
    /// This panel's weight scales ([`PANEL`] of them, zero past `cols`).
    pub w_scales: &'a [f32],
    /// Valid columns of the panel.
    pub cols: usize,
    /// Bias from this panel's first column on.
    pub bias: Option<&'a [f32]>,
    /// Applied last.
    pub act: Epilogue,
    /// Row 0, column 0 of this panel's outputs.
    pub out: *mut f32,
    /// Distance between output rows.
    pub ldo: usize,
}

impl Int8Task<'_> {
    /// Row `r`'s codes.
    fn row(&self, r: usize) -> &[u8] {
        &self.x[r * self.stride..(r + 1) * self.stride]
    }

    /// Writes row `r`'s exact sums `acc[c]` (columns `c < cols`) as floats, scaled, biased
    /// and activated: `(sum as f32) · (sx · sw) + b`. The SIMD builds do the same operations
    /// in the same order on whole vectors.
    ///
    /// # Safety
    /// `out + r·ldo + cols` lies within the output and no other thread writes there.
    #[inline(always)]
    unsafe fn store_row(&self, r: usize, acc: &[i32; PANEL]) {
        // SAFETY: forwarded from the caller.
        unsafe { self.store_cols(r, 0, acc) };
    }

    /// [`Int8Task::store_row`] for the columns from `c0` on: `acc[c]` is column `c0 + c`
    /// (those at or past `cols` are padding and are dropped).
    ///
    /// # Safety
    /// As [`Int8Task::store_row`].
    #[inline(always)]
    unsafe fn store_cols(&self, r: usize, c0: usize, acc: &[i32]) {
        let sx = self.x_scales[r];
        for (c, &s) in acc.iter().enumerate().take(self.cols.saturating_sub(c0)) {
            let j = c0 + c;
            let mut v = s as f32 * (sx * self.w_scales[j]);
            if let Some(b) = self.bias {
                v += b[j];
            }
            // SAFETY: forwarded from the caller; j < cols.
            unsafe { *self.out.add(r * self.ldo + j) = self.act.apply(v) };
        }
    }

    /// Applies the epilogue to row `r`'s outputs, written without it.
    ///
    /// # Safety
    /// As [`Int8Task::store_row`].
    #[inline(always)]
    unsafe fn finish_row(&self, r: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.act.finish(self.out.add(r * self.ldo), self.cols) };
    }
}

/// Which build of the integer kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// Plain Rust.
    Portable,
    /// AVX2: `vpmaddubsw` on |activation| and sign-adjusted weights, then `vpmaddwd`.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 VNNI: `vpdpbusd`, 12 rows × 32 columns per tile.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

/// An integer kernel build this CPU runs; constructed only by [`Int8Kernel::get`] and
/// [`Int8Kernel::available`], which makes [`rows_times_int8`] safe with any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int8Kernel(Build);

impl Int8Kernel {
    /// Runs one panel's task.
    ///
    /// # Safety
    /// `t.out` covers `m` rows `t.ldo` apart of at least `t.cols` floats that no other thread
    /// writes; `t.x` holds `m` rows of `4·groups` bytes and `t.panel` `groups·PANEL·4`.
    unsafe fn panel_task(self, t: &Int8Task<'_>) {
        debug_assert!(t.x.len() >= t.m * t.stride && t.stride == t.groups * GROUP);
        debug_assert!(t.panel.len() >= t.groups * PANEL * GROUP);
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is made only for CPUs with AVX2 (`get`, `available`).
            Build::Avx2 => unsafe { avx2::panel_task(t) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` is made only for CPUs with AVX-512F, BW and VNNI.
            Build::Avx512Vnni => unsafe { avx512::panel_task(t) },
            // SAFETY: forwarded from the caller.
            Build::Portable => unsafe { portable_panel_task(t) },
        }
    }

    /// [`quantize_row`] compiled for this build's vector width.
    fn quantize_row(self, row: &[f32], out: &mut [u8]) -> f32 {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is made only for CPUs with AVX2 and FMA.
            Build::Avx2 => unsafe { avx2::quantize_row(row, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx512Vnni` is made only for CPUs with AVX-512F and BW.
            Build::Avx512Vnni => unsafe { avx512::quantize_row(row, out) },
            Build::Portable => quantize_row(row, out),
        }
    }

    /// Every build this CPU runs, whatever `GLIMPSE_SIMD` says (the tests hold each to the
    /// same bits).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Int8Kernel> {
        #[allow(unused_mut)]
        let mut kernels = vec![Int8Kernel(Build::Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            // The AVX2 build enables FMA too (the epilogue's `mul_add`s).
            if has!("avx2") && has!("fma") {
                kernels.push(Int8Kernel(Build::Avx2));
            }
            if vnni() {
                kernels.push(Int8Kernel(Build::Avx512Vnni));
            }
        }
        kernels
    }

    /// The build for the process's SIMD level (decided on first use): VNNI needs the AVX-512
    /// level and the extension, AVX2 serves every other AVX2 machine.
    pub(crate) fn get() -> Int8Kernel {
        static KERNEL: OnceLock<Int8Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| match simd::level() {
            #[cfg(target_arch = "x86_64")]
            simd::SimdLevel::Avx512 if vnni() => Int8Kernel(Build::Avx512Vnni),
            #[cfg(target_arch = "x86_64")]
            simd::SimdLevel::Avx2 | simd::SimdLevel::Avx512 => Int8Kernel(Build::Avx2),
            _ => Int8Kernel(Build::Portable),
        })
    }
}

/// Whether the CPU has what the VNNI build uses.
#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx512bw") && has!("avx512vnni") && has!("avx2") && has!("fma")
}

/// Portable version: one row at a time, exact `i32` sums from the VNNI build's offsets.
///
/// # Safety
/// As [`Int8Kernel::panel_task`].
unsafe fn portable_panel_task(t: &Int8Task<'_>) {
    for r in 0..t.m {
        let mut acc = [0i32; PANEL];
        acc.copy_from_slice(&t.offsets[..PANEL]);
        for (xg, wg) in t
            .row(r)
            .chunks_exact(GROUP)
            .zip(t.panel.chunks_exact(PANEL * GROUP))
        {
            for (a, wc) in acc.iter_mut().zip(wg.chunks_exact(GROUP)) {
                for (&xv, &wv) in xg.iter().zip(wc) {
                    *a += i32::from(xv) * i32::from(wv);
                }
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { t.store_row(r, &acc) };
    }
}

#[cfg(test)]
mod tests;
