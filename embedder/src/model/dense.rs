//! Fully connected layers, with a CPU kernel for the few-rows case.
//!
//! A text query is a handful of tokens, so every linear layer of the text tower multiplies a
//! 5×512 activation by a 512×2048 weight: a matrix-vector product in all but name. A general
//! GEMM packs the weight into panels before multiplying, which for five rows costs as much
//! as the multiply itself and streams the weights through memory twice. [`rows_times_weights`]
//! reads each weight row once, straight from the `[out, in]` layout the checkpoint stores,
//! and keeps the few activation rows in L1, so a query costs about one pass over the weights.
//!
//! At that point the weights' size is the cost: ViT-B/32's text tower is 151 MB of f32, and
//! two cores stream roughly 12 GB/s. [`WeightPrecision::HalfRows`] keeps an f16 copy that the
//! kernel widens to f32 in registers (F16C), halving the bytes per query; activations, sums
//! and everything else stay f32.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Module, Result, Shape, Tensor,
};
use candle_nn::VarBuilder;
use half::f16;

use super::rows_kernel::{rows_times_weights, rows_times_weights_scaled};

/// Activations with at most this many rows take the rows kernel on the CPU; above it the
/// weight is reused enough that a packed GEMM wins.
pub(crate) const ROWS_KERNEL_MAX_ROWS: usize = 32;

/// Off only to measure the GEMM baseline and to compare both paths in tests.
static ROWS_KERNEL_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the few-rows CPU kernel on or off for the whole process (benchmarks and tests,
/// hence only with the `testing` feature).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn set_rows_kernel_enabled(enabled: bool) {
    ROWS_KERNEL_ENABLED.store(enabled, Ordering::Relaxed);
}

/// How the few-rows CPU kernel reads a layer's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum WeightPrecision {
    /// The checkpoint's f32 weights, as the reference computes.
    #[default]
    F32,
    /// Weights rounded to f16 at load (≤ 2^-11 relative change per weight) and kept twice:
    /// f16 for few-row products (half the memory traffic), and the same rounded values as
    /// f32 for GEMM-sized batches, so a result does not depend on the batch it ran in.
    HalfRows,
    /// Weights quantized to int8 at load, one scale per output channel (`max |w| / 127` of
    /// its row), kept twice like `HalfRows`: int8 codes for few-row products (a quarter of the
    /// f32 memory traffic; sums in f32, the scale applied once per output), and the dequantized
    /// values as f32 for GEMM-sized batches.
    Int8Rows,
}

/// Which activations a layer multiplies with the few-rows CPU kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RowsPolicy {
    /// Up to [`ROWS_KERNEL_MAX_ROWS`] rows; larger activations take candle's packed GEMM.
    #[default]
    Few,
    /// Every row count, except the rows [`Dense::forward_split`] hands to the GEMM (the text
    /// tower's sequences over 32 tokens, as when such a query runs alone). The kernel computes
    /// each output row with the same sequence of operations whatever the other rows are (tiles
    /// only change which rows share a weight load), so a row's result does not depend on how
    /// many rows were in the call: what lets the text tower pack many queries into one pass
    /// and give each the bits it gets alone.
    Always,
    /// Never: candle's GEMM at every row count. For the vision tower, whose every image is
    /// dozens of rows: above a handful of rows the GEMM computes a row with the same
    /// operations whatever the row count (its depth blocking depends on the inner size and
    /// the caches, not on the rows), so an image's result does not depend on its batch, where
    /// a switch at 32 rows would make it. (One row goes through a GEMV, other bits.)
    Never,
}

/// `y = x Wᵀ + b` with `W` stored `[out, in]` as in PyTorch checkpoints.
pub(crate) struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
    /// CPU and f32: the only case the rows kernel covers.
    cpu_f32: bool,
    /// Which row counts take the rows kernel.
    rows: RowsPolicy,
    /// f16 copy of `weight` (row-major `[out, in]`) for [`WeightPrecision::HalfRows`].
    half: Option<Vec<f16>>,
    /// int8 codes of `weight` (row-major) and one scale per output for
    /// [`WeightPrecision::Int8Rows`].
    int8: Option<(Vec<i8>, Vec<f32>)>,
    /// `bias` as a host vector, added by the rows kernel as it writes its output (one op
    /// less per layer; the forward pass of a query is dozens of tiny ops).
    bias_host: Option<Vec<f32>>,
}

