//! Choosing the training device from the experiment's `device` setting.

use anyhow::{Result, bail};
use candle_core::Device;
use shimmer_config::{DeviceSpec, Precision};

/// One line saying where and how a model trains, e.g. `cpu, f32, 2
/// threads, fused CPU kernels (avx512)` or `cuda:0, bf16 mixed precision`.
pub fn describe(device: &Device, precision: Precision) -> String {
    let arithmetic = match precision {
        Precision::F32 => precision.name().to_string(),
        Precision::Bf16 => format!("{} mixed precision", precision.name()),
    };
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}, {arithmetic}"),
        candle_core::DeviceLocation::Cpu => {
            let threads = candle_core::utils::get_num_threads();
            let ops = crate::ops::Ops::describe_cpu();
            format!("cpu, {arithmetic}, {threads} thread(s), {ops}")
        }
        other => format!("{other:?}, {arithmetic}"),
    }
}

/// The dtype matrix-product inputs are rounded to under `precision`;
/// `None` for `f32`.
pub fn matmul_dtype(precision: Precision) -> Option<candle_core::DType> {
    match precision {
        Precision::F32 => None,
        Precision::Bf16 => Some(candle_core::DType::BF16),
    }
}

/// Refuses a precision the device cannot run: `bf16` mixed precision
/// needs a CUDA device (candle's CPU matrix products have no bfloat16).
pub fn check_precision(device: &Device, precision: Precision) -> Result<()> {
    if precision == Precision::Bf16 && !device.is_cuda() {
        bail!(
            "`precision: bf16` (mixed precision) runs on CUDA devices only, and this \
             experiment trains on the CPU: set `device: cuda:N` or `precision: f32`"
        );
    }
    Ok(())
}

/// Resolves `auto`, `cpu` or `cuda:N` into a candle device. `auto` picks the
/// first GPU when the binary was built with `--features cuda` and one is
/// present, the CPU otherwise; an explicit `cuda:N` that cannot be opened is
/// an error, never a silent fallback.
pub fn resolve(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DeviceSpec::Cuda(ordinal) => {
            let other = spec;
            if !candle_core::utils::cuda_is_available() {
                bail!(
                    "device `{other}` asked for, but this shimmer binary was built without \
                     CUDA support (rebuild with `--features cuda`)"
                );
            }
            Device::new_cuda(ordinal)
                .map_err(|e| anyhow::anyhow!("cannot open device `{other}`: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_resolve_without_gpu() {
        assert!(resolve(DeviceSpec::Cpu).unwrap().is_cpu());
        assert!(resolve(DeviceSpec::Auto).is_ok());
    }

    #[test]
    fn description_names_device_precision_and_threads() {
        let d = describe(&Device::Cpu, Precision::F32);
        assert!(d.starts_with("cpu, f32, ") && d.contains("thread"), "{d}");
    }

    #[test]
    fn bf16_is_refused_on_the_cpu() {
        assert!(check_precision(&Device::Cpu, Precision::F32).is_ok());
        let e = check_precision(&Device::Cpu, Precision::Bf16).unwrap_err();
        assert!(e.to_string().contains("CUDA"), "{e}");
    }

    #[test]
    fn cuda_needs_a_cuda_build() {
        #[cfg(not(feature = "cuda"))]
        assert!(
            resolve(DeviceSpec::Cuda(0))
                .unwrap_err()
                .to_string()
                .contains("features cuda")
        );
    }
}
