//! Transformer building blocks shared by both towers.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention_core::{AttentionShape, Queries, attend};
use super::dense::{Dense, WeightPrecision, dense};
use super::layer_norm::Norm;
pub(crate) use super::layer_norm::layer_norm;
use super::packing::Packing;
pub(crate) use super::packing::Run;

use crate::config::Activation;

/// Projection into the shared embedding space (no bias in CLIP).
pub(crate) fn projection(
    input: usize,
    output: usize,
    precision: WeightPrecision,
    vb: VarBuilder,
) -> Result<Dense> {
    dense(input, output, false, precision, vb)
}

/// Sizes of one transformer stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub act: Activation,
    pub eps: f64,
    /// How CPU layers store their weights.
    pub precision: WeightPrecision,
}

/// How attention sees the tokens of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Masking {
    /// Every token sees every token of its sequence (vision).
    Full,
    /// A token sees itself and the tokens before it (text).
    Causal,
}

/// The query, key and value projections.
enum Projections {
    /// On the CPU (f32 activations): one layer of the three weights stacked (`[3·hidden,
    /// hidden]`), so each layer reads its activation once and dispatches one pass; its output
    /// columns are q, k, v side by side, each with the bits of its own layer (the kernel sums
    /// every column alone), and [`attend`] reads them in place.
    Stacked(Dense),
    /// Elsewhere: candle ops over three layers.
    Separate { q: Dense, k: Dense, v: Dense },
}

