//! Deterministic autoencoders trained on the mean squared reconstruction
//! error, as shimmer's tutorial `GenericDomain` (`F.mse_loss(x, decoded)`).
//!
//! * linear: `encoder = Linear(in, latent)`, `decoder = Linear(latent, in)`,
//!   named `encoder.weight|bias`, `decoder.weight|bias` as in the tutorial;
//! * MLP: `encoder`, `decoder` are each `Linear(in,h) ReLU [Linear(h,h) ReLU]
//!   x n_layers Linear(h,out)`, named as `nn.Sequential` (`encoder.0.weight`,
//!   `encoder.2.weight`, …).

use anyhow::Result;
use candle_core::Tensor;
use rand::Rng;
use shimmer_nn::layers::{GwMlp, Linear, gw_mlp};
use shimmer_nn::params::ParamStore;

/// One side of an autoencoder.
#[derive(Debug, Clone)]
enum Stack {
    Linear(Linear),
    Mlp(GwMlp),
}

impl Stack {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Linear(l) => l.forward(x),
            Self::Mlp(m) => m.forward(x),
        }
    }
}

/// An encoder/decoder pair.
#[derive(Debug, Clone)]
pub(crate) struct Autoencoder {
    encoder: Stack,
    decoder: Stack,
}

impl Autoencoder {
    /// A linear autoencoder (encoder registered first, as PyTorch does).
    pub(crate) fn linear(
        store: &mut ParamStore,
        in_dim: usize,
        latent_dim: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let encoder = Linear::new(store, "encoder", in_dim, latent_dim, rng)?;
        let decoder = Linear::new(store, "decoder", latent_dim, in_dim, rng)?;
        Ok(Self {
            encoder: Stack::Linear(encoder),
            decoder: Stack::Linear(decoder),
        })
    }

    /// An MLP autoencoder with `n_layers` extra hidden layers on each side.
    pub(crate) fn mlp(
        store: &mut ParamStore,
        in_dim: usize,
        latent_dim: usize,
        hidden: usize,
        n_layers: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let encoder = gw_mlp(store, "encoder", in_dim, hidden, latent_dim, n_layers, rng)?;
        let decoder = gw_mlp(store, "decoder", latent_dim, hidden, in_dim, n_layers, rng)?;
        Ok(Self {
            encoder: Stack::Mlp(encoder),
            decoder: Stack::Mlp(decoder),
        })
    }

    /// Plugin latents to GW-side latents.
    pub(crate) fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.encoder.forward(x)
    }

    /// GW-side latents back to plugin latents.
    pub(crate) fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decoder.forward(z)
    }

    /// `mean((decode(encode(x)) - x)^2)` over every element.
    pub(crate) fn reconstruction_loss(&self, x: &Tensor) -> Result<Tensor> {
        let x_hat = self.decode(&self.encode(x)?)?;
        Ok((x_hat - x)?.sqr()?.mean_all()?)
    }
}