impl Dense {
    fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        precision: WeightPrecision,
        rows: RowsPolicy,
    ) -> Result<Self> {
        let cpu_f32 = matches!(weight.device(), Device::Cpu) && weight.dtype() == DType::F32;
        let (weight, half) = if cpu_f32 && precision == WeightPrecision::HalfRows {
            let values = weight.flatten_all()?.to_vec1::<f32>()?;
            let half: Vec<f16> = values.into_iter().map(f16::from_f32).collect();
            let rounded: Vec<f32> = half.iter().map(|v| v.to_f32()).collect();
            let weight = Tensor::from_vec(rounded, weight.shape(), weight.device())?;
            (weight, Some(half))
        } else {
            (weight, None)
        };
        let (weight, int8) = if cpu_f32 && precision == WeightPrecision::Int8Rows {
            let (n, k) = weight.dims2()?;
            let values = weight.flatten_all()?.to_vec1::<f32>()?;
            let (codes, scales) = quantize_rows(&values, n, k);
            let dequantized: Vec<f32> = codes
                .chunks_exact(k.max(1))
                .zip(&scales)
                .flat_map(|(row, &s)| row.iter().map(move |&q| f32::from(q) * s))
                .collect();
            let weight = Tensor::from_vec(dequantized, (n, k), weight.device())?;
            (weight, Some((codes, scales)))
        } else {
            (weight, None)
        };
        let bias_host = match (&bias, cpu_f32) {
            (Some(b), true) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            _ => None,
        };
        Ok(Self {
            weight,
            bias,
            cpu_f32,
            rows,
            half,
            int8,
            bias_host,
        })
    }

    /// `x2d · Wᵀ + b` for a 2-D activation.
    fn affine(&self, x2d: &Tensor) -> Result<Tensor> {
        let rows = x2d.dim(0)?;
        let use_rows = match self.rows {
            RowsPolicy::Few => rows <= ROWS_KERNEL_MAX_ROWS,
            RowsPolicy::Always => true,
            RowsPolicy::Never => false,
        };
        self.affine_with(x2d, use_rows)
    }

    /// `x2d · Wᵀ + b`, through the rows kernel when `use_rows` (and the layer is CPU f32).
    fn affine_with(&self, x2d: &Tensor, use_rows: bool) -> Result<Tensor> {
        if self.cpu_f32 && use_rows && ROWS_KERNEL_ENABLED.load(Ordering::Relaxed) {
            let bias = self.bias_host.as_deref();
            if let Some((codes, scales)) = &self.int8 {
                let (n, k) = self.weight.dims2()?;
                return x2d.apply_op1_no_bwd(&Int8RowsMatmul {
                    w: codes,
                    scales,
                    n,
                    k,
                    bias,
                });
            }
            return match &self.half {
                Some(half) => {
                    let (n, k) = self.weight.dims2()?;
                    x2d.apply_op1_no_bwd(&HalfRowsMatmul {
                        w: half,
                        n,
                        k,
                        bias,
                    })
                }
                None => x2d.apply_op2_no_bwd(&self.weight, &RowsMatmul { bias }),
            };
        }
        let y = x2d.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Dense {
    /// The layer over a packed `(rows, in)` activation whose rows from `gemm_from` on belong to
    /// long sequences: those go through the GEMM, the rows before through the layer's policy.
    /// A GEMM of a few dozen rows or more computes each row the same way whatever the row count,
    /// so a long sequence gets the bits it gets alone, where the rows kernel would be slower
    /// than the GEMM.
    pub(crate) fn forward_split(&self, x2d: &Tensor, gemm_from: usize) -> Result<Tensor> {
        let rows = x2d.dim(0)?;
        if gemm_from >= rows || self.rows != RowsPolicy::Always {
            return self.forward(x2d);
        }
        let x2d = x2d.contiguous()?;
        let long = self.affine_with(&x2d.narrow(0, gemm_from, rows - gemm_from)?, false)?;
        if gemm_from == 0 {
            return Ok(long);
        }
        let short = self.affine_with(&x2d.narrow(0, 0, gemm_from)?, true)?;
        Tensor::cat(&[&short, &long], 0)
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&k, lead)) = dims.split_last() else {
            candle_core::bail!("dense layer on a scalar");
        };
        let rows: usize = lead.iter().product();
        let x2d = x.contiguous()?.reshape((rows, k))?;
        let y = self.affine(&x2d)?;
        let mut out_dims = lead.to_vec();
        out_dims.push(y.dim(1)?);
        y.reshape(out_dims)
    }
}

/// Linear layer from `prefix.weight` and, when `has_bias`, `prefix.bias` (CLIP's projections
/// have none).
pub(crate) fn dense(
    input: usize,
    output: usize,
    has_bias: bool,
    precision: WeightPrecision,
    rows: RowsPolicy,
    vb: VarBuilder,
) -> Result<Dense> {
    let weight = vb.get((output, input), "weight")?;
    let bias = if has_bias {
        Some(vb.get(output, "bias")?)
    } else {
        None
    };
    Dense::from_parts(weight, bias, precision, rows)
}

