//! Which implementation a model's hot spots use: the fused CPU kernels of
//! `shimmer-kernels` (linear + ReLU, CLIP loss, tanh, MSE, AdamW; `f32` on
//! the CPU) or candle's composed ops (every other device and dtype, or when
//! `SHIMMER_CPU_KERNELS=off`). The choice is made once, when a model's
//! [`ParamStore`](crate::ParamStore) or optimiser is built, and every layer
//! built from it follows it. Both compute the same values to float
//! rounding; the kernels are behind the default `fused-kernels` feature.

use candle_core::{DType, Device};

/// The implementation of the hot spots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ops {
    /// `shimmer-kernels`' fused CPU kernels.
    #[cfg(feature = "fused-kernels")]
    Fused,
    /// candle's composed ops.
    Composed,
}

impl Ops {
    /// The fused kernels for `f32` tensors on the CPU (unless switched off
    /// with `SHIMMER_CPU_KERNELS=off`), candle's ops otherwise.
    pub fn choose(device: &Device, dtype: DType) -> Self {
        #[cfg(feature = "fused-kernels")]
        if shimmer_kernels::enabled(device, dtype) {
            return Ops::Fused;
        }
        let _ = (device, dtype);
        Ops::Composed
    }

    /// Whether the fused kernels are used.
    pub fn is_fused(self) -> bool {
        self != Ops::Composed
    }

    /// What the CPU runs, for the training log: `fused CPU kernels (avx2)`
    /// or `candle ops (...)`.
    pub fn describe_cpu() -> String {
        #[cfg(feature = "fused-kernels")]
        if let Some(level) = shimmer_kernels::cpu_level() {
            return format!("fused CPU kernels ({level})");
        }
        #[cfg(feature = "fused-kernels")]
        return format!("candle ops ({}=off)", shimmer_kernels::SWITCH);
        #[cfg(not(feature = "fused-kernels"))]
        "candle ops (built without fused-kernels)".to_string()
    }

    /// The instruction set of the fused kernels on this CPU, or `off`.
    pub fn cpu_level() -> &'static str {
        #[cfg(feature = "fused-kernels")]
        if let Some(level) = shimmer_kernels::cpu_level() {
            return level;
        }
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_f32_on_the_cpu_is_fused() {
        assert_eq!(
            Ops::choose(&Device::Cpu, DType::F32).is_fused(),
            cfg!(feature = "fused-kernels")
        );
        assert_eq!(Ops::choose(&Device::Cpu, DType::F64), Ops::Composed);
        assert_eq!(Ops::choose(&Device::Cpu, DType::BF16), Ops::Composed);
    }
}
