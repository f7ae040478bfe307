//! PyTorch's `nn.BatchNorm2d`: in training mode each channel is normalised
//! by the batch's mean and (biased) variance, and the running statistics
//! move towards them (`momentum` 0.1, the unbiased variance, as PyTorch);
//! in evaluation mode the running statistics are used. Names follow
//! PyTorch's state dict: `weight`, `bias` (trained), `running_mean`,
//! `running_var`, `num_batches_tracked` (buffers, saved in checkpoints).

use crate::params::ParamStore;
use anyhow::Result;
use candle_core::{Tensor, Var};

/// Whether a model runs as in training (batch statistics, updates of
/// running statistics) or as in evaluation — PyTorch's `train()`/`eval()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: batch statistics, running statistics updated.
    Train,
    /// Evaluation: running statistics, nothing updated.
    Eval,
}

/// Batch normalisation over the channels of `[batch, c, h, w]` tensors.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    num_batches_tracked: Var,
    eps: f64,
    momentum: f64,
    #[cfg_attr(not(feature = "fused-kernels"), allow(dead_code))]
    ops: crate::ops::Ops,
}

impl BatchNorm2d {
    /// Registers the layer under `prefix` with PyTorch's initial values
    /// (weight 1, bias 0, running mean 0, running variance 1), eps 1e-5,
    /// momentum 0.1.
    pub fn new(store: &mut ParamStore, prefix: &str, channels: usize) -> Result<Self> {
        let (dev, dt) = (store.device().clone(), store.dtype());
        let ones = Tensor::ones(channels, dt, &dev)?;
        let zeros = Tensor::zeros(channels, dt, &dev)?;
        Ok(Self {
            weight: store.add_param(&format!("{prefix}.weight"), ones.clone())?,
            bias: store.add_param(&format!("{prefix}.bias"), zeros.clone())?,
            running_mean: store.add_buffer(&format!("{prefix}.running_mean"), zeros)?,
            running_var: store.add_buffer(&format!("{prefix}.running_var"), ones)?,
            num_batches_tracked: store.add_buffer(
                &format!("{prefix}.num_batches_tracked"),
                Tensor::zeros((), dt, &dev)?,
            )?,
            eps: 1e-5,
            momentum: 0.1,
            ops: store.ops(),
        })
    }

    /// Normalises `x` (`[batch, c, h, w]`) in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_act(x, mode, false)
    }

    /// Normalises `x` in `mode`, then applies ReLU when `relu` (one fused
    /// op on the CPU, candle's ops elsewhere).
    pub fn forward_act(&self, x: &Tensor, mode: Mode, relu: bool) -> Result<Tensor> {
        #[cfg(feature = "fused-kernels")]
        if self.ops == crate::ops::Ops::Fused {
            let batch = mode == Mode::Train;
            let (mean, var) = if batch {
                let (mean, var) = shimmer_kernels::batch_norm::channel_stats(x)?;
                let n = x.elem_count() / mean.len().max(1);
                let c = mean.len();
                let dev = x.device();
                self.update_running(
                    &Tensor::from_slice(&mean, c, dev)?,
                    &Tensor::from_slice(&var, c, dev)?,
                    n,
                )?;
                (mean, var)
            } else {
                (
                    self.running_mean.as_tensor().to_vec1::<f32>()?,
                    self.running_var.as_tensor().to_vec1::<f32>()?,
                )
            };
            let stats = shimmer_kernels::batch_norm::Stats {
                mean: &mean,
                var: &var,
                eps: self.eps,
                of_batch: batch,
            };
            return Ok(shimmer_kernels::batch_norm::batch_norm(
                x,
                self.weight.as_tensor(),
                self.bias.as_tensor(),
                stats,
                relu,
            )?);
        }
        let c = self.weight.dim(0)?;
        let shape = (1, c, 1, 1);
        let (mean, var) = match mode {
            Mode::Eval => (
                self.running_mean.as_tensor().reshape(shape)?,
                self.running_var.as_tensor().reshape(shape)?,
            ),
            Mode::Train => {
                let n = x.elem_count() / c;
                let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
                let var = x
                    .broadcast_sub(&mean)?
                    .sqr()?
                    .mean_keepdim(0)?
                    .mean_keepdim(2)?
                    .mean_keepdim(3)?;
                self.update_running(&mean.detach(), &var.detach(), n)?;
                (mean, var)
            }
        };
        let scale = (var + self.eps)?.sqrt()?.recip()?;
        let w = self.weight.as_tensor().reshape(shape)?;
        let b = self.bias.as_tensor().reshape(shape)?;
        let y = x
            .broadcast_sub(&mean)?
            .broadcast_mul(&scale.broadcast_mul(&w)?)?
            .broadcast_add(&b)?;
        Ok(if relu { y.relu()? } else { y })
    }

    /// `running = (1 - momentum) * running + momentum * batch`, with the
    /// batch's unbiased variance; counts the batch.
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = self.momentum;
        let unbiased = if n > 1 {
            n as f64 / (n - 1) as f64
        } else {
            1.0
        };
        let c = self.weight.dim(0)?;
        let mean = mean.reshape(c)?.to_dtype(self.running_mean.dtype())?;
        let var = (var.reshape(c)? * unbiased)?.to_dtype(self.running_var.dtype())?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (var * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        let count = (self.num_batches_tracked.as_tensor() + 1.0)?;
        self.num_batches_tracked.set(&count)?;
        Ok(())
    }
}
