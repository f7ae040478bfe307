//! shimmer's `VAE` (`shimmer/modules/vae.py`) for vector domains, with the
//! training loss shimmer's domain modules compute around it
//! (`shimmer_ssd/modules/domains/visual.py`, `generic_step`).
//!
//! * encoder (shimmer-ssd's attribute `Encoder`): `encoder.encoder =
//!   Linear(in,h) ReLU [Linear(h,h) ReLU] x n_layers Linear(h,latent) ReLU`,
//!   then heads `encoder.q_mean`, `encoder.q_logvar = Linear(latent,latent)`;
//! * decoder: `decoder.decoder = Linear(latent,h) ReLU [Linear(h,h) ReLU] x
//!   n_layers Linear(h,in)`;
//! * `encode` is the mean (no sampling); training decodes
//!   `z = mean + exp(0.5 logvar) * eps`;
//! * loss: `reconstruction_loss = sum(gaussian_nll(x_hat, 0, x))`,
//!   `kl_loss = kl_divergence_loss(mean, logvar)` (both summed over the
//!   batch, not averaged), `loss = reconstruction_loss + beta * kl_loss`.
//!
//! Parameter names are those of a shimmer `DomainModule` holding
//! `self.vae = VAE(encoder, decoder, beta)`: `vae.encoder.encoder.0.weight`,
//! `vae.encoder.q_mean.weight`, `vae.decoder.decoder.0.weight`, ….

use anyhow::Result;
use candle_core::Tensor;
use rand::Rng;
use shimmer_nn::layers::{GwMlp, Linear, gw_mlp};
use shimmer_nn::params::ParamStore;

/// shimmer's `kl_divergence_loss`: `-0.5 * sum(1 + logvar - mean^2 -
/// exp(logvar))`, summed over every element (batch included).
pub fn kl_divergence_loss(mean: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let inner = ((logvar + 1.0)? - mean.sqr()?)?.sub(&logvar.exp()?)?;
    Ok((inner.sum_all()? * -0.5)?)
}

/// shimmer's `gaussian_nll`, element-wise: `0.5 * ((x - mu) /
/// exp(log_sigma))^2 + log_sigma + 0.5 * log(2 pi)`; `log_sigma` broadcasts
/// (shimmer's VAE losses pass a scalar 0).
pub fn gaussian_nll(mu: &Tensor, log_sigma: &Tensor, x: &Tensor) -> Result<Tensor> {
    let z = (x - mu)?.broadcast_div(&log_sigma.exp()?)?;
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    Ok(((z.sqr()? * 0.5)?.broadcast_add(log_sigma)? + half_log_2pi)?)
}

/// shimmer's `reparameterize` with the standard-normal noise given:
/// `exp(0.5 logvar) * eps + mean`.
pub fn reparameterize(mean: &Tensor, logvar: &Tensor, eps: &Tensor) -> Result<Tensor> {
    Ok(((logvar * 0.5)?.exp()? * eps)?.add(mean)?)
}

/// The VAE's layers.
#[derive(Debug, Clone)]
pub(crate) struct Vae {
    encoder: GwMlp,
    q_mean: Linear,
    q_logvar: Linear,
    decoder: GwMlp,
    beta: f64,
}

/// What one training pass computes.
pub(crate) struct VaeLoss {
    pub(crate) reconstruction: Tensor,
    pub(crate) kl: Tensor,
    pub(crate) loss: Tensor,
    /// Terms of the reconstruction logged on their own, by name.
    pub(crate) parts: Vec<(&'static str, Tensor)>,
}

impl Vae {
    /// Registers the layers under `vae.` in PyTorch construction order.
    pub(crate) fn new(
        store: &mut ParamStore,
        in_dim: usize,
        latent_dim: usize,
        hidden: usize,
        n_layers: usize,
        beta: f64,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let encoder = gw_mlp(
            store,
            "vae.encoder.encoder",
            in_dim,
            hidden,
            latent_dim,
            n_layers,
            rng,
        )?;
        let q_mean = Linear::new(store, "vae.encoder.q_mean", latent_dim, latent_dim, rng)?;
        let q_logvar = Linear::new(store, "vae.encoder.q_logvar", latent_dim, latent_dim, rng)?;
        let decoder = gw_mlp(
            store,
            "vae.decoder.decoder",
            latent_dim,
            hidden,
            in_dim,
            n_layers,
            rng,
        )?;
        Ok(Self {
            encoder,
            q_mean,
            q_logvar,
            decoder,
            beta,
        })
    }

