//! Domain models: what the host runs in candle between a plugin's latents
//! (`input_dim`) and the latents the GW sees (`latent_dim`) — identity, a
//! linear or MLP autoencoder, shimmer's `VAE`, or shimmer-ssd's visual
//! (`conv_vae`) and attribute (`attribute_vae`) VAEs — configured per domain in
//! YAML, pretrained on the plugin's data by their own experiment (shimmer's
//! tutorial step 1), saved, and loaded (usually frozen) by GW experiments.
//!
//! ```yaml
//! domains:
//!   - name: v
//!     plugin: random_vectors
//!     model: { type: linear, latent_dim: 32,
//!              checkpoint: runs/pretrain_v/checkpoints/best.safetensors }
//!   - name: t
//!     plugin: random_vectors
//!     model: { type: vae, latent_dim: 32, hidden: 64, n_layers: 1, beta: 0.5,
//!              frozen: false }
//! ```
//!
//! A trainer pretrains with [`DomainModel::pretrain_loss`] (backward it,
//! step an [`Optimizer`](shimmer_nn::optim::Optimizer) over
//! `params().params()`), saves with [`DomainModel::save`], and in a GW
//! experiment builds the model with [`DomainModel::from_spec`] and calls
//! [`DomainModel::encode`] on plugin latents (detaching and caching the
//! result when the spec is `frozen`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use rand::SeedableRng;
//! use shimmer_models::domain_model::{DomainModel, DomainModelConfig, Mode};
//!
//! let cfg = DomainModelConfig::Linear { latent_dim: 32 };
//! let model = DomainModel::new(&cfg, 8, &Device::Cpu, 0).unwrap();
//! let x = Tensor::zeros((4, 8), DType::F32, &Device::Cpu).unwrap();
//! assert_eq!(model.encode(&x).unwrap().dims(), [4, 32]);
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let (loss, metrics) = model.pretrain_loss(&x, &mut rng, Mode::Train).unwrap();
//! let _grads = loss.backward().unwrap();
//! assert_eq!(metrics[0].0, "reconstruction_loss");
//! ```

pub mod attribute_vae;
mod autoencoder;
pub mod conv_vae;
#[cfg(test)]
mod tests;
pub mod vae;

pub use shimmer_config::domain_model::{DomainModelConfig, DomainModelSpec};

use anyhow::{Context, Result, bail};
use attribute_vae::AttributeVae;
use autoencoder::Autoencoder;
use candle_core::{DType, Device, Tensor};
use conv_vae::ConvVae;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use shimmer_nn::checkpoint;
pub use shimmer_nn::layers::Mode;
use shimmer_nn::params::ParamStore;
use std::path::Path;
use vae::Vae;

/// Metric name of the reconstruction term (mean squared error for
/// autoencoders, summed Gaussian NLL for the VAE), as shimmer's domain
/// modules log it.
pub const RECONSTRUCTION_LOSS: &str = "reconstruction_loss";
/// Metric name of the VAE's KL term, as shimmer's domain modules log it.
pub const KL_LOSS: &str = "kl_loss";
/// Metric name of the pretraining loss.
pub const LOSS: &str = "loss";

/// The layers behind a [`DomainModel`].
#[derive(Debug, Clone)]
enum Net {
    Identity,
    Autoencoder(Autoencoder),
    Vae(Vae),
    ConvVae(ConvVae),
    AttributeVae(AttributeVae),
}

/// A domain model built from its [`DomainModelConfig`]: its weights (a
/// [`ParamStore`]) and its forward passes, on one device.
#[derive(Debug, Clone)]
pub struct DomainModel {
    config: DomainModelConfig,
    input_dim: usize,
    latent_dim: usize,
    net: Net,
    params: ParamStore,
}

