//! LayerNorm over the last dimension, our own on the CPU.
//!
//! candle-nn's CPU LayerNorm runs its rows on rayon's pool, beside candle's spinning worker
//! pool that every other op of a forward pass uses, so under a batched pass the two pools'
//! threads took turns on the same cores; and it sums each row in one sequential chain. Ours
//! runs on candle's worker pool like the linear layers and attention, and sums in 16 lanes
//! that the compiler vectorizes. Two passes (the mean, then the squared deviations from it)
//! rather than `E[x²] − mean²`, which loses digits when the mean is large beside the spread.
//! A row's result depends on that row alone and the lanes are summed in a fixed order, so every
//! build gives the same bits and a query keeps its bits in any batch. On a GPU, or for
//! half-precision activations, candle-nn's LayerNorm runs.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{LayerNorm, LayerNormConfig, VarBuilder};

use super::rows_kernel::SyncPtr;

/// Lanes each row's sums are split into (one AVX-512 register of f32, two AVX2 ones).
const LANES: usize = 16;

/// Rows below this run on the calling thread: a query's few tokens are not worth waking the
/// pool for.
const POOL_MIN_ROWS: usize = 16;

/// A LayerNorm with weight and bias, as `transformers` names them.
pub(crate) struct Norm {
    /// candle-nn's, for devices and dtypes our op does not cover.
    fallback: LayerNorm,
    /// The parameters as f32 on the CPU, when the weights live there.
    cpu: Option<RowNorm>,
}

/// Our op: weight, bias and epsilon of one LayerNorm.
struct RowNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// LayerNorm with the checkpoint's epsilon: `weight` and `bias` of `size` from `vb`.
pub(crate) fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<Norm> {
    let config = LayerNormConfig {
        eps,
        ..Default::default()
    };
    let fallback = candle_nn::layer_norm(size, config, vb)?;
    let cpu = match fallback.bias() {
        Some(bias) if fallback.weight().device().is_cpu() => Some(RowNorm {
            weight: fallback.weight().to_dtype(DType::F32)?.to_vec1()?,
            bias: bias.to_dtype(DType::F32)?.to_vec1()?,
            eps: eps as f32,
        }),
        _ => None,
    };
    Ok(Norm { fallback, cpu })
}

impl Module for Norm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match &self.cpu {
            Some(op) if xs.device().is_cpu() && xs.dtype() == DType::F32 => xs.apply_op1_no_bwd(op),
            _ => self.fallback.forward(xs),
        }
    }
}

impl CustomOp1 for RowNorm {
    fn name(&self) -> &'static str {
        "row-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("layer norm: the activation is not f32");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("layer norm: the activation is not contiguous");
        };
        let width = self.weight.len();
        let dims = l.shape().dims();
        if dims.last() != Some(&width) || self.bias.len() != width || width == 0 {
            candle_core::bail!("layer norm of {width} over an activation shaped {dims:?}");
        }
        let x = &data[start..end];
        let rows = x.len() / width;
        let mut out: Vec<f32> = Vec::with_capacity(x.len());
        let base = SyncPtr(out.spare_capacity_mut().as_mut_ptr());
        let run = |range: std::ops::Range<usize>| {
            for r in range {
                // SAFETY: row `r` of the output is `width` elements at `r * width` of a buffer
                // of `rows * width`, and each row index is handed out once.
                let dst = unsafe { std::slice::from_raw_parts_mut(base.at(r * width), width) };
                self.normalize(&x[r * width..(r + 1) * width], dst);
            }
        };
        if rows < POOL_MIN_ROWS {
            run(0..rows);
        } else {
            candle_core::utils::barrier_pool().execute_chunked(rows, run);
        }
        // SAFETY: the rows `0..rows` were each written in full above (`normalize` writes every
        // element of its row), which is all `rows * width = x.len()` elements.
        unsafe { out.set_len(x.len()) };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

impl RowNorm {
    /// `(x − mean) / sqrt(var + eps) · weight + bias` of one row, written to every element of
    /// `out`.
    fn normalize(&self, x: &[f32], out: &mut [MaybeUninit<f32>]) {
        let n = x.len() as f32;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| {
            let d = v - mean;
            d * d
        }) / n;
        let inv_std = (var + self.eps).sqrt().recip();
        for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(&self.weight).zip(&self.bias) {
            o.write((v - mean) * inv_std * w + b);
        }
    }
}

