//! Fused CPU kernels for the hot spots of a GW training step, as candle
//! custom ops with their own backward passes.
//!
//! candle builds a step from many small tensor ops; on the CPU each one
//! costs an allocation and a pass over memory, and its backward pass
//! several more. Measured on the benchmark workloads, a linear layer's bias
//! gradient (a strided reduction) and the contrastive loss's elementwise
//! work on `B x B` logits dominated. These kernels do the same math in one
//! pass each, with `gemm` (the crate candle's own CPU matmul uses) for the
//! products and SIMD loops for the rest:
//!
//! * [`linear`]: `y = x Wᵀ + b`, optionally followed by ReLU;
//! * [`clip`]: CLIP's symmetric cross-entropy between two batches of
//!   encodings, logits product included;
//! * [`elementwise`]: `tanh` and the mean squared error;
//! * [`adamw`]: AdamW's update in place;
//! * [`batch_norm`]: batch normalisation (with ReLU) over image channels;
//! * [`conv`]: 2-D convolutions and transposed convolutions (`im2col`,
//!   one product per batch, `col2im`).
//!
//! They are used for `f32` tensors on the CPU ([`enabled`]); on a GPU and
//! for other dtypes the callers keep candle's composed ops, which compute
//! the same values.

// Run-time SIMD dispatch (`simd_fn!`) and raw views of candle storage need
// `unsafe`; each block states why it holds.
#![allow(unsafe_code)]

pub mod adamw;
pub mod batch_norm;
pub mod clip;
pub mod conv;
pub mod elementwise;
pub mod linear;
mod matmul;
mod pool;
pub mod simd;
#[doc(hidden)]
pub mod test_util;

use candle_core::{DType, Device, Storage, Tensor};
use matmul::MatRef;

/// Environment variable that turns the fused kernels off (`off`, `0` or
/// `false`), for comparing against candle's composed ops or ruling the
/// kernels out when a result looks wrong.
pub const SWITCH: &str = "SHIMMER_CPU_KERNELS";

/// Whether the fused kernels apply to tensors of this device and dtype
/// (and are not switched off through [`SWITCH`]).
pub fn enabled(device: &Device, dtype: DType) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on =
        *ON.get_or_init(|| !matches!(std::env::var(SWITCH).as_deref(), Ok("off" | "0" | "false")));
    on && device.is_cpu() && dtype == DType::F32
}

/// The instruction set the fused kernels use on this CPU (`avx512`,
/// `avx2`, `baseline`), or `None` when they are switched off.
pub fn cpu_level() -> Option<&'static str> {
    enabled(&Device::Cpu, DType::F32).then(|| simd::level().name())
}

/// Runs `f` on the `f32` contents of a CPU tensor viewed as a matrix.
fn with_matrix<R>(t: &Tensor, f: impl FnOnce(MatRef<'_>) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("fused CPU kernels run on CPU tensors");
    };
    Ok(f(MatRef::from_storage(cpu, layout)?))
}

/// Runs `f` on the elements of a contiguous `f32` CPU tensor (any rank).
fn with_contiguous<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        _ => candle_core::bail!("fused CPU kernels take contiguous f32 CPU tensors"),
    }
}

/// A CPU tensor owning `data`.
fn cpu_tensor(data: Vec<f32>, shape: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_only_for_f32_on_cpu() {
        assert!(enabled(&Device::Cpu, DType::F32));
        assert!(!enabled(&Device::Cpu, DType::F64));
        assert!(!enabled(&Device::Cpu, DType::BF16));
    }
}
