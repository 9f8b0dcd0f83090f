//! Fully connected layers, with a CPU kernel over packed weights.
//!
//! On the CPU every linear layer of both towers runs [`rows_times_packed`]: the weights are
//! repacked once at load into panels of 32 output columns, and each output is one sum over the
//! inputs in order. That serves every row count with one kernel:
//! - a text query is a handful of tokens, so every layer of the text tower multiplies a 5×512
//!   activation by a 512×2048 weight: a matrix-vector product in all but name, where the
//!   weights' size is the cost. All its rows share one tile, so each weight is read once.
//!   [`WeightPrecision::HalfRows`] and [`WeightPrecision::Int8Rows`] keep the panels in f16 or
//!   int8 (widened to f32 in registers) to halve or quarter those bytes;
//! - a batch of queries, or of images (50 rows each for ViT-B/32), is arithmetic-bound: tiles
//!   of 12 rows × 32 columns (AVX-512) keep the FMA units busy;
//! - a row's result never depends on the other rows of the call, so the server can pack
//!   concurrent queries into one pass and give each the bits it gets alone.
//!
//! Elsewhere (CUDA, or half-precision dtypes) a layer is candle's matmul.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use half::f16;

use super::int8_kernel::{Int8Kernel, Int8Panels, QuantizedRows, rows_times_int8};
use super::rows_kernel::{Epilogue, PackedWeights, RowsKernel, rows_times_packed};
use crate::config::Activation;

/// How a CPU layer stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum WeightPrecision {
    /// The checkpoint's f32 weights, as the reference computes.
    #[default]
    F32,
    /// Weights rounded to f16 at load (≤ 2^-11 relative change per weight), widened to f32 in
    /// registers: half the memory traffic of a query, sums in f32.
    HalfRows,
    /// Weights quantized to int8 at load, one scale per output channel (`max |w| / 127` of its
    /// row): a quarter of the f32 memory traffic; sums in f32, the scale applied once per
    /// output.
    Int8Rows,
    /// Weights quantized as [`WeightPrecision::Int8Rows`], and each call's activations too,
    /// one scale per row (dynamic quantization): products in exact `i32` sums, four byte
    /// products an f32 FMA's time with AVX-512 VNNI. Batched passes are bound by arithmetic,
    /// so this is the precision that makes them cheaper; the activations' rounding is a
    /// second error beside the weights'.
    Int8Dynamic,
}

/// A CPU layer's packed weights.
enum Packed {
    F32(PackedWeights<f32>),
    F16(PackedWeights<f16>),
    /// Codes and one scale per output.
    Int8(PackedWeights<i8>, Vec<f32>),
    /// Codes for the integer kernel (activations quantized per call); boxed, as its scales
    /// and offsets would make every layer's enum twice the size.
    Int8Dynamic(Box<Int8Panels>),
}

impl Packed {
    fn n(&self) -> usize {
        match self {
            Packed::F32(w) => w.n(),
            Packed::F16(w) => w.n(),
            Packed::Int8(w, _) => w.n(),
            Packed::Int8Dynamic(w) => w.n(),
        }
    }

    fn k(&self) -> usize {
        match self {
            Packed::F32(w) => w.k(),
            Packed::F16(w) => w.k(),
            Packed::Int8(w, _) => w.k(),
            Packed::Int8Dynamic(w) => w.k(),
        }
    }
}

/// Where a layer's weights live.
enum Weights {
    /// CPU, f32 activations: packed panels and the bias as a host vector (added by the kernel
    /// as it writes its output: one op less per layer).
    Cpu {
        packed: Packed,
        bias: Option<Vec<f32>>,
    },
    /// Anywhere else: candle tensors, `weight` stored `[out, in]`.
    Tensors {
        weight: Tensor,
        bias: Option<Tensor>,
    },
}

/// `y = x Wᵀ + b` with `W` stored `[out, in]` as in PyTorch checkpoints.
pub(crate) struct Dense {
    weights: Weights,
}