struct Attention {
    projections: Projections,
    out_proj: Dense,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn new(s: &StackShape, vb: VarBuilder) -> Result<Self> {
        let head_dim = s.hidden / s.heads;
        let h = s.hidden;
        let projections = if vb.device().is_cpu() && vb.dtype() == DType::F32 {
            let mut weights = Vec::with_capacity(3);
            let mut biases = Vec::with_capacity(3);
            for name in ["q_proj", "k_proj", "v_proj"] {
                weights.push(vb.pp(name).get((h, h), "weight")?);
                biases.push(vb.pp(name).get(h, "bias")?);
            }
            Projections::Stacked(Dense::from_parts(
                Tensor::cat(&weights, 0)?,
                Some(Tensor::cat(&biases, 0)?),
                s.precision,
            )?)
        } else {
            Projections::Separate {
                q: dense(h, h, true, s.precision, vb.pp("q_proj"))?,
                k: dense(h, h, true, s.precision, vb.pp("k_proj"))?,
                v: dense(h, h, true, s.precision, vb.pp("v_proj"))?,
            }
        };
        Ok(Self {
            projections,
            out_proj: dense(h, h, true, s.precision, vb.pp("out_proj"))?,
            heads: s.heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn split_heads(&self, xs: &Tensor, b: usize, l: usize) -> Result<Tensor> {
        xs.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn core_shape(&self, masks: &Masks) -> AttentionShape {
        AttentionShape {
            heads: self.heads,
            head_dim: self.head_dim,
            scale: self.scale as f32,
            causal: masks.masking == Masking::Causal,
        }
    }

    /// [`Self::forward`]'s output at one token per sequence only: `picks[s]` is the position
    /// within sequence `s` (in the packing's order), `rows` the same tokens as rows of `xs`.
    /// Every token's keys and values are still needed, but on the CPU only the picked
    /// tokens' scores, softmax, sums and output projection are computed; each picked row has
    /// the bits it gets in the full pass (the core and the kernel compute each row alone).
    fn forward_picked(
        &self,
        xs: &Tensor,
        packing: &Packing,
        masks: &Masks,
        picks: &[usize],
        rows: &Tensor,
    ) -> Result<Tensor> {
        match &self.projections {
            Projections::Stacked(qkv) => {
                let shape = self.core_shape(masks);
                let out = attend(&qkv.forward(xs)?, packing, shape, Queries::One(picks))?;
                self.out_proj.forward(&out)
            }
            Projections::Separate { .. } => self.forward(xs, packing, masks)?.index_select(rows, 0),
        }
    }

    /// Attention over packed sequences: `xs` is `(tokens, hidden)`, `packing` says which
    /// rows form which sequences. The projections run over all tokens at once (one pass over
    /// their weights). On the CPU (f32 activations) they are one stacked layer and the rest is
    /// [`attend`], per sequence and head, over any packing. Elsewhere the scores run per run
    /// of equal-length sequences through candle ops, shaped `(count, heads, len, len)`, so the
    /// packing must be runs (no shared rows). Either way each sequence's products, mask and
    /// softmax are exactly those it gets alone: no padding enters any sum. `masks[len]` is
    /// the additive causal mask for `len` (text only; [`attend`] needs only `masking`).
    fn forward(&self, xs: &Tensor, packing: &Packing, masks: &Masks) -> Result<Tensor> {
        let (_, h) = xs.dims2()?;
        let dtype = xs.dtype();
        let (q, k, v) = match &self.projections {
            Projections::Stacked(qkv) => {
                let out = attend(
                    &qkv.forward(xs)?,
                    packing,
                    self.core_shape(masks),
                    Queries::All,
                )?;
                return self.out_proj.forward(&out);
            }
            Projections::Separate { q, k, v } => (q, k, v),
        };
        let Some(runs) = packing.runs() else {
            candle_core::bail!("attention: shared rows need the CPU's attention core");
        };
        let q = (q.forward(xs)? * self.scale)?;
        let k = k.forward(xs)?;
        let v = v.forward(xs)?;
        let mut outs = Vec::with_capacity(runs.len());
        for run in runs {
            let (b, l) = (run.count, run.len);
            let rows = b * l;
            let q = self.split_heads(&q.narrow(0, run.start, rows)?, b, l)?;
            let k = self.split_heads(&k.narrow(0, run.start, rows)?, b, l)?;
            let v = self.split_heads(&v.narrow(0, run.start, rows)?, b, l)?;
            let scores = q.matmul(&k.t()?)?;
            // Softmax in f32 keeps half-precision runs faithful to the f32 reference.
            let scores = scores.to_dtype(DType::F32)?;
            let scores = match masks.get(l) {
                Some(mask) => scores.broadcast_add(mask)?,
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
            outs.push(probs.matmul(&v)?.transpose(1, 2)?.reshape((rows, h))?);
        }
        let out = if outs.len() == 1 {
            outs.pop().unwrap_or_else(|| unreachable!())
        } else {
            Tensor::cat(&outs, 0)?
        };
        self.out_proj.forward(&out)
    }
}

/// Additive causal masks by sequence length (none for length 1 or full attention), for the
/// attention through candle ops; the CPU's [`attend`] reads only `masking`.
pub(crate) struct Masks {
    masking: Masking,
    by_len: Vec<Option<Tensor>>,
}

impl Masks {
    /// The masks `packing`'s runs need under `masking` (none for a packing that shares rows:
    /// only the CPU's attention core runs those, and it needs no mask).
    pub(crate) fn new(
        packing: &Packing,
        masking: Masking,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let mut by_len: Vec<Option<Tensor>> = Vec::new();
        if masking == Masking::Causal {
            for run in packing.runs().unwrap_or_default() {
                let l = run.len;
                if l > 1 {
                    if by_len.len() <= l {
                        by_len.resize(l + 1, None);
                    }
                    if by_len[l].is_none() {
                        by_len[l] = Some(causal_mask(l, device)?);
                    }
                }
            }
        }
        Ok(Self { masking, by_len })
    }

    fn get(&self, len: usize) -> Option<&Tensor> {
        self.by_len.get(len).and_then(Option::as_ref)
    }
}

fn causal_mask(l: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..l)
        .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (l, l), device)
}

struct Mlp {
    fc1: Dense,
    fc2: Dense,
    act: Activation,
}

impl Mlp {
    fn new(s: &StackShape, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: dense(s.hidden, s.intermediate, true, s.precision, vb.pp("fc1"))?,
            fc2: dense(s.intermediate, s.hidden, true, s.precision, vb.pp("fc2"))?,
            act: s.act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.fc1.forward_activated(xs, self.act)?;
        self.fc2.forward(&xs)
    }
}

struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: Norm,
    mlp: Mlp,
    layer_norm2: Norm,
}

impl EncoderLayer {
    fn new(s: &StackShape, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(s, vb.pp("self_attn"))?,
            layer_norm1: layer_norm(s.hidden, s.eps, vb.pp("layer_norm1"))?,
            mlp: Mlp::new(s, vb.pp("mlp"))?,
            layer_norm2: layer_norm(s.hidden, s.eps, vb.pp("layer_norm2"))?,
        })
    }

