//! [`GlobalWorkspace`], number-for-number faithful to shimmer: the GW module
//! and selection of [`crate::gw`] tied to the losses of the configured
//! flavour ([`crate::losses`]).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use shimmer_config::{LossConfig, WorkspaceConfig};
//! use shimmer_nn::{Batch, DomainSpec, GlobalWorkspace, GroupKey};
//!
//! let ws: WorkspaceConfig = serde_norway::from_str("{flavour: two_domains, dim: 4}").unwrap();
//! let domains = [DomainSpec::mse("v", 3), DomainSpec::mse("t", 2)];
//! let gw = GlobalWorkspace::new(&ws, &LossConfig::default(), &domains, &Device::Cpu, 0).unwrap();
//! let mut batch = Batch::new();
//! let v = Tensor::randn(0f32, 1.0, (5, 3), &Device::Cpu).unwrap();
//! let t = Tensor::randn(0f32, 1.0, (5, 2), &Device::Cpu).unwrap();
//! batch.insert(GroupKey::new(["v"]), [("v".to_string(), v.clone())].into());
//! batch.insert(GroupKey::new(["v", "t"]), [("v".to_string(), v), ("t".to_string(), t)].into());
//! let out = gw.step_loss(&batch).unwrap();
//! assert!(out.metrics.iter().any(|(n, _)| n == "contrastive_v_and_t"));
//! let grads = out.loss.backward().unwrap();
//! ```

#[cfg(test)]
#[path = "workspace_tests.rs"]
mod tests;

use crate::gw::module::GwModule;
use crate::gw::selection::Selection;
use crate::gw::{Batch, DomainSpec};
use crate::losses::broadcast::broadcast_metrics;
use crate::losses::combine::{broadcast_loss, combine_loss};
use crate::losses::contrastive::{ContrastiveLoss, contrastive_metrics};
use crate::losses::two_domains::two_domain_metrics;
use crate::losses::{LossContext, Metrics, Prediction, Predictions, encode_batch, read_back};
use crate::params::ParamStore;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use indexmap::IndexMap;
use rand::SeedableRng;
use shimmer_config::{Flavour, LossConfig, WorkspaceConfig};
use shimmer_plugin_api::LossSpec;

/// Mixed into the seed of the selection RNG, so selection draws do not
/// replay the weight-initialisation stream.
const SELECTION_SEED_SALT: u64 = 0x5e1e_c710;

/// The total loss (with its graph, for `backward`) and every metric's value
/// under its shimmer name, in emission order.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The loss to minimise.
    pub loss: Tensor,
    /// Its value, read back with the metrics.
    pub loss_value: f32,
    /// Metric values, `loss` excluded.
    pub metrics: Vec<(String, f32)>,
}

/// A Global Workspace with its selection module and losses.
#[derive(Debug)]
pub struct GlobalWorkspace {
    store: ParamStore,
    gw: GwModule,
    selection: Selection,
    contrastive: ContrastiveLoss,
    specs: IndexMap<String, LossSpec>,
    flavour: Flavour,
    coefs: IndexMap<shimmer_config::LossFamily, f64>,
}

/// What training a workspace needs in memory, estimated from its sizes
/// before anything is built, so one that cannot fit is refused with the
/// estimate rather than ending in an allocation failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trained parameters of the encoders and decoders.
    pub parameters: u128,
    /// Bytes: each parameter four times in f32 (value, gradient, AdamW's
    /// two moments) plus the activations of one batch.
    pub bytes: u128,
}

/// [`MemoryEstimate`] of training a workspace `ws` over `domains` (name,
/// latent size) with batches of `batch` items per group. The activations
/// count every layer output of an encoder and decoder pass, kept for the
/// backward pass, for the four kinds of pass a step makes per domain
/// (demi-cycle, cycle, translation, contrastive encoding) and their
/// gradients: a rough figure, right in its order of magnitude.
pub fn memory_estimate(
    ws: &WorkspaceConfig,
    domains: &[(String, usize)],
    batch: usize,
) -> MemoryEstimate {
    let parameters = GwModule::parameter_count(domains, ws.dim, &ws.encoders, &ws.decoders);
    let widths: u128 = domains
        .iter()
        .map(|(_, dim)| {
            let enc = ws.encoders.hidden as u128 * (ws.encoders.n_layers as u128 + 1);
            let dec = ws.decoders.hidden as u128 * (ws.decoders.n_layers as u128 + 1);
            2 * (enc + dec) + ws.dim as u128 + *dim as u128
        })
        .sum();
    let passes = 4 * domains.len() as u128;
    let activations = batch as u128 * widths * passes * 2;
    MemoryEstimate {
        parameters,
        bytes: (parameters * 4 + activations) * 4,
    }
}

impl GlobalWorkspace {
    /// Builds a float32 workspace for `domains` (model order) on `device`,
    /// weights drawn from an RNG seeded with `seed`.
    pub fn new(
        ws: &WorkspaceConfig,
        loss: &LossConfig,
        domains: &[DomainSpec],
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        Self::with_dtype(ws, loss, domains, device, DType::F32, seed)
    }

    /// A float32 workspace whose matrix products run at `precision`.
    pub fn with_precision(
        ws: &WorkspaceConfig,
        loss: &LossConfig,
        domains: &[DomainSpec],
        device: &Device,
        precision: shimmer_config::Precision,
        seed: u64,
    ) -> Result<Self> {
        crate::device::check_precision(device, precision)?;
        Self::build(
            ws,
            loss,
            domains,
            device,
            DType::F32,
            crate::device::matmul_dtype(precision),
            seed,
        )
    }

