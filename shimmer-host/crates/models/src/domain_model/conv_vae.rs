//! shimmer-ssd's visual VAE (`RAEEncoder`/`RAEDecoder` in
//! `shimmer_ssd/modules/vae.py`, `VisualDomainModule`) for 32x32 images,
//! flattened channels first as the plugin gives them.
//!
//! * encoder `vae.encoder.layers`: four `Conv2d(kernel 4, stride 2,
//!   padding 1, no bias)`, each followed by `BatchNorm2d` and ReLU, channels
//!   `ae_dim/8, ae_dim/4, ae_dim/2, ae_dim` (indices 0/1, 3/4, 6/7, 9/10),
//!   then heads `vae.encoder.q_mean`, `vae.encoder.q_logvar` =
//!   `Linear(ae_dim * 2 * 2, z)` on the flattened `[ae_dim, 2, 2]` map;
//! * decoder `vae.decoder.layers`: `ConvTranspose2d(z, ae_dim, kernel 8)`
//!   on the 1x1 latent, then two `ConvTranspose2d(kernel 4, stride 2,
//!   padding 1)` to `ae_dim/2` and `ae_dim/4`, each with `BatchNorm2d` and
//!   ReLU (indices 0/1, 3/4, 6/7, no bias); `vae.decoder.out_layer`: one
//!   pixel of zero padding right and bottom, `Conv2d(ae_dim/4, channels,
//!   kernel 4, padding 1)` (index 1, with bias), sigmoid;
//! * loss (`generic_step`): `reconstruction_loss = sum(gaussian_nll(x_hat,
//!   0, x))`, `kl_loss`, `loss = reconstruction_loss + beta * kl_loss`,
//!   summed over the batch.

use super::vae::{VaeLoss, gaussian_nll, kl_divergence_loss, reparameterize};
use anyhow::{Result, bail};
use candle_core::Tensor;
use rand::Rng;
use shimmer_nn::layers::{BatchNorm2d, Conv2d, ConvTranspose2d, Linear, Mode};
use shimmer_nn::params::ParamStore;

/// Side of the images the architecture takes.
pub const IMAGE_SIZE: usize = 32;

/// A convolution (or transposed one) followed by batch norm and ReLU.
#[derive(Debug, Clone)]
struct Block<C> {
    conv: C,
    norm: BatchNorm2d,
}

/// The conv VAE's layers.
#[derive(Debug, Clone)]
pub(crate) struct ConvVae {
    channels: usize,
    encoder: Vec<Block<Conv2d>>,
    q_mean: Linear,
    q_logvar: Linear,
    decoder: Vec<Block<ConvTranspose2d>>,
    out_conv: Conv2d,
    beta: f64,
}

impl ConvVae {
    /// Registers the layers under `vae.` in PyTorch construction order,
    /// for images of `channels x 32 x 32` (`in_dim` values).
    pub(crate) fn new(
        store: &mut ParamStore,
        in_dim: usize,
        channels: usize,
        ae_dim: usize,
        z_dim: usize,
        beta: f64,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if in_dim != channels * IMAGE_SIZE * IMAGE_SIZE {
            bail!(
                "a conv_vae takes {channels} x {IMAGE_SIZE} x {IMAGE_SIZE} images ({} values), \
                 but the domain's items have {in_dim} values",
                channels * IMAGE_SIZE * IMAGE_SIZE
            );
        }
        let enc_dims = [ae_dim / 8, ae_dim / 4, ae_dim / 2, ae_dim];
        let mut encoder = Vec::new();
        let mut c_in = channels;
        for (k, &c_out) in enc_dims.iter().enumerate() {
            let conv = Conv2d::new(
                store,
                &format!("vae.encoder.layers.{}", 3 * k),
                c_in,
                c_out,
                4,
                2,
                1,
                false,
                rng,
            )?;
            let norm =
                BatchNorm2d::new(store, &format!("vae.encoder.layers.{}", 3 * k + 1), c_out)?;
            encoder.push(Block { conv, norm });
            c_in = c_out;
        }
        let flat = ae_dim * 2 * 2;
        let q_mean = Linear::new(store, "vae.encoder.q_mean", flat, z_dim, rng)?;
        let q_logvar = Linear::new(store, "vae.encoder.q_logvar", flat, z_dim, rng)?;
        let dec_dims = [ae_dim, ae_dim / 2, ae_dim / 4];
        let mut decoder = Vec::new();
        let mut c_in = z_dim;
        for (k, &c_out) in dec_dims.iter().enumerate() {
            let (kernel, stride, padding) = if k == 0 { (8, 1, 0) } else { (4, 2, 1) };
            let conv = ConvTranspose2d::new(
                store,
                &format!("vae.decoder.layers.{}", 3 * k),
                c_in,
                c_out,
                kernel,
                stride,
                padding,
                false,
                rng,
            )?;
            let norm =
                BatchNorm2d::new(store, &format!("vae.decoder.layers.{}", 3 * k + 1), c_out)?;
            decoder.push(Block { conv, norm });
            c_in = c_out;
        }
        let out_conv = Conv2d::new(
            store,
            "vae.decoder.out_layer.1",
            c_in,
            channels,
            4,
            1,
            1,
            true,
            rng,
        )?;
        Ok(Self {
            channels,
            encoder,
            q_mean,
            q_logvar,
            decoder,
            out_conv,
            beta,
        })
    }

    /// The posterior `(mean, logvar)` of flattened images `x` (`[batch, c * 32 * 32]`).
    pub(crate) fn posterior(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        let mut h = x.reshape((b, self.channels, IMAGE_SIZE, IMAGE_SIZE))?;
        for block in &self.encoder {
            h = block
                .norm
                .forward_act(&block.conv.forward(&h)?, mode, true)?;
        }
        let h = h.flatten_from(1)?;
        Ok((self.q_mean.forward(&h)?, self.q_logvar.forward(&h)?))
    }

    /// Latents `[batch, z]` to flattened images `[batch, c * 32 * 32]` in [0, 1].
    pub(crate) fn decode(&self, z: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, z_dim) = z.dims2()?;
        let mut h = z.reshape((b, z_dim, 1, 1))?;
        for block in &self.decoder {
            h = block
                .norm
                .forward_act(&block.conv.forward(&h)?, mode, true)?;
        }
        let h = h.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
        let y = candle_nn::ops::sigmoid(&self.out_conv.forward(&h)?)?;
        Ok(y.flatten_from(1)?)
    }

    /// The training loss with the reparameterisation noise `eps`.
    pub(crate) fn loss(&self, x: &Tensor, eps: &Tensor, mode: Mode) -> Result<VaeLoss> {
        let (mean, logvar) = self.posterior(x, mode)?;
        let z = reparameterize(&mean, &logvar, eps)?;
        let x_hat = self.decode(&z, mode)?;
        let log_sigma = Tensor::zeros((), x.dtype(), x.device())?;
        let reconstruction = gaussian_nll(&x_hat, &log_sigma, x)?.sum_all()?;
        let kl = kl_divergence_loss(&mean, &logvar)?;
        let loss = (&reconstruction + (&kl * self.beta)?)?;
        Ok(VaeLoss {
            reconstruction,
            kl,
            loss,
            parts: Vec::new(),
        })
    }
}

#[cfg(test)]
#[path = "conv_vae_tests.rs"]
mod tests;
