//! A domain's latents passed through its frozen domain model: the model
//! becomes part of the data, so the latent cache stores its outputs and
//! each item is encoded once (shimmer caches frozen domains the same way).

use super::source::ItemSource;
use crate::domain_model::DomainModel;
use anyhow::{Context, Result};
use candle_core::Tensor;
use shimmer_plugin_api::Split;
use std::sync::Arc;

/// `inner`'s latents encoded by a frozen `model`.
pub struct ModelSource {
    inner: Arc<dyn ItemSource>,
    model: DomainModel,
    /// Identifies the model's weights in cache keys.
    weights_digest: u64,
}

impl ModelSource {
    /// Wraps `inner` (whose latent size must be the model's input size).
    pub fn new(inner: Arc<dyn ItemSource>, model: DomainModel) -> Result<Self> {
        anyhow::ensure!(
            inner.latent_dim() == model.input_dim(),
            "{} gives latents of size {}, but the domain model takes {}",
            inner.describe(),
            inner.latent_dim(),
            model.input_dim()
        );
        let mut bytes = Vec::new();
        for (name, t) in model.params().tensors() {
            bytes.extend_from_slice(name.as_bytes());
            let values = t
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        Ok(Self {
            inner,
            model,
            weights_digest: super::batch::fnv1a(&bytes),
        })
    }
}

impl ItemSource for ModelSource {
    fn latent_dim(&self) -> usize {
        self.model.latent_dim()
    }

    fn split_size(&self, split: Split) -> u64 {
        self.inner.split_size(split)
    }

    fn load_latents(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<()> {
        let n = indices.len();
        let mut raw = vec![0.0f32; n * self.inner.latent_dim()];
        self.inner.load_latents(split, indices, &mut raw)?;
        let device = self.model.params().device();
        let x = Tensor::from_vec(raw, (n, self.inner.latent_dim()), device)?
            .to_dtype(self.model.params().dtype())?;
        let z = self
            .model
            .encode(&x)
            .with_context(|| format!("{}: frozen domain model", self.describe()))?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        out.copy_from_slice(&z);
        Ok(())
    }

    fn cache_key(&self) -> Option<String> {
        self.inner.cache_key().map(|k| {
            format!(
                "{k}\nmodel={}\nweights={:016x}",
                self.model.config(),
                self.weights_digest
            )
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} through a frozen {}",
            self.inner.describe(),
            self.model.config()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::MemorySource;
    use crate::domain_model::DomainModelConfig;
    use candle_core::Device;

    #[test]
    fn encodes_with_the_model_and_keys_the_cache_by_its_weights() {
        let inner: Arc<dyn ItemSource> = Arc::new(
            MemorySource::from_fn(3, [4, 0, 0], |_, i, j| (i * 3 + j as u64) as f32)
                .with_cache_key("mem"),
        );
        let cfg = DomainModelConfig::Linear { latent_dim: 5 };
        let model = DomainModel::new(&cfg, 3, &Device::Cpu, 7).unwrap();
        let x = Tensor::new(&[[3f32, 4., 5.], [9., 10., 11.]], &Device::Cpu).unwrap();
        let want = model
            .encode(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let src = ModelSource::new(inner.clone(), model).unwrap();
        assert_eq!(src.latent_dim(), 5);
        let mut out = vec![0.0; 10];
        src.load_latents(Split::Train, &[1, 3], &mut out).unwrap();
        assert_eq!(out, want);

        let other = DomainModel::new(&cfg, 3, &Device::Cpu, 8).unwrap();
        let other = ModelSource::new(inner.clone(), other).unwrap();
        assert_ne!(src.cache_key(), other.cache_key());
        assert!(src.cache_key().unwrap().starts_with("mem\n"));

        let wrong = DomainModel::new(&cfg, 4, &Device::Cpu, 7).unwrap();
        assert!(ModelSource::new(inner, wrong).is_err());
    }
}