    /// [`GlobalWorkspace::new`] with another floating-point dtype.
    pub fn with_dtype(
        ws: &WorkspaceConfig,
        loss: &LossConfig,
        domains: &[DomainSpec],
        device: &Device,
        dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        Self::build(ws, loss, domains, device, dtype, None, seed)
    }

    fn build(
        ws: &WorkspaceConfig,
        loss: &LossConfig,
        domains: &[DomainSpec],
        device: &Device,
        dtype: DType,
        matmul_dtype: Option<DType>,
        seed: u64,
    ) -> Result<Self> {
        if domains.is_empty() {
            bail!("a workspace needs at least one domain");
        }
        let mut specs = IndexMap::new();
        for d in domains {
            d.loss
                .validate(d.latent_dim)
                .map_err(|e| anyhow::anyhow!("loss spec of domain `{}`: {e}", d.name))?;
            if specs.insert(d.name.clone(), d.loss.clone()).is_some() {
                bail!("domain `{}` is given twice", d.name);
            }
        }
        let dims: Vec<(String, usize)> = domains
            .iter()
            .map(|d| (d.name.clone(), d.latent_dim))
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut store = ParamStore::new(device, dtype);
        store.set_matmul_dtype(matmul_dtype);
        let gw = GwModule::new(
            &dims,
            ws.dim,
            &ws.encoders,
            &ws.decoders,
            ws.activation,
            &mut store,
            &mut rng,
        )?;
        let selection = Selection::new(
            &ws.selection(),
            &dims,
            ws.dim,
            &mut store,
            &mut rng,
            seed ^ SELECTION_SEED_SALT,
        )?;
        let contrastive =
            ContrastiveLoss::new(&mut store, ws.contrastive.logit_scale, ws.contrastive.learn)?;
        Ok(Self {
            store,
            gw,
            selection,
            contrastive,
            specs,
            flavour: ws.flavour,
            coefs: loss.coefs.clone(),
        })
    }

    /// Parameters and buffers under shimmer's names.
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// The encoders, decoders and fusion.
    pub fn module(&self) -> &GwModule {
        &self.gw
    }

    /// The selection module.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Metrics (as tensors, emission order) and total loss of one batch;
    /// the loss is `None` when no coefficient applies to the batch.
    pub fn metrics(&self, batch: &Batch) -> Result<(Option<Tensor>, Metrics)> {
        self.metrics_keeping(batch, None)
    }

    /// [`GlobalWorkspace::metrics`], keeping every scored prediction in
    /// `predictions` when given.
    fn metrics_keeping(
        &self,
        batch: &Batch,
        predictions: Option<&Predictions>,
    ) -> Result<(Option<Tensor>, Metrics)> {
        self.check_batch(batch)?;
        let ctx = LossContext {
            gw: &self.gw,
            selection: &self.selection,
            specs: &self.specs,
            ops: self.store.ops(),
            predictions,
        };
        let encoded = encode_batch(&ctx, batch)?;
        let mut metrics = match self.flavour {
            Flavour::TwoDomains => two_domain_metrics(&ctx, &encoded, &self.contrastive)?,
            Flavour::Fusion => {
                let mut m = contrastive_metrics(&encoded, &self.contrastive)?;
                m.extend(broadcast_metrics(&ctx, &encoded)?);
                m
            }
        };
        let loss = combine_loss(&metrics, &self.coefs)?;
        if self.flavour == Flavour::Fusion
            && let Some(b) = broadcast_loss(&metrics, &self.coefs)?
        {
            metrics.insert("broadcast_loss".to_string(), b);
        }
        Ok((loss, metrics))
    }

    /// The training loss of one batch and its metrics' values.
    pub fn step_loss(&self, batch: &Batch) -> Result<LossOutput> {
        self.step_loss_keeping(batch, None)
    }

    /// [`GlobalWorkspace::step_loss`], also giving every prediction the
    /// loss terms scored (for metrics computed elsewhere: per loss-spec
    /// segment, in the plugin's space).
    pub fn step_loss_with_predictions(
        &self,
        batch: &Batch,
    ) -> Result<(LossOutput, Vec<Prediction>)> {
        let kept = Predictions::default();
        let out = self.step_loss_keeping(batch, Some(&kept))?;
        Ok((out, kept.into_inner()))
    }

    fn step_loss_keeping(
        &self,
        batch: &Batch,
        predictions: Option<&Predictions>,
    ) -> Result<LossOutput> {
        let (loss, metrics) = self.metrics_keeping(batch, predictions)?;
        let loss = loss.with_context(|| {
            let groups: Vec<String> = batch.keys().map(ToString::to_string).collect();
            format!(
                "no loss term applies to this batch (groups: {}; coefficients > 0: {})",
                groups.join(", "),
                self.coefs
                    .iter()
                    .filter(|(_, c)| **c > 0.0)
                    .map(|(n, _)| n.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let (loss_value, metrics) = read_back(&loss, &metrics)?;
        Ok(LossOutput {
            loss,
            loss_value,
            metrics,
        })
    }

    /// Checks that every group's domains exist with the right latent size
    /// and one batch size per group.
    fn check_batch(&self, batch: &Batch) -> Result<()> {
        for (group, latents) in batch {
            let mut b = None;
            for (d, z) in latents {
                let dim = self.gw.latent_dim(d).with_context(|| {
                    format!("group `{group}`: the workspace has no domain `{d}`")
                })?;
                let (n, k) = z.dims2().with_context(|| {
                    format!("group `{group}`, domain `{d}`: latents must be [batch, dim]")
                })?;
                if k != dim {
                    bail!("group `{group}`, domain `{d}`: latent size {k}, expected {dim}");
                }
                if *b.get_or_insert(n) != n {
                    bail!("group `{group}`: domains have different batch sizes");
                }
            }
        }
        Ok(())
    }
}
