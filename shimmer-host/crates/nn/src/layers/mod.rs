//! The layers models are built from, with PyTorch's initialisation and
//! state-dict names: [`Linear`] and shimmer's `GWEncoder` / `GWDecoder`
//! ([`gw_mlp`]: `Linear(in,h) ReLU [Linear(h,h) ReLU] x n_layers
//! Linear(h,out)`, `nn.Sequential` names `<prefix>.<i>.weight|bias`, the
//! Linear layers at even indices 0, 2, …, 2k+2); convolutions ([`conv`])
//! and batch normalisation ([`batch_norm`]) for image domain models.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use rand::SeedableRng;
//! use shimmer_nn::{layers::gw_mlp, params::ParamStore};
//!
//! let mut store = ParamStore::new(&Device::Cpu, DType::F32);
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let enc = gw_mlp(&mut store, "gw_mod.gw_encoders.v", 8, 32, 16, 1, &mut rng).unwrap();
//! let y = enc.forward(&Tensor::zeros((4, 8), DType::F32, &Device::Cpu).unwrap()).unwrap();
//! assert_eq!(y.dims(), [4, 16]);
//! assert!(store.params().contains_key("gw_mod.gw_encoders.v.4.bias"));
//! ```

pub mod batch_norm;
pub mod conv;

pub use batch_norm::{BatchNorm2d, Mode};
pub use conv::{Conv2d, ConvTranspose2d};

use super::params::ParamStore;
use anyhow::Result;
use candle_core::{Tensor, Var};
use rand::Rng;

/// A fully connected layer `y = x Wᵀ + b`, `W` of shape `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
    /// Mixed precision: the dtype the product's inputs are rounded to.
    matmul_dtype: Option<candle_core::DType>,
    /// Whether the product runs as a fused kernel (from the store).
    #[cfg_attr(not(feature = "fused-kernels"), allow(dead_code))]
    ops: crate::ops::Ops,
}

impl Linear {
    /// Registers `<prefix>.weight` and `<prefix>.bias` drawn from
    /// `U(-1/sqrt(in), 1/sqrt(in))`, PyTorch's `nn.Linear` default.
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let bound = 1.0 / (in_dim.max(1) as f64).sqrt();
        let weight = store.uniform(&format!("{prefix}.weight"), &[out_dim, in_dim], bound, rng)?;
        let bias = store.uniform(&format!("{prefix}.bias"), &[out_dim], bound, rng)?;
        Ok(Self {
            weight,
            bias,
            matmul_dtype: store.matmul_dtype(),
            ops: store.ops(),
        })
    }

    /// Applies the layer to a `[batch, in]` tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, false)
    }

    /// Applies the layer, then ReLU when `relu`: one fused op on the CPU
    /// ([`shimmer_kernels::linear`]), candle's matmul, add and ReLU elsewhere
    /// (the product in the mixed-precision dtype when one is set).
    pub fn forward_act(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (w, b) = (self.weight.as_tensor(), self.bias.as_tensor());
        #[cfg(feature = "fused-kernels")]
        if self.ops == crate::ops::Ops::Fused && self.matmul_dtype.is_none() && x.rank() == 2 {
            return Ok(shimmer_kernels::linear::linear(x, w, b, relu)?);
        }
        let y = mixed_matmul(x, &w.t()?, self.matmul_dtype)?.broadcast_add(b)?;
        Ok(if relu { y.relu()? } else { y })
    }
}

/// `a · b`, with both inputs rounded to `low` first when given (mixed
/// precision, PyTorch autocast's rule for matrix products); the result is
/// in `a`'s dtype either way, and gradients flow back through the casts.
pub fn mixed_matmul(a: &Tensor, b: &Tensor, low: Option<candle_core::DType>) -> Result<Tensor> {
    Ok(match low {
        Some(dt) if dt != a.dtype() => a
            .to_dtype(dt)?
            .matmul(&b.to_dtype(dt)?)?
            .to_dtype(a.dtype())?,
        _ => a.matmul(b)?,
    })
}

/// A GW encoder or decoder MLP (no activation after the last layer).
#[derive(Debug, Clone)]
pub struct GwMlp {
    layers: Vec<Linear>,
}

impl GwMlp {
    /// Applies the MLP to a `[batch, in]` tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward_act(&h, i + 1 < self.layers.len())?;
        }
        Ok(h)
    }
}

