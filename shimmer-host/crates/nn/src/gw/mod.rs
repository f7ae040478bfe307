//! The parts of a Global Workspace below its losses: the batch types the
//! whole crate speaks ([`Batch`], [`Latents`], [`GroupKey`], [`DomainSpec`]),
//! the GW module of encoders, decoders and fusion ([`module`]) and the
//! selection modules ([`selection`]).

pub mod module;
pub mod selection;

use candle_core::Tensor;
use indexmap::IndexMap;
use shimmer_plugin_api::LossSpec;
use std::fmt;

/// Latents (or encodings) of the domains of one group: `domain -> [B, dim]`.
pub type Latents = IndexMap<String, Tensor>;

/// A batch: `group -> {domain -> latents}`, groups in iteration order.
pub type Batch = IndexMap<GroupKey, Latents>;

/// A group: the ordered set of domains whose items are paired.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey(Vec<String>);

impl GroupKey {
    /// A group of these domains, in this order.
    pub fn new<S: Into<String>>(domains: impl IntoIterator<Item = S>) -> Self {
        Self(domains.into_iter().map(Into::into).collect())
    }

    /// Parses `a+b` (the parity files' notation).
    pub fn parse(s: &str) -> Self {
        Self::new(s.split('+'))
    }

    /// The domains, in order.
    pub fn domains(&self) -> &[String] {
        &self.0
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the group has no domain.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("+"))
    }
}

/// A model domain: its name, latent size and loss spec.
#[derive(Clone, Debug)]
pub struct DomainSpec {
    /// Domain name.
    pub name: String,
    /// Size of its latent vector.
    pub latent_dim: usize,
    /// How its reconstruction / translation losses are computed.
    pub loss: LossSpec,
}

impl DomainSpec {
    /// A domain with shimmer's default loss (MSE over the whole latent).
    pub fn mse(name: &str, latent_dim: usize) -> Self {
        Self {
            name: name.to_string(),
            latent_dim,
            loss: LossSpec::mse(latent_dim),
        }
    }
}
