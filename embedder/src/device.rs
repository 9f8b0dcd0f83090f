//! Choice of compute device.

use candle_core::{DType, Device};

use crate::error::{EmbedderError, Result};
use crate::model::WeightPrecision;

/// Where the towers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when built with the `cuda` feature and a GPU is present, else CPU.
    #[default]
    Auto,
    /// Always the CPU (all cores), f32 weights: the reference's numbers.
    Cpu,
    /// The CPU with an f16 copy of the text tower's weights for query-sized inputs: half the
    /// memory traffic per query (1.2x faster measured on a 2-core VM) for ~4e-4 drift from
    /// the reference. Math, activations and image batches stay f32.
    CpuF16,
    /// The CPU with int8 copies of the text tower's weights (one scale per output channel,
    /// sums in f32): a quarter of the f32 memory traffic per query, for a larger drift than
    /// `CpuF16` (see docs/benchmarks.md). Image batches stay f32.
    CpuInt8,
    /// The CPU with both towers' weights in int8 (one scale per output channel, as
    /// [`DeviceChoice::CpuInt8`]), and each layer's activations quantized to int8 per token
    /// at every call (dynamic quantization, exact integer sums): queries, batched passes and
    /// image batches take about half the f32 time with AVX-512 VNNI, for the drift of two
    /// roundings (see docs/benchmarks.md).
    CpuInt8Dynamic,
    /// CUDA GPU 0 with half-precision weights; an error if the crate was built without
    /// `cuda` or no GPU is present.
    Cuda,
    /// CUDA GPU 0 with f32 weights: slower than [`DeviceChoice::Cuda`], but numerically as
    /// close to the reference as the CPU path.
    CudaF32,
}

impl std::str::FromStr for DeviceChoice {
    type Err = EmbedderError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cpu-f16" => Ok(Self::CpuF16),
            "cpu-int8" => Ok(Self::CpuInt8),
            "cpu-w8a8" => Ok(Self::CpuInt8Dynamic),
            "cuda" | "gpu" => Ok(Self::Cuda),
            "cuda-f32" => Ok(Self::CudaF32),
            other => Err(EmbedderError::Device(format!(
                "unknown device `{other}` (expected auto, cpu, cpu-f16, cpu-int8, cpu-w8a8, cuda or cuda-f32)"
            ))),
        }
    }
}

/// A resolved device and the dtype the weights are kept in there.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub device: Device,
    pub dtype: DType,
    /// How the text tower's few-row products read its weights.
    pub text_precision: WeightPrecision,
    /// How the vision tower's layers compute: f32, or integer (`cpu-w8a8`); weight-only
    /// formats save bytes, which an image batch (bound by arithmetic) does not need.
    pub image_precision: WeightPrecision,
}

impl DeviceChoice {
    pub(crate) fn place(self) -> Result<Placement> {
        match self {
            Self::Cpu => Ok(cpu()),
            Self::CpuF16 => Ok(Placement {
                text_precision: WeightPrecision::HalfRows,
                ..cpu()
            }),
            Self::CpuInt8 => Ok(Placement {
                text_precision: WeightPrecision::Int8Rows,
                ..cpu()
            }),
            Self::CpuInt8Dynamic => Ok(Placement {
                text_precision: WeightPrecision::Int8Dynamic,
                image_precision: WeightPrecision::Int8Dynamic,
                ..cpu()
            }),
            Self::Cuda => cuda(DType::F16),
            Self::CudaF32 => cuda(DType::F32),
            Self::Auto => Ok(cuda(DType::F16).unwrap_or_else(|_| cpu())),
        }
    }
}

fn cpu() -> Placement {
    Placement {
        device: Device::Cpu,
        dtype: DType::F32,
        text_precision: WeightPrecision::F32,
        image_precision: WeightPrecision::F32,
    }
}

/// CUDA device 0 holding weights in `dtype`. In f16, attention softmax and the final
/// normalisation still run in f32 (see `model::layers`).
#[cfg(feature = "cuda")]
fn cuda(dtype: DType) -> Result<Placement> {
    let device = Device::new_cuda(0)
        .map_err(|e| EmbedderError::Device(format!("CUDA device 0 unavailable: {e}")))?;
    Ok(Placement {
        device,
        dtype,
        text_precision: WeightPrecision::F32,
        image_precision: WeightPrecision::F32,
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_dtype: DType) -> Result<Placement> {
    Err(EmbedderError::Device(
        "this build has no CUDA support; rebuild with `--features cuda` or use the CPU".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_place() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda-f32".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::CudaF32
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!(DeviceChoice::Cpu.place().unwrap().device.is_cpu());
        let int8 = "cpu-int8".parse::<DeviceChoice>().unwrap().place().unwrap();
        assert_eq!(int8.text_precision, WeightPrecision::Int8Rows);
        let w8a8 = "cpu-w8a8".parse::<DeviceChoice>().unwrap().place().unwrap();
        assert!(w8a8.device.is_cpu());
        assert_eq!(w8a8.text_precision, WeightPrecision::Int8Dynamic);
        assert_eq!(w8a8.image_precision, WeightPrecision::Int8Dynamic);
        assert_eq!(int8.image_precision, WeightPrecision::F32);
        let half = "cpu-f16".parse::<DeviceChoice>().unwrap().place().unwrap();
        assert!(half.device.is_cpu());
        assert_eq!(half.text_precision, WeightPrecision::HalfRows);
        #[cfg(not(feature = "cuda"))]
        {
            let err = DeviceChoice::Cuda.place().unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
            assert!(DeviceChoice::CudaF32.place().is_err());
            assert!(DeviceChoice::Auto.place().unwrap().device.is_cpu());
        }
    }
}