impl Dense {
    /// The layer of `weight` (`[out, in]`) and `bias`; on the CPU with f32 weights the weights
    /// are packed for the kernel (in `precision`) and the tensors dropped.
    pub(crate) fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        precision: WeightPrecision,
    ) -> Result<Self> {
        let cpu_f32 = matches!(weight.device(), Device::Cpu) && weight.dtype() == DType::F32;
        if !cpu_f32 {
            return Ok(Self {
                weights: Weights::Tensors { weight, bias },
            });
        }
        let (n, k) = weight.dims2()?;
        let values = weight.flatten_all()?.to_vec1::<f32>()?;
        let packed = match precision {
            WeightPrecision::F32 => Packed::F32(PackedWeights::pack(&values, n, k)),
            WeightPrecision::HalfRows => {
                let half: Vec<f16> = values.into_iter().map(f16::from_f32).collect();
                Packed::F16(PackedWeights::pack(&half, n, k))
            }
            WeightPrecision::Int8Rows => {
                let (codes, scales) = quantize_rows(&values, n, k);
                Packed::Int8(PackedWeights::pack(&codes, n, k), scales)
            }
            WeightPrecision::Int8Dynamic => {
                Packed::Int8Dynamic(Box::new(Int8Panels::quantize(&values, n, k)))
            }
        };
        let bias = match bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Self {
            weights: Weights::Cpu { packed, bias },
        })
    }

    /// `act(x · Wᵀ + b)`: on the CPU QuickGELU is applied by the kernel as it writes each
    /// output (one pass instead of three ops over the activation, with the same bits).
    pub(crate) fn forward_activated(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if act == Activation::QuickGelu && matches!(self.weights, Weights::Cpu { .. }) {
            return self.forward_2d(x, Epilogue::QuickGelu);
        }
        activate(act, &self.forward(x)?)
    }

    /// The layer over the last dimension of `x`, with `act` fused (CPU weights only).
    fn forward_2d(&self, x: &Tensor, act: Epilogue) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let Some((&k, lead)) = dims.split_last() else {
            candle_core::bail!("dense layer on a scalar");
        };
        let rows: usize = lead.iter().product();
        let x2d = x.contiguous()?.reshape((rows, k))?;
        let y = self.affine(&x2d, act)?;
        let mut out_dims = lead.to_vec();
        out_dims.push(y.dim(1)?);
        y.reshape(out_dims)
    }

    /// `act(x2d · Wᵀ + b)` for a 2-D activation (`act` only with CPU weights).
    fn affine(&self, x2d: &Tensor, act: Epilogue) -> Result<Tensor> {
        match &self.weights {
            Weights::Cpu { packed, bias } => x2d.apply_op1_no_bwd(&PackedMatmul {
                packed,
                bias: bias.as_deref(),
                act,
            }),
            Weights::Tensors { weight, bias } => {
                if act != Epilogue::None {
                    candle_core::bail!("dense layer: a fused activation needs CPU weights");
                }
                let y = x2d.matmul(&weight.t()?)?;
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
        }
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_2d(x, Epilogue::None)
    }
}

/// The MLP's activation, as candle ops (what the CPU kernel fuses for QuickGELU).
pub(crate) fn activate(act: Activation, xs: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluTanh => xs.gelu(),
    }
}

/// Linear layer from `prefix.weight` and, when `has_bias`, `prefix.bias` (CLIP's projections
/// have none).
pub(crate) fn dense(
    input: usize,
    output: usize,
    has_bias: bool,
    precision: WeightPrecision,
    vb: VarBuilder,
) -> Result<Dense> {
    let weight = vb.get((output, input), "weight")?;
    let bias = if has_bias {
        Some(vb.get(output, "bias")?)
    } else {
        None
    };
    Dense::from_parts(weight, bias, precision)
}

/// `x (m×k) · wᵀ (+ bias)` over a layer's packed weights.
struct PackedMatmul<'a> {
    packed: &'a Packed,
    bias: Option<&'a [f32]>,
    act: Epilogue,
}

