//! PyTorch's `nn.Conv2d` and `nn.ConvTranspose2d` for square kernels, with
//! PyTorch's default initialisation (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
//! for weight and bias, `fan_in` read from the weight's shape as PyTorch
//! reads it) and its parameter names (`<prefix>.weight`, `<prefix>.bias`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use rand::SeedableRng;
//! use shimmer_nn::{layers::conv::Conv2d, params::ParamStore};
//!
//! let mut store = ParamStore::new(&Device::Cpu, DType::F32);
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let conv = Conv2d::new(&mut store, "layers.0", 3, 8, 4, 2, 1, false, &mut rng).unwrap();
//! let y = conv.forward(&Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap()).unwrap();
//! assert_eq!(y.dims(), [2, 8, 16, 16]);
//! ```

use crate::params::ParamStore;
use anyhow::Result;
use candle_core::{Tensor, Var};
use rand::Rng;

/// A 2-D convolution, weight `[out, in, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    bias: Option<Var>,
    stride: usize,
    padding: usize,
    #[cfg_attr(not(feature = "fused-kernels"), allow(dead_code))]
    ops: crate::ops::Ops,
}

impl Conv2d {
    /// Registers `<prefix>.weight` (and `<prefix>.bias` when `bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let fan_in = (in_channels * kernel * kernel).max(1) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let weight = store.uniform(
            &format!("{prefix}.weight"),
            &[out_channels, in_channels, kernel, kernel],
            bound,
            rng,
        )?;
        let bias = if bias {
            Some(store.uniform(&format!("{prefix}.bias"), &[out_channels], bound, rng)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            ops: store.ops(),
        })
    }

    /// `[batch, in, h, w]` to `[batch, out, h', w']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "fused-kernels")]
        if self.ops == crate::ops::Ops::Fused {
            let b = self.bias.as_ref().map(|b| b.as_tensor());
            let w = self.weight.as_tensor();
            return Ok(shimmer_kernels::conv::conv2d(
                x,
                w,
                b,
                self.stride,
                self.padding,
            )?);
        }
        let y = x.conv2d(self.weight.as_tensor(), self.padding, self.stride, 1, 1)?;
        add_channel_bias(y, self.bias.as_ref())
    }
}

/// A 2-D transposed convolution, weight `[in, out, k, k]` (PyTorch's layout).
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Var,
    bias: Option<Var>,
    stride: usize,
    padding: usize,
    #[cfg_attr(not(feature = "fused-kernels"), allow(dead_code))]
    ops: crate::ops::Ops,
}

impl ConvTranspose2d {
    /// Registers `<prefix>.weight` (and `<prefix>.bias` when `bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        // PyTorch reads fan_in from dim 1 of the weight: out * k * k.
        let fan_in = (out_channels * kernel * kernel).max(1) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let weight = store.uniform(
            &format!("{prefix}.weight"),
            &[in_channels, out_channels, kernel, kernel],
            bound,
            rng,
        )?;
        let bias = if bias {
            Some(store.uniform(&format!("{prefix}.bias"), &[out_channels], bound, rng)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
            ops: store.ops(),
        })
    }

    /// `[batch, in, h, w]` to `[batch, out, (h - 1) * stride - 2 * padding + k, ...]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "fused-kernels")]
        if self.ops == crate::ops::Ops::Fused {
            let b = self.bias.as_ref().map(|b| b.as_tensor());
            let w = self.weight.as_tensor();
            return Ok(shimmer_kernels::conv::conv_transpose2d(
                x,
                w,
                b,
                self.stride,
                self.padding,
            )?);
        }
        let y = x.conv_transpose2d(self.weight.as_tensor(), self.padding, 0, self.stride, 1)?;
        add_channel_bias(y, self.bias.as_ref())
    }
}

/// `y + bias[c]` over `[batch, c, h, w]`.
fn add_channel_bias(y: Tensor, bias: Option<&Var>) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.as_tensor().reshape((1, (), 1, 1))?)?,
        None => y,
    })
}
