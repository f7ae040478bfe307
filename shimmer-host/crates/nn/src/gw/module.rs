//! shimmer's `GWModule`: per-domain encoders and decoders, the fusion of
//! pre-fusion encodings into the workspace, and the translation / cycle
//! helpers built from them.

use super::Latents;
use super::selection::Selection;
use crate::layers::{GwMlp, gw_mlp};
use crate::params::ParamStore;
use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use indexmap::IndexMap;
use rand::Rng;
use shimmer_config::{Activation, MlpConfig};

/// Encoders `latent_dim_d -> workspace` and decoders `workspace ->
/// latent_dim_d` for every model domain, in model order.
#[derive(Debug, Clone)]
pub struct GwModule {
    encoders: IndexMap<String, GwMlp>,
    decoders: IndexMap<String, GwMlp>,
    latent_dims: IndexMap<String, usize>,
    workspace_dim: usize,
    activation: Activation,
    #[cfg_attr(not(feature = "fused-kernels"), allow(dead_code))]
    ops: crate::ops::Ops,
}

impl GwModule {
    /// Builds encoders (`gw_mod.gw_encoders.<d>.…`) for every domain, then
    /// decoders (`gw_mod.gw_decoders.<d>.…`), registering them in `store`.
    pub fn new(
        domains: &[(String, usize)],
        workspace_dim: usize,
        encoders: &MlpConfig,
        decoders: &MlpConfig,
        activation: Activation,
        store: &mut ParamStore,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let mut enc = IndexMap::new();
        let mut dec = IndexMap::new();
        for (name, dim) in domains {
            let prefix = format!("gw_mod.gw_encoders.{name}");
            let mlp = gw_mlp(
                store,
                &prefix,
                *dim,
                encoders.hidden,
                workspace_dim,
                encoders.n_layers,
                rng,
            )?;
            enc.insert(name.clone(), mlp);
        }
        for (name, dim) in domains {
            let prefix = format!("gw_mod.gw_decoders.{name}");
            let mlp = gw_mlp(
                store,
                &prefix,
                workspace_dim,
                decoders.hidden,
                *dim,
                decoders.n_layers,
                rng,
            )?;
            dec.insert(name.clone(), mlp);
        }
        Ok(Self {
            encoders: enc,
            decoders: dec,
            latent_dims: domains.iter().cloned().collect(),
            workspace_dim,
            activation,
            ops: store.ops(),
        })
    }

    /// Parameters the encoders and decoders of a workspace of these sizes
    /// hold, computed without building it.
    pub fn parameter_count(
        domains: &[(String, usize)],
        workspace_dim: usize,
        encoders: &MlpConfig,
        decoders: &MlpConfig,
    ) -> u128 {
        domains
            .iter()
            .map(|(_, dim)| {
                crate::layers::gw_mlp_parameters(
                    *dim,
                    encoders.hidden,
                    workspace_dim,
                    encoders.n_layers,
                ) + crate::layers::gw_mlp_parameters(
                    workspace_dim,
                    decoders.hidden,
                    *dim,
                    decoders.n_layers,
                )
            })
            .sum()
    }