    fn forward(&self, xs: &Tensor, packing: &Packing, masks: &Masks) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, packing, masks)?;
        let xs = (attn + xs)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        mlp + xs
    }

    /// [`Self::forward`] at the picked tokens only (see [`Attention::forward_picked`]):
    /// after attention everything is per token, so the residual, LayerNorm and MLP run on
    /// those rows alone.
    fn forward_picked(
        &self,
        xs: &Tensor,
        packing: &Packing,
        masks: &Masks,
        picks: &[usize],
        rows: &Tensor,
    ) -> Result<Tensor> {
        let normed = self.layer_norm1.forward(xs)?;
        let attn = self
            .self_attn
            .forward_picked(&normed, packing, masks, picks, rows)?;
        let xs = (attn + xs.index_select(rows, 0)?)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        mlp + xs
    }
}

/// `encoder.layers.*` of a CLIP tower.
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub(crate) fn new(s: &StackShape, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..s.layers)
            .map(|i| EncoderLayer::new(s, vb.pp(i.to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Whether the stack runs packings whose sequences share rows
    /// ([`Packing::sharing_prefixes`]): its attention is the CPU's core, not candle ops.
    pub(crate) fn shares_rows(&self) -> bool {
        self.layers
            .first()
            .is_some_and(|l| matches!(l.self_attn.projections, Projections::Stacked(_)))
    }

    /// Runs the stack over packed sequences: `xs` is `(tokens, hidden)`, `packing` says which
    /// rows form which sequences. Everything but attention is per token.
    #[cfg(test)]
    pub(crate) fn forward(
        &self,
        xs: &Tensor,
        packing: &Packing,
        masking: Masking,
    ) -> Result<Tensor> {
        let masks = Masks::new(packing, masking, xs.device())?;
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, packing, &masks)?;
        }
        Ok(xs)
    }

    /// [`Self::forward`]'s output at one token per sequence, the one a tower pools (class or
    /// end-of-text): `picks[s]` is its position within sequence `s`, the sequences in the
    /// packing's order; the result is `(sequences, hidden)`. Past its projections the last
    /// layer computes only those rows, with the bits of the full pass: three quarters of
    /// that layer's arithmetic for the other tokens, about 6 % of a ViT-B/32 tower.
    pub(crate) fn forward_pooled(
        &self,
        xs: &Tensor,
        packing: &Packing,
        masking: Masking,
        picks: &[usize],
    ) -> Result<Tensor> {
        let sequences = packing.len();
        if picks.len() != sequences {
            candle_core::bail!(
                "encoder: {} pooled tokens for {sequences} sequences",
                picks.len()
            );
        }
        if packing.runs().is_none() && masking != Masking::Causal {
            candle_core::bail!("encoder: only causal attention shares rows");
        }
        let mut rows = Vec::with_capacity(sequences);
        for ((seq, _), &pick) in packing.sequences().zip(picks) {
            let Some(&row) = seq.get(pick) else {
                candle_core::bail!("encoder: token {pick} of a {}-token sequence", seq.len());
            };
            rows.push(row);
        }
        let rows = Tensor::from_vec(rows, sequences, xs.device())?;
        let masks = Masks::new(packing, masking, xs.device())?;
        let Some((last, rest)) = self.layers.split_last() else {
            return xs.index_select(&rows, 0);
        };
        let mut xs = xs.clone();
        for layer in rest {
            xs = layer.forward(&xs, packing, &masks)?;
        }
        last.forward_picked(&xs, packing, &masks, picks, &rows)
    }
}

