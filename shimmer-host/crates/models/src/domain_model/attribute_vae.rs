//! shimmer-ssd's attribute VAE (`AttributeDomainModule` in
//! `shimmer_ssd/modules/domains/attribute.py`) for vectors of one-hot
//! class values followed by attributes in [-1, 1].
//!
//! * encoder `vae.encoder.encoder`: `Linear(in, h) ReLU Linear(h, h) ReLU
//!   Linear(h, z) ReLU` (indices 0, 2, 4), heads `vae.encoder.q_mean`,
//!   `vae.encoder.q_logvar` = `Linear(z, z)`;
//! * decoder `vae.decoder.decoder`: `Linear(z, h) ReLU Linear(h, h) ReLU`
//!   (indices 0, 2), then `vae.decoder.decoder_categories.0` = `Linear(h,
//!   classes)` (logits) and `vae.decoder.decoder_attributes.0` =
//!   `Linear(h, in - classes)` with tanh; `decode` gives both side by side,
//!   in the input's layout;
//! * loss: `reconstruction_loss_categories = cross_entropy(logits, argmax
//!   class)` summed over the batch, `reconstruction_loss_attributes =
//!   sum(gaussian_nll(attributes_hat, 0, attributes))`,
//!   `reconstruction_loss = coef_categories * categories + coef_attributes
//!   * attributes`, `loss = reconstruction_loss + beta * kl_loss`.

use super::vae::{VaeLoss, gaussian_nll, kl_divergence_loss, reparameterize};
use anyhow::{Result, bail};
use candle_core::{D, Tensor};
use rand::Rng;
use shimmer_nn::layers::{GwMlp, Linear, gw_mlp};
use shimmer_nn::params::ParamStore;

/// Metric name of the class term, as shimmer-ssd logs it.
pub const CATEGORIES_LOSS: &str = "reconstruction_loss_categories";
/// Metric name of the attributes term, as shimmer-ssd logs it.
pub const ATTRIBUTES_LOSS: &str = "reconstruction_loss_attributes";

/// The attribute VAE's layers.
#[derive(Debug, Clone)]
pub(crate) struct AttributeVae {
    classes: usize,
    encoder: GwMlp,
    q_mean: Linear,
    q_logvar: Linear,
    decoder: [Linear; 2],
    categories: Linear,
    attributes: Linear,
    beta: f64,
    coefs: (f64, f64),
}

impl AttributeVae {
    /// Registers the layers under `vae.` in PyTorch construction order.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: &mut ParamStore,
        in_dim: usize,
        classes: usize,
        hidden: usize,
        z_dim: usize,
        beta: f64,
        coefs: (f64, f64),
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if in_dim <= classes {
            bail!(
                "an attribute_vae reads {classes} class values then attributes, but the domain's \
                 items have only {in_dim} values"
            );
        }
        let encoder = gw_mlp(store, "vae.encoder.encoder", in_dim, hidden, z_dim, 1, rng)?;
        let q_mean = Linear::new(store, "vae.encoder.q_mean", z_dim, z_dim, rng)?;
        let q_logvar = Linear::new(store, "vae.encoder.q_logvar", z_dim, z_dim, rng)?;
        let decoder = [
            Linear::new(store, "vae.decoder.decoder.0", z_dim, hidden, rng)?,
            Linear::new(store, "vae.decoder.decoder.2", hidden, hidden, rng)?,
        ];
        let categories = Linear::new(
            store,
            "vae.decoder.decoder_categories.0",
            hidden,
            classes,
            rng,
        )?;
        let attributes = Linear::new(
            store,
            "vae.decoder.decoder_attributes.0",
            hidden,
            in_dim - classes,
            rng,
        )?;
        Ok(Self {
            classes,
            encoder,
            q_mean,
            q_logvar,
            decoder,
            categories,
            attributes,
            beta,
            coefs,
        })
    }

    /// The posterior `(mean, logvar)` of `x`.
    pub(crate) fn posterior(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.encoder.forward(x)?.relu()?;
        Ok((self.q_mean.forward(&h)?, self.q_logvar.forward(&h)?))
    }

    /// Class logits and tanh attributes, side by side.
    pub(crate) fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let h = self.decoder[0].forward_act(z, true)?;
        let h = self.decoder[1].forward_act(&h, true)?;
        let logits = self.categories.forward(&h)?;
        let attributes = self.attributes.forward(&h)?.tanh()?;
        Ok(Tensor::cat(&[logits, attributes], D::Minus1)?)
    }

    /// The training loss with the reparameterisation noise `eps`.
    pub(crate) fn loss(&self, x: &Tensor, eps: &Tensor) -> Result<VaeLoss> {
        let (mean, logvar) = self.posterior(x)?;
        let z = reparameterize(&mean, &logvar, eps)?;
        let x_hat = self.decode(&z)?;
        let width = x.dim(1)?;
        let n_attr = width - self.classes;
        let classes = x.narrow(1, 0, self.classes)?.argmax(D::Minus1)?;
        let logits = x_hat.narrow(1, 0, self.classes)?;
        let batch = x.dim(0)? as f64;
        // candle's cross_entropy averages over the batch; shimmer-ssd sums.
        let categories = (candle_nn::loss::cross_entropy(&logits, &classes)? * batch)?;
        let log_sigma = Tensor::zeros((), x.dtype(), x.device())?;
        let attributes = gaussian_nll(
            &x_hat.narrow(1, self.classes, n_attr)?,
            &log_sigma,
            &x.narrow(1, self.classes, n_attr)?,
        )?
        .sum_all()?;
        let reconstruction = ((&categories * self.coefs.0)? + (&attributes * self.coefs.1)?)?;
        let kl = kl_divergence_loss(&mean, &logvar)?;
        let loss = (&reconstruction + (&kl * self.beta)?)?;
        Ok(VaeLoss {
            reconstruction,
            kl,
            loss,
            parts: vec![(CATEGORIES_LOSS, categories), (ATTRIBUTES_LOSS, attributes)],
        })
    }
}