impl DomainModel {
    /// Builds `config` for plugin latents of size `input_dim` on `device`,
    /// its weights drawn with PyTorch's `nn.Linear` init from a RNG seeded
    /// with `seed`.
    pub fn new(
        config: &DomainModelConfig,
        input_dim: usize,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        config.check()?;
        if input_dim == 0 {
            bail!("domain model {config}: the plugin's latent_dim (input_dim) must be at least 1");
        }
        let mut params = ParamStore::new(device, DType::F32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (net, latent_dim) = match *config {
            DomainModelConfig::Identity => (Net::Identity, input_dim),
            DomainModelConfig::Linear { latent_dim } => (
                Net::Autoencoder(Autoencoder::linear(
                    &mut params,
                    input_dim,
                    latent_dim,
                    &mut rng,
                )?),
                latent_dim,
            ),
            DomainModelConfig::Mlp {
                latent_dim,
                hidden,
                n_layers,
            } => (
                Net::Autoencoder(Autoencoder::mlp(
                    &mut params,
                    input_dim,
                    latent_dim,
                    hidden,
                    n_layers,
                    &mut rng,
                )?),
                latent_dim,
            ),
            DomainModelConfig::Vae {
                latent_dim,
                hidden,
                n_layers,
                beta,
            } => (
                Net::Vae(Vae::new(
                    &mut params,
                    input_dim,
                    latent_dim,
                    hidden,
                    n_layers,
                    beta,
                    &mut rng,
                )?),
                latent_dim,
            ),
            DomainModelConfig::ConvVae {
                latent_dim,
                ae_dim,
                channels,
                beta,
            } => (
                Net::ConvVae(ConvVae::new(
                    &mut params,
                    input_dim,
                    channels,
                    ae_dim,
                    latent_dim,
                    beta,
                    &mut rng,
                )?),
                latent_dim,
            ),
            DomainModelConfig::AttributeVae {
                latent_dim,
                hidden,
                classes,
                beta,
                coef_categories,
                coef_attributes,
            } => (
                Net::AttributeVae(AttributeVae::new(
                    &mut params,
                    input_dim,
                    classes,
                    hidden,
                    latent_dim,
                    beta,
                    (coef_categories, coef_attributes),
                    &mut rng,
                )?),
                latent_dim,
            ),
        };
        Ok(Self {
            config: *config,
            input_dim,
            latent_dim,
            net,
            params,
        })
    }

    /// Builds `spec.arch` as [`DomainModel::new`] does, then loads
    /// `spec.checkpoint` when given. (`spec.frozen` is the caller's to
    /// honour: it decides whether the parameters are optimised.)
    pub fn from_spec(
        spec: &DomainModelSpec,
        domain: &str,
        input_dim: usize,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let model = Self::new(&spec.arch, input_dim, device, seed)?;
        if let Some(path) = &spec.checkpoint {
            model.load_for(path, domain)?;
        }
        Ok(model)
    }

    /// The architecture this model was built from.
    pub fn config(&self) -> &DomainModelConfig {
        &self.config
    }

    /// Size of the plugin latents the model takes.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Size of the latents the GW sees (`input_dim` for identity).
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// The model's weights, named as shimmer's modules name them
    /// (`encoder.weight`, `vae.encoder.q_mean.bias`, …); empty for identity.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Whether the model has weights to train, save and load.
    pub fn has_params(&self) -> bool {
        !self.params.params().is_empty()
    }

    /// Plugin latents `[batch, input_dim]` to GW latents `[batch,
    /// latent_dim]` (the posterior mean for a VAE, no sampling), as in
    /// evaluation mode. The result tracks gradients to the weights; detach
    /// it for a frozen model.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        self.encode_in(x, Mode::Eval)
    }

    /// [`DomainModel::encode`] in `mode`: batch norm layers use the batch's
    /// statistics and update their running ones in [`Mode::Train`] (a
    /// domain model trained inside a GW).
    pub fn encode_in(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.check_width(x, self.input_dim, "encode", "input_dim")?;
        match &self.net {
            Net::Identity => Ok(x.clone()),
            Net::Autoencoder(ae) => ae.encode(x),
            Net::Vae(v) => v.encode(x),
            Net::ConvVae(v) => Ok(v.posterior(x, mode)?.0),
            Net::AttributeVae(v) => Ok(v.posterior(x)?.0),
        }
    }