/// `Σ f(x)` in [`LANES`] partial sums, element `i` into lane `i % LANES`, then the lanes
/// halved pairwise: a fixed order whatever the SIMD width.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            acc[l] += acc[l + half];
        }
        half /= 2;
    }
    acc[0]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;

    fn values(n: usize, seed: u32, scale: f32, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503);
                (((h >> 9) % 2001) as f32 / 1000.0 - 1.0) * scale + offset
            })
            .collect()
    }

    fn norm(width: usize) -> Norm {
        let device = Device::Cpu;
        let mut tensors = HashMap::new();
        let w = values(width, 1, 0.5, 1.0);
        let b = values(width, 2, 0.2, 0.0);
        tensors.insert(
            "weight".to_string(),
            Tensor::from_vec(w, width, &device).unwrap(),
        );
        tensors.insert(
            "bias".to_string(),
            Tensor::from_vec(b, width, &device).unwrap(),
        );
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        layer_norm(width, 1e-5, vb).unwrap()
    }

    /// In f64, two passes: the value the f32 op approximates.
    fn reference(x: &[f32], n: &RowNorm) -> Vec<f64> {
        let w = n.weight.len();
        x.chunks(w)
            .flat_map(|row| {
                let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / w as f64;
                let var = row
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / w as f64;
                let inv = 1.0 / (var + f64::from(n.eps)).sqrt();
                row.iter()
                    .zip(&n.weight)
                    .zip(&n.bias)
                    .map(move |((&v, &g), &b)| {
                        (f64::from(v) - mean) * inv * f64::from(g) + f64::from(b)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// `t` run through `m` and flattened.
    fn applied(m: &impl Module, t: &Tensor) -> Vec<f32> {
        m.forward(t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Close to the f64 value at widths that do and do not fill the lanes, on rows whose mean
    /// is large beside their spread (where `E[x²] − mean²` loses its digits), on the pool's
    /// path and the caller's.
    #[test]
    fn matches_a_double_precision_reference() {
        for width in [5, 16, 37, 512] {
            let n = norm(width);
            let op = n.cpu.as_ref().unwrap();
            for rows in [3, 40] {
                for offset in [0.0, 30.0] {
                    let x = values(rows * width, width as u32 + rows as u32, 1.5, offset);
                    let t = Tensor::from_vec(x.clone(), (rows, width), &Device::Cpu).unwrap();
                    let got = applied(&n, &t);
                    let want = reference(&x, op);
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(&g, &w)| (f64::from(g) - w).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        worst < 2e-5,
                        "width {width}, rows {rows}, offset {offset}: {worst}"
                    );
                }
            }
        }
    }

    /// A row's bits do not depend on the other rows of the call, nor on whether the pool ran
    /// it; and candle-nn's LayerNorm (the fallback) agrees within rounding.
    #[test]
    fn a_row_keeps_its_bits_in_any_batch() {
        let width = 512;
        let n = norm(width);
        let x = values(64 * width, 7, 2.0, 0.3);
        let all = Tensor::from_vec(x.clone(), (64, width), &Device::Cpu).unwrap();
        let all = applied(&n, &all);
        for r in [0, 17, 63] {
            let one = Tensor::from_vec(
                x[r * width..(r + 1) * width].to_vec(),
                (1, width),
                &Device::Cpu,
            )
            .unwrap();
            let one = applied(&n, &one);
            assert_eq!(one, all[r * width..(r + 1) * width], "row {r}");
        }
        let t = Tensor::from_vec(x, (64, width), &Device::Cpu).unwrap();
        let theirs = applied(&n.fallback, &t);
        let worst = all
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{worst}");
    }

    /// Three-dimensional activations (the vision tower's) normalise over the last dimension.
    #[test]
    fn normalises_the_last_dimension_of_any_shape() {
        let width = 37;
        let n = norm(width);
        let x = values(2 * 3 * width, 9, 1.0, 0.0);
        let t3 = Tensor::from_vec(x.clone(), (2, 3, width), &Device::Cpu).unwrap();
        let t2 = Tensor::from_vec(x, (6, width), &Device::Cpu).unwrap();
        let a = n.forward(&t3).unwrap();
        assert_eq!(a.dims(), &[2, 3, width]);
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b = applied(&n, &t2);
        assert_eq!(a, b);
    }
}
