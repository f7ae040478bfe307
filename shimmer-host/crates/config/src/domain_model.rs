//! YAML configuration of a domain model: its architecture
//! ([`DomainModelConfig`]) plus where its weights come from and whether the
//! GW experiment trains it ([`DomainModelSpec`]).
//!
//! In an experiment file the whole spec is one flat mapping, the
//! architecture chosen by `type`:
//!
//! ```yaml
//! model:
//!   type: linear            # identity | linear | mlp | vae | conv_vae | attribute_vae
//!   latent_dim: 32
//!   checkpoint: runs/pretrain_v/checkpoints/best.safetensors
//!   frozen: true            # the default
//! ```
//!
//! Every key is checked against its `type`: `hidden` under `type: linear`
//! is an error that lists the keys `linear` takes, as is a missing
//! `latent_dim`.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The architecture of a domain model: what sits between a plugin's
/// latents (`input_dim`) and the latents the GW sees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DomainModelConfig {
    /// The GW sees the plugin's latents unchanged.
    Identity,
    /// A linear autoencoder, as shimmer's tutorial `GenericDomain`:
    /// `encoder = Linear(in, latent)`, `decoder = Linear(latent, in)`.
    Linear {
        /// Size of the latent the GW sees.
        latent_dim: usize,
    },
    /// An MLP autoencoder: encoder and decoder are each
    /// `Linear(in,h) ReLU [Linear(h,h) ReLU] x n_layers Linear(h,out)`.
    Mlp {
        /// Size of the latent the GW sees.
        latent_dim: usize,
        /// Width of the hidden layers.
        hidden: usize,
        /// Number of extra `Linear(h,h) ReLU` pairs.
        #[serde(default = "one")]
        n_layers: usize,
    },
    /// shimmer's `VAE` with an MLP encoder (heads `q_mean`, `q_logvar`) and
    /// MLP decoder; the GW sees the posterior mean.
    Vae {
        /// Size of the latent the GW sees.
        latent_dim: usize,
        /// Width of the hidden layers.
        hidden: usize,
        /// Number of extra `Linear(h,h) ReLU` pairs.
        #[serde(default = "one")]
        n_layers: usize,
        /// Weight of the KL term (beta-VAE); `>= 0`.
        #[serde(default = "unit_beta")]
        beta: f64,
    },
    /// shimmer-ssd's visual VAE for `channels x 32 x 32` images: four
    /// stride-2 convolutions with batch norm and ReLU (channels `ae_dim/8`
    /// to `ae_dim`), a transposed-convolution decoder, sigmoid output; the
    /// GW sees the posterior mean.
    ConvVae {
        /// Size of the latent the GW sees (shimmer-ssd's `z_dim`).
        latent_dim: usize,
        /// Channels of the deepest convolution (shimmer-ssd: 256).
        #[serde(default = "default_ae_dim")]
        ae_dim: usize,
        /// Image channels (3 for RGB).
        #[serde(default = "default_channels")]
        channels: usize,
        /// Weight of the KL term (beta-VAE); `>= 0`.
        #[serde(default = "unit_beta")]
        beta: f64,
    },
    /// shimmer-ssd's attribute VAE: an MLP encoder, a decoder with a class
    /// head (cross-entropy) and an attribute head (tanh, Gaussian NLL).
    AttributeVae {
        /// Size of the latent the GW sees.
        latent_dim: usize,
        /// Width of the hidden layers.
        hidden: usize,
        /// Number of one-hot class values at the start of an item.
        #[serde(default = "default_classes")]
        classes: usize,
        /// Weight of the KL term (beta-VAE); `>= 0`.
        #[serde(default = "unit_beta")]
        beta: f64,
        /// Weight of the class term of the reconstruction.
        #[serde(default = "unit_beta")]
        coef_categories: f64,
        /// Weight of the attributes term of the reconstruction.
        #[serde(default = "unit_beta")]
        coef_attributes: f64,
    },
}

fn default_ae_dim() -> usize {
    256
}

fn default_channels() -> usize {
    3
}

fn default_classes() -> usize {
    3
}

fn one() -> usize {
    1
}