/// L2-normalises rows of a `(n, d)` tensor in f32, as `x / x.norm(dim=-1, keepdim=True)`.
pub(crate) fn l2_normalize_rows(xs: &Tensor) -> Result<Vec<Vec<f32>>> {
    let xs = xs.to_dtype(DType::F32)?;
    let norms = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norms)?.to_vec2::<f32>()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use candle_core::Device;

    use super::*;

    /// Deterministic values in [-scale, scale].
    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503);
                (((h >> 9) % 2001) as f32 / 1000.0 - 1.0) * scale
            })
            .collect()
    }

    /// A two-layer stack of hidden 32 (4 heads) and intermediate 64 on the CPU in f32, with
    /// weights of every tensor distinct.
    fn encoder(precision: WeightPrecision) -> Encoder {
        let (h, m, device) = (32, 64, Device::Cpu);
        let mut tensors = HashMap::new();
        let mut seed = 0;
        let mut put = |name: String, dims: &[usize], scale: f32, offset: f32| {
            seed += 1;
            let n = dims.iter().product();
            let data: Vec<f32> = values(n, seed, scale).iter().map(|v| v + offset).collect();
            tensors.insert(name, Tensor::from_vec(data, dims, &device).unwrap());
        };
        for l in 0..2 {
            let p = format!("layers.{l}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                put(format!("{p}.self_attn.{proj}.weight"), &[h, h], 0.3, 0.0);
                put(format!("{p}.self_attn.{proj}.bias"), &[h], 0.1, 0.0);
            }
            for norm in ["layer_norm1", "layer_norm2"] {
                put(format!("{p}.{norm}.weight"), &[h], 0.2, 1.0);
                put(format!("{p}.{norm}.bias"), &[h], 0.1, 0.0);
            }
            put(format!("{p}.mlp.fc1.weight"), &[m, h], 0.3, 0.0);
            put(format!("{p}.mlp.fc1.bias"), &[m], 0.1, 0.0);
            put(format!("{p}.mlp.fc2.weight"), &[h, m], 0.2, 0.0);
            put(format!("{p}.mlp.fc2.bias"), &[h], 0.1, 0.0);
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let shape = StackShape {
            hidden: h,
            intermediate: m,
            heads: 4,
            layers: 2,
            act: Activation::QuickGelu,
            eps: 1e-5,
            precision,
        };
        Encoder::new(&shape, vb).unwrap()
    }

    /// The pooled pass gives each sequence's picked token exactly the bits of the full pass,
    /// for text (causal, sequences of several lengths) and vision (full attention).
    #[test]
    fn pooled_pass_matches_the_full_pass_bit_for_bit() {
        let runs = [
            Run {
                start: 0,
                count: 1,
                len: 1,
            },
            Run {
                start: 1,
                count: 2,
                len: 4,
            },
            Run {
                start: 9,
                count: 1,
                len: 6,
            },
        ];
        let picks = [0, 3, 1, 5];
        let firsts = [0, 1, 5, 9];
        let packing = Packing::from_runs(&runs);
        let tokens = 15;
        let xs =
            Tensor::from_vec(values(tokens * 32, 99, 1.0), (tokens, 32), &Device::Cpu).unwrap();
        for precision in [
            WeightPrecision::F32,
            WeightPrecision::Int8Rows,
            WeightPrecision::Int8Dynamic,
        ] {
            let enc = encoder(precision);
            for masking in [Masking::Causal, Masking::Full] {
                let full = enc.forward(&xs, &packing, masking).unwrap();
                let full: Vec<Vec<f32>> = full.to_vec2().unwrap();
                let pooled = enc.forward_pooled(&xs, &packing, masking, &picks).unwrap();
                let pooled: Vec<Vec<f32>> = pooled.to_vec2().unwrap();
                assert_eq!(pooled.len(), picks.len());
                for (s, (&pick, &first)) in picks.iter().zip(&firsts).enumerate() {
                    let want: Vec<u32> = full[first + pick].iter().map(|x| x.to_bits()).collect();
                    let got: Vec<u32> = pooled[s].iter().map(|x| x.to_bits()).collect();
                    assert_eq!(got, want, "{precision:?} {masking:?} sequence {s}");
                }
            }
            // A pick past its sequence, or too few picks, is an error.
            assert!(
                enc.forward_pooled(&xs, &packing, Masking::Full, &[0, 4, 1, 5])
                    .is_err()
            );
            assert!(
                enc.forward_pooled(&xs, &packing, Masking::Full, &[0, 3, 1])
                    .is_err()
            );
        }
    }
}
