//! shimmer's tutorial domains as a plugin: seeded standard-normal vectors.
//!
//! Domain kind `vectors`; config (JSON, from the experiment's YAML):
//!
//! ```yaml
//! plugin: random-vectors
//! kind: vectors
//! config: { dim: 8, seed: 0, train: 256, val: 128, test: 128 }
//! ```
//!
//! Item `i` of a split depends only on `(seed, split, dim, i)`, so any
//! number of loader threads, in any order, read the same data.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;
use shimmer_plugin_api::{
    Domain, DomainInfo, Plugin, PluginError, Split, SplitSizes, export_plugin, parse_config,
};

/// Settings of one `vectors` domain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorsConfig {
    /// Length of each vector.
    dim: usize,
    /// Seed of the data; two domains with different seeds are independent.
    #[serde(default)]
    seed: u64,
    /// Training items.
    #[serde(default = "default_train")]
    train: u64,
    /// Validation items.
    #[serde(default = "default_eval")]
    val: u64,
    /// Test items.
    #[serde(default = "default_eval")]
    test: u64,
}

fn default_train() -> u64 {
    1024
}

fn default_eval() -> u64 {
    128
}

/// Standard-normal vectors of a fixed length.
struct Vectors {
    config: VectorsConfig,
}

impl Vectors {
    /// The generator of one item: seeded from everything that identifies it.
    fn item_rng(&self, split: Split, index: u64) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.config.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&u64::from(split.code()).to_le_bytes());
        seed[16..24].copy_from_slice(&index.to_le_bytes());
        seed[24..].copy_from_slice(&(self.config.dim as u64).to_le_bytes());
        ChaCha8Rng::from_seed(seed)
    }
}

impl Domain for Vectors {
    fn info(&self) -> DomainInfo {
        DomainInfo {
            latent_dim: self.config.dim,
            item_len: self.config.dim,
            split_sizes: SplitSizes {
                train: self.config.train,
                val: self.config.val,
                test: self.config.test,
            },
            has_encode: false,
            has_decode: false,
        }
    }

    fn load(&self, split: Split, indices: &[u64], out: &mut [f32]) -> Result<(), PluginError> {
        for (item, &index) in out.chunks_exact_mut(self.config.dim).zip(indices) {
            let mut rng = self.item_rng(split, index);
            for x in item {
                *x = StandardNormal.sample(&mut rng);
            }
        }
        Ok(())
    }
}

/// The plugin: one domain kind, `vectors`.
struct RandomVectors;

impl Plugin for RandomVectors {
    const NAME: &'static str = "random-vectors";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DOMAIN_KINDS: &'static [&'static str] = &["vectors"];

    fn create_domain(_kind: &str, config_json: &str) -> Result<Box<dyn Domain>, PluginError> {
        let config: VectorsConfig = parse_config(config_json)?;
        if config.dim == 0 {
            return Err("`dim` must be at least 1".into());
        }
        Ok(Box::new(Vectors { config }))
    }
}

export_plugin!(RandomVectors);

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(json: &str) -> Box<dyn Domain> {
        RandomVectors::create_domain("vectors", json).unwrap()
    }

    #[test]
    fn items_do_not_depend_on_what_else_is_loaded() {
        let d = domain(r#"{"dim": 4, "seed": 3}"#);
        let mut both = vec![0.0; 8];
        d.load(Split::Train, &[5, 9], &mut both).unwrap();
        let mut one = vec![0.0; 4];
        d.load(Split::Train, &[9], &mut one).unwrap();
        assert_eq!(&both[4..], &one[..]);
        assert_ne!(&both[..4], &one[..]);
    }

    #[test]
    fn values_look_standard_normal() {
        let d = domain(r#"{"dim": 16, "train": 4000}"#);
        let indices: Vec<u64> = (0..4000).collect();
        let mut x = vec![0.0f32; 16 * 4000];
        d.load(Split::Train, &indices, &mut x).unwrap();
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
    }

    #[test]
    fn bad_config_is_rejected_with_the_setting_named() {
        let err = RandomVectors::create_domain("vectors", r#"{"dims": 4}"#)
            .err()
            .unwrap();
        assert!(err.message().contains("dims"), "{err}");
        assert!(RandomVectors::create_domain("vectors", r#"{"dim": 0}"#).is_err());
    }
}