fn unit_beta() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl DomainModelConfig {
    /// The `type` name as written in YAML.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Linear { .. } => "linear",
            Self::Mlp { .. } => "mlp",
            Self::Vae { .. } => "vae",
            Self::ConvVae { .. } => "conv_vae",
            Self::AttributeVae { .. } => "attribute_vae",
        }
    }

    /// Checks values serde cannot: positive sizes, `beta >= 0`.
    pub fn check(&self) -> Result<()> {
        let ty = self.type_name();
        let finite = |key: &str, v: f64| -> Result<()> {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("domain model `{ty}`: `{key}` must be a finite number >= 0, got {v}");
            }
            Ok(())
        };
        let (latent_dim, hidden) = match *self {
            Self::ConvVae {
                latent_dim,
                ae_dim,
                channels,
                beta,
            } => {
                finite("beta", beta)?;
                if ae_dim < 8 {
                    bail!(
                        "domain model `conv_vae`: `ae_dim` must be at least 8 (its first convolution has ae_dim / 8 channels), got {ae_dim}"
                    );
                }
                if channels == 0 {
                    bail!("domain model `conv_vae`: `channels` must be at least 1");
                }
                (latent_dim, None)
            }
            Self::AttributeVae {
                latent_dim,
                hidden,
                classes,
                beta,
                coef_categories,
                coef_attributes,
            } => {
                finite("beta", beta)?;
                finite("coef_categories", coef_categories)?;
                finite("coef_attributes", coef_attributes)?;
                if classes == 0 {
                    bail!("domain model `attribute_vae`: `classes` must be at least 1");
                }
                (latent_dim, Some(hidden))
            }
            Self::Identity => return Ok(()),
            Self::Linear { latent_dim } => (latent_dim, None),
            Self::Mlp {
                latent_dim, hidden, ..
            } => (latent_dim, Some(hidden)),
            Self::Vae {
                latent_dim,
                hidden,
                beta,
                ..
            } => {
                if !(beta >= 0.0 && beta.is_finite()) {
                    bail!("domain model `vae`: `beta` must be a finite number >= 0, got {beta}");
                }
                (latent_dim, Some(hidden))
            }
        };
        if latent_dim == 0 {
            bail!("domain model `{ty}`: `latent_dim` must be at least 1");
        }
        if hidden == Some(0) {
            bail!("domain model `{ty}`: `hidden` must be at least 1");
        }
        Ok(())
    }
}

impl fmt::Display for DomainModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Identity => f.write_str("identity"),
            Self::Linear { latent_dim } => write!(f, "linear (latent_dim {latent_dim})"),
            Self::Mlp {
                latent_dim,
                hidden,
                n_layers,
            } => write!(
                f,
                "mlp (latent_dim {latent_dim}, hidden {hidden}, n_layers {n_layers})"
            ),
            Self::Vae {
                latent_dim,
                hidden,
                n_layers,
                beta,
            } => write!(
                f,
                "vae (latent_dim {latent_dim}, hidden {hidden}, n_layers {n_layers}, beta {beta})"
            ),
            Self::ConvVae {
                latent_dim,
                ae_dim,
                channels,
                beta,
            } => write!(
                f,
                "conv_vae (latent_dim {latent_dim}, ae_dim {ae_dim}, channels {channels}, beta {beta})"
            ),
            Self::AttributeVae {
                latent_dim,
                hidden,
                classes,
                beta,
                ..
            } => write!(
                f,
                "attribute_vae (latent_dim {latent_dim}, hidden {hidden}, classes {classes}, beta {beta})"
            ),
        }
    }
}

/// A domain's model as configured in YAML: the architecture, the weights to
/// start from, and whether a GW experiment keeps it fixed.
///
/// Written as one flat mapping (see the [module docs](self)); the keys
/// allowed depend on `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSpec", into = "RawSpec")]
pub struct DomainModelSpec {
    /// The architecture.
    pub arch: DomainModelConfig,
    /// Weights to load (a safetensors file written by a pretraining run);
    /// `None` starts from the seeded random initialisation.
    pub checkpoint: Option<PathBuf>,
    /// Whether a GW experiment keeps the model fixed (its outputs are then
    /// computed once and cached). Pretraining trains it regardless.
    pub frozen: bool,
}

impl Default for DomainModelSpec {
    /// The identity model: the GW sees the plugin's latents.
    fn default() -> Self {
        Self {
            arch: DomainModelConfig::Identity,
            checkpoint: None,
            frozen: true,
        }
    }
}

/// The flat YAML form of [`DomainModelSpec`], checked per `type` on
/// conversion.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latent_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hidden: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n_layers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    beta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ae_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coef_categories: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coef_attributes: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<PathBuf>,
    #[serde(default = "yes")]
    frozen: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Identity,
    Linear,
    Mlp,
    Vae,
    ConvVae,
    AttributeVae,
}

impl TryFrom<RawSpec> for DomainModelSpec {
    type Error = String;