/// Builds a GW encoder/decoder with `n_layers` extra hidden layers under
/// `prefix` (e.g. `gw_mod.gw_encoders.v`).
pub fn gw_mlp(
    store: &mut ParamStore,
    prefix: &str,
    in_dim: usize,
    hidden: usize,
    out_dim: usize,
    n_layers: usize,
    rng: &mut impl Rng,
) -> Result<GwMlp> {
    let mut layers = vec![Linear::new(
        store,
        &format!("{prefix}.0"),
        in_dim,
        hidden,
        rng,
    )?];
    for k in 0..n_layers {
        let name = format!("{prefix}.{}", 2 * (k + 1));
        layers.push(Linear::new(store, &name, hidden, hidden, rng)?);
    }
    let name = format!("{prefix}.{}", 2 * n_layers + 2);
    layers.push(Linear::new(store, &name, hidden, out_dim, rng)?);
    Ok(GwMlp { layers })
}

/// Parameters of a [`gw_mlp`] of these sizes (weights and biases), in
/// 128 bits so that no setting overflows it: what memory checks estimate
/// from before building anything.
pub fn gw_mlp_parameters(in_dim: usize, hidden: usize, out_dim: usize, n_layers: usize) -> u128 {
    let (i, h, o, n) = (
        in_dim as u128,
        hidden as u128,
        out_dim as u128,
        n_layers as u128,
    );
    (i + 1) * h + n * (h + 1) * h + (h + 1) * o
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use rand::SeedableRng;

    #[test]
    fn names_and_shapes_follow_nn_sequential() {
        let mut store = ParamStore::new(&Device::Cpu, DType::F32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        gw_mlp(&mut store, "e", 3, 5, 2, 2, &mut rng).unwrap();
        let names: Vec<_> = store.params().keys().cloned().collect();
        assert_eq!(
            names,
            [
                "e.0.weight",
                "e.0.bias",
                "e.2.weight",
                "e.2.bias",
                "e.4.weight",
                "e.4.bias",
                "e.6.weight",
                "e.6.bias"
            ]
        );
        assert_eq!(store.params()["e.0.weight"].dims(), [5, 3]);
        assert_eq!(store.params()["e.6.weight"].dims(), [2, 5]);
    }

    /// Mixed precision rounds the product's inputs (tested with f16, which
    /// candle's CPU matmul has; training uses bf16 on CUDA) and keeps f32
    /// weights that receive gradients.
    #[test]
    fn mixed_precision_rounds_product_inputs_only() {
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut exact = ParamStore::new(&dev, DType::F32);
        let plain = gw_mlp(&mut exact, "m", 5, 8, 3, 1, &mut rng).unwrap();
        let mut mixed = ParamStore::new(&dev, DType::F32);
        mixed.set_matmul_dtype(Some(DType::F16));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let low = gw_mlp(&mut mixed, "m", 5, 8, 3, 1, &mut rng).unwrap();
        let x = Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap();
        let (ye, yl) = (plain.forward(&x).unwrap(), low.forward(&x).unwrap());
        assert_eq!(yl.dtype(), DType::F32);
        let d = shimmer_kernels::test_util::max_abs_diff(&ye, &yl);
        assert!(d > 0.0 && d < 1e-2, "rounding shows but stays small: {d}");
        let grads = yl.sum_all().unwrap().backward().unwrap();
        let w = &mixed.params()["m.0.weight"];
        let g = grads.get(w.as_tensor()).unwrap();
        assert_eq!((g.dtype(), w.dtype()), (DType::F32, DType::F32));
    }

    #[test]
    fn forward_matches_hand_computation() {
        let dev = Device::Cpu;
        let mut store = ParamStore::new(&dev, DType::F32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mlp = gw_mlp(&mut store, "m", 1, 1, 1, 0, &mut rng).unwrap();
        let set = |n: &str, v: f32| {
            store.params()[n]
                .set(
                    &Tensor::new(&[[v]], &dev)
                        .unwrap()
                        .reshape(store.params()[n].dims())
                        .unwrap(),
                )
                .unwrap()
        };
        set("m.0.weight", 2.0);
        set("m.0.bias", -1.0);
        set("m.2.weight", 3.0);
        set("m.2.bias", 0.5);
        let x = Tensor::new(&[[1f32], [0.0]], &dev).unwrap();
        // relu(2x - 1) * 3 + 0.5 -> [3.5, 0.5]
        let y = mlp
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, [3.5, 0.5]);
    }
}