    /// GW latents `[batch, latent_dim]` back to plugin latents `[batch,
    /// input_dim]`, as in evaluation mode.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.check_width(z, self.latent_dim, "decode", "latent_dim")?;
        match &self.net {
            Net::Identity => Ok(z.clone()),
            Net::Autoencoder(ae) => ae.decode(z),
            Net::Vae(v) => v.decode(z),
            Net::ConvVae(v) => v.decode(z, Mode::Eval),
            Net::AttributeVae(v) => v.decode(z),
        }
    }

    /// The pretraining loss on a batch of plugin latents `x` in `mode`
    /// (training steps in [`Mode::Train`], validation in [`Mode::Eval`]),
    /// and the named metrics to log (`reconstruction_loss`, `kl_loss` for a
    /// VAE and the reconstruction's own terms, `loss`).
    ///
    /// Autoencoders: `loss = reconstruction_loss =
    /// mean((decode(encode(x)) - x)^2)`. VAE: shimmer's `generic_step` (see
    /// [`vae`]), its noise drawn from `rng` so a seeded run repeats exactly
    /// on any device. Identity has nothing to train and is an error.
    pub fn pretrain_loss<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        rng: &mut R,
        mode: Mode,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        self.check_width(x, self.input_dim, "pretrain", "input_dim")?;
        match &self.net {
            Net::Identity => bail!("domain model identity has no weights to pretrain"),
            Net::Autoencoder(ae) => {
                let loss = ae.reconstruction_loss(x)?;
                Ok((
                    loss.clone(),
                    vec![
                        (RECONSTRUCTION_LOSS.to_string(), loss.clone()),
                        (LOSS.to_string(), loss),
                    ],
                ))
            }
            Net::Vae(_) | Net::ConvVae(_) | Net::AttributeVae(_) => {
                let eps = standard_normal(x.dim(0)?, self.latent_dim, x, rng)?;
                self.vae_loss(x, &eps, mode)
            }
        }
    }

    /// A VAE's loss with given noise (split out so tests can fix `eps`).
    fn vae_loss(
        &self,
        x: &Tensor,
        eps: &Tensor,
        mode: Mode,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let out = match &self.net {
            Net::Vae(v) => v.loss(x, eps)?,
            Net::ConvVae(v) => v.loss(x, eps, mode)?,
            Net::AttributeVae(v) => v.loss(x, eps)?,
            Net::Identity | Net::Autoencoder(_) => {
                bail!("domain model {} is not a VAE", self.config)
            }
        };
        let mut metrics: Vec<(String, Tensor)> = out
            .parts
            .into_iter()
            .map(|(name, t)| (name.to_string(), t))
            .collect();
        metrics.push((RECONSTRUCTION_LOSS.to_string(), out.reconstruction));
        metrics.push((KL_LOSS.to_string(), out.kl));
        metrics.push((LOSS.to_string(), out.loss.clone()));
        Ok((out.loss, metrics))
    }

    /// Writes the weights to `path` (safetensors, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        if !self.has_params() {
            bail!("domain model identity has no weights to save");
        }
        checkpoint::save_weights(path, &self.params)
            .with_context(|| format!("cannot save domain model {}", self.config))
    }

    /// Reads the weights from `path` (a file of [`DomainModel::save`], or a
    /// run checkpoint: optimiser entries are ignored). Every weight must be
    /// present with its shape; a file made for other dimensions is an error
    /// that says which dimensions it holds and which this domain needs.
    pub fn load(&self, path: &Path) -> Result<()> {
        if !self.has_params() {
            bail!(
                "domain model identity has no weights to load from {}",
                path.display()
            );
        }
        checkpoint::load_weights(path, &self.params).map_err(|err| self.explain(err, path))
    }

    /// Loads the weights of domain `domain`'s module from `path`, whichever
    /// kind of weights file it is ([`shimmer_nn::weights`]): this model's
    /// own checkpoint, a domain module's state dict or Lightning checkpoint,
    /// or a whole GW's (its `gw_mod.domain_mods.<domain>.*`).
    ///
    /// # Errors
    /// An unreadable file, or weights that do not fit (each named).
    pub fn load_for(&self, path: &Path, domain: &str) -> Result<()> {
        if !self.has_params() {
            bail!(
                "domain model identity has no weights to load from {}",
                path.display()
            );
        }
        let weights = shimmer_nn::weights::read(path)?;
        let tensors = shimmer_nn::weights::domain_module(
            &shimmer_nn::weights::canonical(&weights.tensors),
            domain,
        );
        shimmer_nn::weights::load_strict(&self.params, &tensors, &path.display().to_string())
            .map_err(|err| self.explain(err, path))
    }

    /// `err`, a failed load of `path`, with what is known of why.
    fn explain(&self, err: anyhow::Error, path: &Path) -> anyhow::Error {
        match self.dims_mismatch(path) {
            Some(msg) => err.context(msg),
            None => err.context(format!(
                "cannot load domain model {} for input_dim {} from {}",
                self.config,
                self.input_dim,
                path.display()
            )),
        }
    }

    /// A sentence explaining why the file at `path` does not fit, when it
    /// holds another architecture, or this one for other input or latent
    /// dimensions.
    fn dims_mismatch(&self, path: &Path) -> Option<String> {
        if matches!(self.net, Net::ConvVae(_) | Net::AttributeVae(_)) {
            return None;
        }
        shimmer_formats::file::open_regular(path).ok()?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).ok()?;
        let names: Vec<&String> = self.params.params().keys().collect();
        if !names.iter().any(|n| tensors.contains_key(*n)) {
            let mut found: Vec<&str> = tensors
                .keys()
                .map(String::as_str)
                .filter(|n| !n.starts_with("optimizer."))
                .collect();
            found.sort_unstable();
            return Some(format!(
                "{} holds no weights of a `{}` domain model (expected {}, ...; found {})",
                path.display(),
                self.config.type_name(),
                names.first()?,
                found.join(", ")
            ));
        }
        // The first weight reads the plugin latent; the decoder's first
        // weight reads the GW-side latent.
        let first = names.first()?;
        let dec_first = names
            .iter()
            .find(|n| n.starts_with("decoder.") || n.starts_with("vae.decoder."))?;
        let found_in = *tensors.get(*first)?.dims().get(1)?;
        let found_latent = *tensors.get(*dec_first)?.dims().get(1)?;
        if found_in == self.input_dim && found_latent == self.latent_dim {
            return None;
        }
        Some(format!(
            "{} holds a domain model for input_dim {found_in} and latent_dim {found_latent}, \
             but this domain needs input_dim {} (its plugin's latent_dim) and latent_dim {} \
             (model {})",
            path.display(),
            self.input_dim,
            self.latent_dim,
            self.config
        ))
    }

    /// Errors unless `t` is `[batch, width]`.
    fn check_width(&self, t: &Tensor, width: usize, what: &str, name: &str) -> Result<()> {
        match t.dims() {
            [_, w] if *w == width => Ok(()),
            dims => bail!(
                "domain model {} ({what}): expected a [batch, {width}] tensor ({name} {width}), \
                 got shape {dims:?}",
                self.config
            ),
        }
    }
}

/// `[rows, cols]` standard-normal noise drawn from `rng` on the host, then
/// moved to `like`'s device with its dtype (reproducible on every device).
fn standard_normal<R: Rng + ?Sized>(
    rows: usize,
    cols: usize,
    like: &Tensor,
    rng: &mut R,
) -> Result<Tensor> {
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| StandardNormal.sample(&mut *rng))
        .collect();
    Ok(Tensor::from_vec(values, (rows, cols), &Device::Cpu)?
        .to_dtype(like.dtype())?
        .to_device(like.device())?)
}