    /// The posterior `(mean, logvar)` of `x`.
    pub(crate) fn posterior(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.encoder.forward(x)?.relu()?;
        Ok((self.q_mean.forward(&h)?, self.q_logvar.forward(&h)?))
    }

    /// The posterior mean: what the GW sees.
    pub(crate) fn encode(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.posterior(x)?.0)
    }

    /// Decodes a latent back to the plugin's latent space.
    pub(crate) fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decoder.forward(z)
    }

    /// shimmer's VAE training loss with the reparameterisation noise `eps`
    /// (`[batch, latent_dim]`, standard normal).
    pub(crate) fn loss(&self, x: &Tensor, eps: &Tensor) -> Result<VaeLoss> {
        let (mean, logvar) = self.posterior(x)?;
        let z = reparameterize(&mean, &logvar, eps)?;
        let x_hat = self.decode(&z)?;
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
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    #[test]
    fn kl_matches_hand_computation() {
        let mean = t(&[0.0, 1.0, -2.0, 0.5], &[2, 2]);
        let logvar = t(&[0.0, 0.5, -1.0, 2.0], &[2, 2]);
        // -0.5 * sum(1 + lv - m^2 - exp(lv)) element by element:
        // (1+0-0-1)=0; (1+0.5-1-e^0.5); (1-1-4-e^-1); (1+2-0.25-e^2)
        let want =
            -0.5 * (0.0 + (0.5 - 0.5f64.exp()) + (-4.0 - (-1.0f64).exp()) + (2.75 - 2.0f64.exp()));
        let got = scalar(&kl_divergence_loss(&mean, &logvar).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Zero for the prior itself.
        let z = Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(scalar(&kl_divergence_loss(&z, &z).unwrap()), 0.0);
    }

    #[test]
    fn gaussian_nll_matches_hand_computation() {
        let mu = t(&[1.0, 0.0], &[1, 2]);
        let x = t(&[2.0, -3.0], &[1, 2]);
        let log_sigma = t(&[0.0, 1.0], &[1, 2]);
        let c = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let want = [
            0.5 * 1.0 + 0.0 + c,
            0.5 * (3.0 / 1.0f64.exp()).powi(2) + 1.0 + c,
        ];
        let got = gaussian_nll(&mu, &log_sigma, &x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{g} vs {w}");
        }
        // A scalar log_sigma broadcasts, as shimmer's `torch.tensor(0)`.
        let zero = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).unwrap();
        let got = scalar(&gaussian_nll(&mu, &zero, &x).unwrap().sum_all().unwrap());
        assert!((got - (0.5 * (1.0 + 9.0) + 2.0 * c)).abs() < 1e-5, "{got}");
    }

    #[test]
    fn reparameterize_scales_and_shifts() {
        let mean = t(&[1.0, -1.0], &[1, 2]);
        let logvar = t(&[0.0, 2.0f32.ln() * 2.0], &[1, 2]);
        let eps = t(&[0.5, 0.5], &[1, 2]);
        let z = reparameterize(&mean, &logvar, &eps)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // std = [1, 2]
        assert!(
            (z[0] - 1.5).abs() < 1e-6 && (z[1] - 0.0).abs() < 1e-6,
            "{z:?}"
        );
    }
}