impl CustomOp1 for PackedMatmul<'_> {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, k) = l.shape().dims2()?;
        let n = self.packed.n();
        if k != self.packed.k() {
            candle_core::bail!(
                "dense layer: activation width {k}, weights {n}x{}",
                self.packed.k()
            );
        }
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("dense layer: the activation is not f32");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("dense layer: the activation is not contiguous");
        };
        let x = &data[start..end];
        let mut out = vec![0f32; m * n];
        let kernel = RowsKernel::get();
        match self.packed {
            Packed::F32(w) => {
                rows_times_packed(kernel, x, m, w, None, self.bias, self.act, &mut out)
            }
            Packed::F16(w) => {
                rows_times_packed(kernel, x, m, w, None, self.bias, self.act, &mut out)
            }
            Packed::Int8(w, scales) => {
                rows_times_packed(kernel, x, m, w, Some(scales), self.bias, self.act, &mut out)
            }
            Packed::Int8Dynamic(w) => {
                let kernel = Int8Kernel::get();
                let q = QuantizedRows::new(kernel, x, m, k);
                rows_times_int8(kernel, &q, m, w, self.bias, self.act, &mut out)
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rows_kernel::{Epilogue, RowsKernel, WeightElem, rows_times_packed};

    /// The bit patterns of a tensor's values.
    fn bits(t: &Tensor) -> Result<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|v| v.to_bits())
            .collect())
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `(Σ x·w) · scale + bias` in f64 over the widened weights.
    fn reference<T: WeightElem>(
        x: &[f32],
        m: usize,
        w: &[T],
        n: usize,
        k: usize,
        scales: Option<&[f32]>,
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|t| f64::from(x[r * k + t]) * f64::from(w[j * k + t].widen()))
                    .sum();
                let scaled = dot * scales.map_or(1.0, |s| f64::from(s[j]));
                out[r * n + j] = scaled + bias.map_or(0.0, |b| f64::from(b[j]));
            }
        }
        out
    }

    /// Every kernel this CPU runs equals an f64 product of the same (widened) weights, with
    /// and without scales and bias, for every output.
    fn check_every_kernel<T: WeightElem>(
        x: &[f32],
        m: usize,
        w: &[T],
        n: usize,
        k: usize,
        what: &str,
    ) {
        let packed = PackedWeights::pack(w, n, k);
        let scales = values(n, 21);
        let bias = values(n, 22);
        for (s, b) in [(None, None), (Some(&scales[..]), Some(&bias[..]))] {
            let want = reference(x, m, w, n, k, s, b);
            for kernel in RowsKernel::available() {
                let mut got = vec![f32::NAN; m * n];
                rows_times_packed(kernel, x, m, &packed, s, b, Epilogue::None, &mut got);
                for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(g) - e).abs() <= 1e-4 * (1.0 + e.abs()),
                        "{what} {m}x{n}x{k} output {i} ({kernel:?}, scaled {}): {g} vs {e}",
                        s.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_f64_reference_for_odd_shapes() {
        // Shapes that exercise every tail: rows not a multiple of a tile (6 or 12), columns
        // not a multiple of a panel (32) or a half panel, inner sizes of every residue.
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 13),
            (2, 33, 8),
            (5, 512, 512),
            (4, 70, 31),
            (7, 129, 64),
            (13, 37, 40),
            (25, 17, 9),
            (6, 9, 16),
            (2, 13, 9),
            // No inputs: every output is its bias.
            (3, 40, 0),
        ] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            check_every_kernel(&x, m, &w, n, k, "f32");
            // f16 weights: the kernels must compute the product with the rounded weights
            // exactly (the rounding itself is the only error they add).
            let w16: Vec<f16> = w.iter().copied().map(f16::from_f32).collect();
            check_every_kernel(&x, m, &w16, n, k, "f16");
            let w8: Vec<i8> = w.iter().map(|&v| (v * 3.0).round() as i8).collect();
            check_every_kernel(&x, m, &w8, n, k, "i8");
        }
    }

    /// Every kernel gives a row the same bits whatever rows share the call, for every tile
    /// size (1 to 12 rows and past them) and full and partial panels.
    #[test]
    fn every_kernel_keeps_a_rows_bits_in_any_batch() {
        for &(n, k) in &[(70, 512), (37, 43), (33, 2048)] {
            let w = values(n * k, 11);
            let w32 = PackedWeights::pack(&w, n, k);
            let w16: Vec<f16> = w.iter().copied().map(f16::from_f32).collect();
            let w16 = PackedWeights::pack(&w16, n, k);
            let w8: Vec<i8> = w.iter().map(|&v| (v * 100.0).round() as i8).collect();
            let w8 = PackedWeights::pack(&w8, n, k);
            let scales = values(n, 12);
            let bias = values(n, 14);
            let m = 31;
            let x = values(m * k, 13);
            for (kernel, act) in RowsKernel::available()
                .into_iter()
                .flat_map(|k| [(k, Epilogue::None), (k, Epilogue::QuickGelu)])
            {
                let run = |r0: usize, rows: usize, which: u8| -> Vec<u32> {
                    let xs = &x[r0 * k..(r0 + rows) * k];
                    let mut out = vec![0f32; rows * n];
                    let b = Some(&bias[..]);
                    match which {
                        0 => rows_times_packed(kernel, xs, rows, &w32, None, b, act, &mut out),
                        1 => rows_times_packed(kernel, xs, rows, &w16, None, b, act, &mut out),
                        _ => rows_times_packed(
                            kernel,
                            xs,
                            rows,
                            &w8,
                            Some(&scales),
                            b,
                            act,
                            &mut out,
                        ),
                    }
                    out.iter().map(|v| v.to_bits()).collect()
                };
                for which in 0..3 {
                    let all = run(0, m, which);
                    for rows in 1..=14 {
                        for r0 in [0, 5, m - rows] {
                            assert_eq!(
                                run(r0, rows, which),
                                all[r0 * n..(r0 + rows) * n].to_vec(),
                                "{kernel:?} {act:?} weights {which} {n}x{k}: rows {r0}..{}",
                                r0 + rows
                            );
                        }
                    }
                }
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
        let exact = Dense::from_parts(w.clone(), Some(b.clone()), WeightPrecision::F32)?;
        let diff = max_diff(exact.forward(&x)?)?;
        assert!(diff < 1e-5, "f32 max diff {diff}");
        let half = Dense::from_parts(w.clone(), Some(b.clone()), WeightPrecision::HalfRows)?;
        assert!(matches!(
            half.weights,
            Weights::Cpu {
                packed: Packed::F16(_),
                ..
            }
        ));
        let diff = max_diff(half.forward(&x)?)?;
        // |x| ≤ 1, 24 terms, each weight off by at most 2^-11 relative.
        assert!(diff > 0.0 && diff < 24.0 / 2048.0, "f16 max diff {diff}");
        let int8 = Dense::from_parts(w, Some(b), WeightPrecision::Int8Rows)?;
        let diff = max_diff(int8.forward(&x)?)?;
        // Each weight off by at most half a step, max |w| / 254 ≤ 1/254.
        assert!(diff > 0.0 && diff < 24.0 / 254.0, "int8 max diff {diff}");
        Ok(())
    }

    /// A row's result has the same bits whatever else is in the call, for every precision
    /// (the server's batching rests on it).
    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows() -> Result<()> {
        let device = Device::Cpu;
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
            for precision in [
                WeightPrecision::F32,
                WeightPrecision::HalfRows,
                WeightPrecision::Int8Rows,
                WeightPrecision::Int8Dynamic,
            ] {
                let layer = Dense::from_parts(w.clone(), Some(b.clone()), precision)?;
                let all = layer.forward(&x)?;
                for &(r0, rows) in &[(0, 1), (5, 3), (1, 33), (20, 50)] {
                    let part = layer.forward(&x.narrow(0, r0, rows)?)?;
                    assert_eq!(
                        bits(&part)?,
                        bits(&all.narrow(0, r0, rows)?)?,
                        "{precision:?} {n}x{k}: rows {r0}..{}",
                        r0 + rows
                    );
                }
            }
        }
        Ok(())
    }

    /// The fused QuickGELU agrees with candle's three ops (scale, sigmoid, product) on the
    /// layer's output to float rounding, for every precision (its exponential is
    /// `exp_poly`, not libm's).
    #[test]
    fn fused_quick_gelu_agrees_with_the_unfused_ops() -> Result<()> {
        let device = Device::Cpu;
        let (n, k) = (70, 48);
        let w = Tensor::from_vec(values(n * k, 31), (n, k), &device)?;
        let b = Tensor::from_vec(values(n, 32), n, &device)?;
        // Scaled up so the sigmoid sees both tails.
        let x = (Tensor::from_vec(values(9 * k, 33), (9, k), &device)? * 4.0)?;
        for precision in [
            WeightPrecision::F32,
            WeightPrecision::HalfRows,
            WeightPrecision::Int8Rows,
            WeightPrecision::Int8Dynamic,
        ] {
            let layer = Dense::from_parts(w.clone(), Some(b.clone()), precision)?;
            let fused = layer.forward_activated(&x, Activation::QuickGelu)?;
            let unfused = activate(Activation::QuickGelu, &layer.forward(&x)?)?;
            let (fused, unfused) = (fused.to_vec2::<f32>()?, unfused.to_vec2::<f32>()?);
            for (f, u) in fused.iter().flatten().zip(unfused.iter().flatten()) {
                assert!(
                    (f - u).abs() <= 4.0 * f32::EPSILON * u.abs().max(1e-30),
                    "{precision:?}: fused {f}, unfused {u}"
                );
            }
        }
        Ok(())
    }

    /// Every kernel build applies the epilogue with the same bits, in full and partial panels:
    /// on small integers every sum is exact, so the builds' outputs can differ only there.
    #[test]
    fn every_kernel_gives_the_epilogue_the_same_bits() {
        let (m, n, k) = (9, 70, 24);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
        let bias: Vec<f32> = (0..n).map(|j| (j % 9) as f32 - 4.0).collect();
        let packed = PackedWeights::pack(&w, n, k);
        let outputs: Vec<(RowsKernel, Vec<u32>)> = RowsKernel::available()
            .into_iter()
            .map(|kernel| {
                let mut out = vec![f32::NAN; m * n];
                let b = Some(&bias[..]);
                let act = Epilogue::QuickGelu;
                rows_times_packed(kernel, &x, m, &packed, None, b, act, &mut out);
                (kernel, out.iter().map(|v| v.to_bits()).collect())
            })
            .collect();
        let (first, want) = &outputs[0];
        for (kernel, got) in &outputs[1..] {
            assert_eq!(got, want, "{kernel:?} against {first:?}");
        }
    }

    /// Packing moves every weight to its panel slot and pads the last panel with zeros.
    #[test]
    fn packing_places_every_weight() {
        let (n, k) = (37, 5);
        let w = values(n * k, 15);
        let packed = PackedWeights::pack(&w, n, k);
        assert_eq!(packed.bytes(), 2 * 32 * k * 4);
        let x: Vec<f32> = (0..k).map(|t| if t == 3 { 1.0 } else { 0.0 }).collect();
        for kernel in RowsKernel::available() {
            let mut out = vec![f32::NAN; n];
            rows_times_packed(kernel, &x, 1, &packed, None, None, Epilogue::None, &mut out);
            let column: Vec<f32> = (0..n).map(|j| w[j * k + 3]).collect();
            assert_eq!(out, column, "{kernel:?}");
        }
    }
}