/// `x (m×k) · wᵀ (+ bias)` for `w` stored `n×k`, both contiguous f32 on the CPU.
struct RowsMatmul<'a> {
    bias: Option<&'a [f32]>,
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("rows kernel: {what} is not f32");
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("rows kernel: {what} is not contiguous"),
    }
}

impl CustomOp2 for RowsMatmul<'_> {
    fn name(&self) -> &'static str {
        "rows-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("rows kernel: inner sizes differ ({k} vs {k2})");
        }
        let x = contiguous_f32(s1, l1, "activation")?;
        let w = contiguous_f32(s2, l2, "weight")?;
        let mut out = vec![0f32; m * n];
        rows_times_weights(x, m, w, n, k, self.bias, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x (m×k) · wᵀ (+ bias)` for an f16 copy of `w` (`n×k`) owned by the layer.
struct HalfRowsMatmul<'a> {
    w: &'a [f16],
    n: usize,
    k: usize,
    bias: Option<&'a [f32]>,
}

impl CustomOp1 for HalfRowsMatmul<'_> {
    fn name(&self) -> &'static str {
        "rows-matmul-f16"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l.shape().dims2()?;
        if k != self.k || self.w.len() != self.n * self.k {
            candle_core::bail!(
                "rows kernel: activation width {k}, weights {}x{}",
                self.n,
                self.k
            );
        }
        let x = contiguous_f32(s, l, "activation")?;
        let mut out = vec![0f32; m * self.n];
        rows_times_weights(x, m, self.w, self.n, k, self.bias, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((m, self.n))))
    }
}

/// Per-output-channel symmetric int8: `scale = max |w| / 127` of each row, codes rounded to the
/// nearest integer (a zero row gets scale 0 and zero codes).
fn quantize_rows(values: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n);
    for row in values.chunks_exact(k.max(1)).take(n) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = max / 127.0;
        scales.push(scale);
        codes.extend(row.iter().map(|&v| {
            if scale > 0.0 {
                (v / scale).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            }
        }));
    }
    (codes, scales)
}

/// `x (m×k) · wᵀ (+ bias)` for int8 codes of `w` (`n×k`) and per-output scales.
struct Int8RowsMatmul<'a> {
    w: &'a [i8],
    scales: &'a [f32],
    n: usize,
    k: usize,
    bias: Option<&'a [f32]>,
}

impl CustomOp1 for Int8RowsMatmul<'_> {
    fn name(&self) -> &'static str {
        "rows-matmul-i8"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l.shape().dims2()?;
        if k != self.k || self.w.len() != self.n * self.k || self.scales.len() != self.n {
            candle_core::bail!(
                "rows kernel: activation width {k}, int8 weights {}x{}",
                self.n,
                self.k
            );
        }
        let x = contiguous_f32(s, l, "activation")?;
        let mut out = vec![0f32; m * self.n];
        rows_times_weights_scaled(
            x,
            m,
            self.w,
            self.n,
            k,
            Some(self.scales),
            self.bias,
            &mut out,
        );
        Ok((CpuStorage::F32(out), Shape::from((m, self.n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rows_kernel::{WeightElem, scalar_weight_block};

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                out[r * n + j] = (0..k)
                    .map(|t| f64::from(x[r * k + t]) * f64::from(w[j * k + t]))
                    .sum();
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rows_kernel_matches_f64_reference_for_odd_shapes() {
        // Shapes that exercise every tail: rows not a multiple of 3, columns not a multiple
        // of 4 or of a task, inner size not a multiple of 8.
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 13),
            (2, 33, 8),
            (5, 512, 512),
            (4, 70, 31),
            (7, 129, 64),
            (14, 37, 40),
            (6, 9, 16),
            (2, 13, 9),
        ] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            check_both_kernels(&x, m, &w, n, k, "f32");
            // f16 weights: the kernels must compute the product with the rounded weights
            // exactly (the rounding itself is the only error they add).
            let w16: Vec<f16> = w.iter().copied().map(f16::from_f32).collect();
            check_both_kernels(&x, m, &w16, n, k, "f16");
            let w8: Vec<i8> = w.iter().map(|&v| (v * 3.0).round() as i8).collect();
            check_both_kernels(&x, m, &w8, n, k, "i8");
        }
    }

    /// The dispatched kernel and the portable one both equal an f64 product of the same
    /// (widened) weights, for every output.
    fn check_both_kernels<T: WeightElem>(
        x: &[f32],
        m: usize,
        w: &[T],
        n: usize,
        k: usize,
        what: &str,
    ) {
        let widened: Vec<f32> = w.iter().map(|v| v.widen()).collect();
        let want = reference(x, m, &widened, n, k);
        let close = |g: f32, e: f64| (f64::from(g) - e).abs() <= 1e-4 * (1.0 + e.abs());
        let mut got = vec![f32::NAN; m * n];
        rows_times_weights(x, m, w, n, k, None, &mut got);
        let mut scalar = vec![f32::NAN; n * m];
        scalar_weight_block(x, m, w, n, k, &mut scalar);
        for r in 0..m {
            for j in 0..n {
                let e = want[r * n + j];
                assert!(
                    close(got[r * n + j], e),
                    "{what} {m}x{n}x{k} [{r},{j}]: dispatched"
                );
                assert!(
                    close(scalar[j * m + r], e),
                    "{what} {m}x{n}x{k} [{r},{j}]: portable"
                );
            }
        }
    }

    #[test]
    fn dense_layer_agrees_with_candle_matmul() -> Result<()> {
        let device = Device::Cpu;
        let (m, n, k) = (6, 40, 24);
        let w = Tensor::from_vec(values(n * k, 3), (n, k), &device)?;
        let b = Tensor::from_vec(values(n, 4), n, &device)?;
        let x = Tensor::from_vec(values(2 * 3 * k, 5), (2, 3, k), &device)?;
        let want = x
            .reshape((m, k))?
            .matmul(&w.t()?)?
            .broadcast_add(&b)?
            .reshape((2, 3, n))?;
        let max_diff = |got: Tensor| -> Result<f32> {
            assert_eq!(got.dims(), &[2, 3, n]);
            (got - &want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()
        };
        let exact = Dense::from_parts(
            w.clone(),
            Some(b.clone()),
            WeightPrecision::F32,
            RowsPolicy::Few,
        )?;
        let diff = max_diff(exact.forward(&x)?)?;
        assert!(diff < 1e-5, "f32 max diff {diff}");
        let half = Dense::from_parts(
            w.clone(),
            Some(b.clone()),
            WeightPrecision::HalfRows,
            RowsPolicy::Few,
        )?;
        assert!(half.half.is_some());
        let diff = max_diff(half.forward(&x)?)?;
        // |x| ≤ 1, 24 terms, each weight off by at most 2^-11 relative.
        assert!(diff > 0.0 && diff < 24.0 / 2048.0, "f16 max diff {diff}");
        Ok(())
    }

    /// A row's result has the same bits whatever else is in the call, for both kernels and
    /// both policies the towers use (the server's batching rests on it).
    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows() -> Result<()> {
        let device = Device::Cpu;
        let bits = |t: &Tensor| -> Result<Vec<u32>> {
            Ok(t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|v| v.to_bits())
                .collect())
        };
        for &(n, k) in &[
            (40, 24),
            (96, 48),
            (768, 3072),
            (512, 2048),
            (2048, 512),
            (37, 13),
        ] {
            let w = Tensor::from_vec(values(n * k, 7), (n, k), &device)?;
            let b = Tensor::from_vec(values(n, 8), n, &device)?;
            let x = Tensor::from_vec(values(70 * k, 9), (70, k), &device)?;
            for (precision, policy) in [
                (WeightPrecision::F32, RowsPolicy::Always),
                (WeightPrecision::HalfRows, RowsPolicy::Always),
                (WeightPrecision::Int8Rows, RowsPolicy::Always),
                (WeightPrecision::F32, RowsPolicy::Never),
            ] {
                let layer = Dense::from_parts(w.clone(), Some(b.clone()), precision, policy)?;
                let all = layer.forward(&x)?;
                // candle's GEMM of one row (a GEMV) or of a tiny product takes other kernels;
                // the vision tower never gives it fewer rows than one image's tokens.
                let parts: &[(usize, usize)] = if policy == RowsPolicy::Never {
                    &[(0, 25), (1, 33), (20, 50)]
                } else {
                    &[(0, 1), (5, 3), (1, 33), (20, 50)]
                };
                for &(r0, rows) in parts {
                    let part = layer.forward(&x.narrow(0, r0, rows)?)?;
                    assert_eq!(
                        bits(&part)?,
                        bits(&all.narrow(0, r0, rows)?)?,
                        "{precision:?} {policy:?} {n}x{k}: rows {r0}..{}",
                        r0 + rows
                    );
                }
            }
        }
        Ok(())
    }
}