    /// Model domain names, in model order.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.encoders.keys().map(String::as_str)
    }

    /// Latent size of a model domain.
    pub fn latent_dim(&self, domain: &str) -> Option<usize> {
        self.latent_dims.get(domain).copied()
    }

    /// Workspace size.
    pub fn workspace_dim(&self) -> usize {
        self.workspace_dim
    }

    /// Pre-fusion encodings `e_d(z_d)` of every domain of `x`, same order.
    pub fn encode(&self, x: &Latents) -> Result<Latents> {
        x.iter()
            .map(|(d, z)| {
                let enc = self
                    .encoders
                    .get(d)
                    .with_context(|| format!("the workspace has no domain `{d}`"))?;
                Ok((d.clone(), enc.forward(z)?))
            })
            .collect()
    }

    /// `activation(Σ_d s_d · e_d)`, summed in the order of `scores`.
    pub fn fuse(&self, encodings: &Latents, scores: &Latents) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for (d, s) in scores {
            let e = encodings
                .get(d)
                .with_context(|| format!("no encoding for scored domain `{d}`"))?;
            let term = s.unsqueeze(1)?.broadcast_mul(e)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
        let Some(sum) = acc else {
            bail!("cannot fuse an empty group of domains");
        };
        self.activate(&sum)
    }

    /// Decodes a workspace state into `domains` (all model domains when
    /// `None`), in the order given.
    pub fn decode(&self, gw: &Tensor, domains: Option<&[&str]>) -> Result<Latents> {
        let all: Vec<&str>;
        let names = match domains {
            Some(d) => d,
            None => {
                all = self.domains().collect();
                &all
            }
        };
        names
            .iter()
            .map(|d| {
                let dec = self
                    .decoders
                    .get(*d)
                    .with_context(|| format!("the workspace has no domain `{d}`"))?;
                Ok((d.to_string(), dec.forward(gw)?))
            })
            .collect()
    }

    /// Encodes `x`, scores it with `selection`, and fuses: the workspace state.
    pub fn encode_and_fuse(&self, x: &Latents, selection: &Selection) -> Result<Tensor> {
        let enc = self.encode(x)?;
        self.fuse_selected(x, &enc, selection)
    }

    /// Scores the `encodings` of the latents `x` with `selection` and fuses
    /// them. A single domain is just `activation(e)`: its score is always 1,
    /// so the selection (and its random draws) is not consulted.
    pub fn fuse_selected(
        &self,
        x: &Latents,
        encodings: &Latents,
        selection: &Selection,
    ) -> Result<Tensor> {
        if encodings.len() == 1
            && let Some(e) = encodings.values().next()
        {
            return self.activate(e);
        }
        let scores = selection.scores(x, encodings)?;
        self.fuse(encodings, &scores)
    }

    fn activate(&self, sum: &Tensor) -> Result<Tensor> {
        Ok(match self.activation {
            #[cfg(feature = "fused-kernels")]
            Activation::Tanh if self.ops == crate::ops::Ops::Fused => {
                shimmer_kernels::elementwise::tanh(sum)?
            }
            Activation::Tanh => sum.tanh()?,
            Activation::Identity => sum.clone(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(sum)?,
            Activation::Relu => sum.relu()?,
        })
    }

    /// Translation: fuses `x` and decodes into `target`.
    pub fn translate(&self, x: &Latents, selection: &Selection, target: &str) -> Result<Tensor> {
        let gw = self.encode_and_fuse(x, selection)?;
        one(self.decode(&gw, Some(&[target]))?, target)
    }

    /// Cycle: fuses `x`, decodes into `through`, fuses those predictions and
    /// decodes back into the domains of `x`.
    pub fn cycle(&self, x: &Latents, selection: &Selection, through: &[&str]) -> Result<Latents> {
        let gw = self.encode_and_fuse(x, selection)?;
        let mid = self.decode(&gw, Some(through))?;
        let back = self.encode_and_fuse(&mid, selection)?;
        let names: Vec<&str> = x.keys().map(String::as_str).collect();
        self.decode(&back, Some(&names))
    }
}

/// The only tensor of a one-domain map.
fn one(mut m: Latents, name: &str) -> Result<Tensor> {
    m.shift_remove(name)
        .with_context(|| format!("no output for domain `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use rand::SeedableRng;
    use shimmer_config::SelectionConfig;

    fn setup() -> (GwModule, Selection) {
        let mut store = ParamStore::new(&Device::Cpu, DType::F32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let doms = [("a".to_string(), 3), ("b".to_string(), 5)];
        let mlp = MlpConfig {
            hidden: 4,
            n_layers: 1,
        };
        let gw =
            GwModule::new(&doms, 6, &mlp, &mlp, Activation::Tanh, &mut store, &mut rng).unwrap();
        let sel = Selection::new(
            &SelectionConfig::FixedShared,
            &doms,
            6,
            &mut store,
            &mut rng,
            0,
        )
        .unwrap();
        (gw, sel)
    }

    fn latents(b: usize) -> Latents {
        [("a", 3), ("b", 5)]
            .into_iter()
            .map(|(n, d)| {
                (
                    n.to_string(),
                    Tensor::ones((b, d), DType::F32, &Device::Cpu).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn fuse_is_tanh_of_weighted_sum() {
        let (gw, sel) = setup();
        let x = latents(2);
        let enc = gw.encode(&x).unwrap();
        let fused = gw.encode_and_fuse(&x, &sel).unwrap();
        let want = ((&enc["a"] * 0.5).unwrap() + (&enc["b"] * 0.5).unwrap())
            .unwrap()
            .tanh()
            .unwrap();
        let diff = shimmer_kernels::test_util::max_abs_diff(&fused, &want);
        assert!(diff < 1e-7);
    }

    #[test]
    fn helpers_have_the_right_shapes() {
        let (gw, sel) = setup();
        let x = latents(2);
        let a_only: Latents = x
            .iter()
            .take(1)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(gw.translate(&a_only, &sel, "b").unwrap().dims(), [2, 5]);
        let back = gw.cycle(&a_only, &sel, &["b"]).unwrap();
        assert_eq!(back["a"].dims(), [2, 3]);
        assert_eq!(
            gw.decode(&gw.encode_and_fuse(&x, &sel).unwrap(), None)
                .unwrap()
                .len(),
            2
        );
        assert!(gw.translate(&a_only, &sel, "zz").is_err());
    }
}
