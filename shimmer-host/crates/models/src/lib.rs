//! The domain models the host trains between a plugin's latents and the
//! latents a Global Workspace sees ([`domain_model`]): identity, linear and
//! MLP autoencoders, shimmer's `VAE`, and shimmer-ssd's visual
//! (`conv_vae`) and attribute (`attribute_vae`) VAEs, built from
//! `shimmer-nn`'s layers and saved under their PyTorch names.

pub mod domain_model;

pub use domain_model::{DomainModel, DomainModelConfig, DomainModelSpec, Mode};