    fn try_from(raw: RawSpec) -> Result<Self, String> {
        let (ty, allowed): (&str, &[&str]) = match raw.kind {
            Kind::Identity => ("identity", &[]),
            Kind::Linear => ("linear", &["latent_dim"]),
            Kind::Mlp => ("mlp", &["latent_dim", "hidden", "n_layers"]),
            Kind::Vae => ("vae", &["latent_dim", "hidden", "n_layers", "beta"]),
            Kind::ConvVae => ("conv_vae", &["latent_dim", "ae_dim", "channels", "beta"]),
            Kind::AttributeVae => (
                "attribute_vae",
                &[
                    "latent_dim",
                    "hidden",
                    "classes",
                    "beta",
                    "coef_categories",
                    "coef_attributes",
                ],
            ),
        };
        let given = [
            ("latent_dim", raw.latent_dim.is_some()),
            ("hidden", raw.hidden.is_some()),
            ("n_layers", raw.n_layers.is_some()),
            ("beta", raw.beta.is_some()),
            ("ae_dim", raw.ae_dim.is_some()),
            ("channels", raw.channels.is_some()),
            ("classes", raw.classes.is_some()),
            ("coef_categories", raw.coef_categories.is_some()),
            ("coef_attributes", raw.coef_attributes.is_some()),
        ];
        for (key, present) in given {
            if present && !allowed.contains(&key) {
                let mut keys: Vec<&str> = vec!["type"];
                keys.extend(allowed);
                keys.extend(["checkpoint", "frozen"]);
                return Err(format!(
                    "domain model type `{ty}` takes no `{key}` (its keys: {})",
                    keys.join(", ")
                ));
            }
        }
        let need = |key: &str, v: Option<usize>| {
            v.ok_or_else(|| format!("domain model type `{ty}` needs `{key}`"))
        };
        let arch = match raw.kind {
            Kind::Identity => DomainModelConfig::Identity,
            Kind::Linear => DomainModelConfig::Linear {
                latent_dim: need("latent_dim", raw.latent_dim)?,
            },
            Kind::Mlp => DomainModelConfig::Mlp {
                latent_dim: need("latent_dim", raw.latent_dim)?,
                hidden: need("hidden", raw.hidden)?,
                n_layers: raw.n_layers.unwrap_or(1),
            },
            Kind::Vae => DomainModelConfig::Vae {
                latent_dim: need("latent_dim", raw.latent_dim)?,
                hidden: need("hidden", raw.hidden)?,
                n_layers: raw.n_layers.unwrap_or(1),
                beta: raw.beta.unwrap_or(1.0),
            },
            Kind::ConvVae => DomainModelConfig::ConvVae {
                latent_dim: need("latent_dim", raw.latent_dim)?,
                ae_dim: raw.ae_dim.unwrap_or_else(default_ae_dim),
                channels: raw.channels.unwrap_or_else(default_channels),
                beta: raw.beta.unwrap_or(1.0),
            },
            Kind::AttributeVae => DomainModelConfig::AttributeVae {
                latent_dim: need("latent_dim", raw.latent_dim)?,
                hidden: need("hidden", raw.hidden)?,
                classes: raw.classes.unwrap_or_else(default_classes),
                beta: raw.beta.unwrap_or(1.0),
                coef_categories: raw.coef_categories.unwrap_or(1.0),
                coef_attributes: raw.coef_attributes.unwrap_or(1.0),
            },
        };
        if matches!(arch, DomainModelConfig::Identity) && raw.checkpoint.is_some() {
            return Err(
                "domain model type `identity` has no weights to load from `checkpoint`".into(),
            );
        }
        arch.check().map_err(|e| e.to_string())?;
        Ok(Self {
            arch,
            checkpoint: raw.checkpoint,
            frozen: raw.frozen,
        })
    }
}

impl From<DomainModelSpec> for RawSpec {
    fn from(spec: DomainModelSpec) -> Self {
        let mut raw = RawSpec {
            kind: Kind::Identity,
            latent_dim: None,
            hidden: None,
            n_layers: None,
            beta: None,
            ae_dim: None,
            channels: None,
            classes: None,
            coef_categories: None,
            coef_attributes: None,
            checkpoint: spec.checkpoint,
            frozen: spec.frozen,
        };
        match spec.arch {
            DomainModelConfig::Identity => {}
            DomainModelConfig::Linear { latent_dim } => {
                raw.kind = Kind::Linear;
                raw.latent_dim = Some(latent_dim);
            }
            DomainModelConfig::Mlp {
                latent_dim,
                hidden,
                n_layers,
            } => {
                raw.kind = Kind::Mlp;
                raw.latent_dim = Some(latent_dim);
                raw.hidden = Some(hidden);
                raw.n_layers = Some(n_layers);
            }
            DomainModelConfig::Vae {
                latent_dim,
                hidden,
                n_layers,
                beta,
            } => {
                raw.kind = Kind::Vae;
                raw.latent_dim = Some(latent_dim);
                raw.hidden = Some(hidden);
                raw.n_layers = Some(n_layers);
                raw.beta = Some(beta);
            }
            DomainModelConfig::ConvVae {
                latent_dim,
                ae_dim,
                channels,
                beta,
            } => {
                raw.kind = Kind::ConvVae;
                raw.latent_dim = Some(latent_dim);
                raw.ae_dim = Some(ae_dim);
                raw.channels = Some(channels);
                raw.beta = Some(beta);
            }
            DomainModelConfig::AttributeVae {
                latent_dim,
                hidden,
                classes,
                beta,
                coef_categories,
                coef_attributes,
            } => {
                raw.kind = Kind::AttributeVae;
                raw.latent_dim = Some(latent_dim);
                raw.hidden = Some(hidden);
                raw.classes = Some(classes);
                raw.beta = Some(beta);
                raw.coef_categories = Some(coef_categories);
                raw.coef_attributes = Some(coef_attributes);
            }
        }
        raw
    }
}
