//! Transformer building blocks shared by both towers.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, LayerNormConfig, VarBuilder};

use super::dense::{Dense, WeightPrecision, dense};

use crate::config::Activation;

/// LayerNorm with the checkpoint's epsilon.
pub(crate) fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let config = LayerNormConfig {
        eps,
        ..Default::default()
    };
    candle_nn::layer_norm(size, config, vb)
}

/// Projection into the shared embedding space (no bias in CLIP).
pub(crate) fn projection(
    input: usize,
    output: usize,
    precision: WeightPrecision,
    vb: VarBuilder,
) -> Result<Dense> {
    dense(input, output, false, precision, vb)
}

fn activate(act: Activation, xs: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
        Activation::Gelu => xs.gelu_erf(),
        Activation::GeluTanh => xs.gelu(),
    }
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
    /// How few-row products read the weights.
    pub precision: WeightPrecision,
}

struct Attention {
    q_proj: Dense,
    k_proj: Dense,
    v_proj: Dense,
    out_proj: Dense,
    heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn new(s: &StackShape, vb: VarBuilder) -> Result<Self> {
        let head_dim = s.hidden / s.heads;
        Ok(Self {
            q_proj: dense(s.hidden, s.hidden, true, s.precision, vb.pp("q_proj"))?,
            k_proj: dense(s.hidden, s.hidden, true, s.precision, vb.pp("k_proj"))?,
            v_proj: dense(s.hidden, s.hidden, true, s.precision, vb.pp("v_proj"))?,
            out_proj: dense(s.hidden, s.hidden, true, s.precision, vb.pp("out_proj"))?,
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

    /// `mask` is additive, shape `(l, l)`, broadcast over batch and heads.
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, l, h) = xs.dims3()?;
        let dtype = xs.dtype();
        let q = self.split_heads(&(self.q_proj.forward(xs)? * self.scale)?, b, l)?;
        let k = self.split_heads(&self.k_proj.forward(xs)?, b, l)?;
        let v = self.split_heads(&self.v_proj.forward(xs)?, b, l)?;
        let scores = q.matmul(&k.t()?)?;
        // Softmax in f32 keeps half-precision runs faithful to the f32 reference.
        let scores = scores.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, h))?;
        self.out_proj.forward(&out)
    }
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
        let xs = self.fc1.forward(xs)?;
        self.fc2.forward(&activate(self.act, &xs)?)
    }
}

struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp: Mlp,
    layer_norm2: LayerNorm,
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

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = (attn + xs)?;
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

    pub(crate) fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }
}

/// L2-normalises rows of a `(n, d)` tensor in f32, as `x / x.norm(dim=-1, keepdim=True)`.
pub(crate) fn l2_normalize_rows(xs: &Tensor) -> Result<Vec<Vec<f32>>> {
    let xs = xs.to_dtype(DType::F32)?;
    let norms = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    xs.broadcast_div(&norms)?.to_vec2::<f32>()
}
