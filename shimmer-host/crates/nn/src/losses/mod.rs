//! The Global Workspace losses, with shimmer's metric names and reductions.
//!
//! * [`domain_loss`]: a domain's loss from its loss spec.
//! * [`contrastive`]: the CLIP-style contrastive loss.
//! * [`two_domains`]: `GWLosses2Domains` (demi-cycles, cycles, translations).
//! * [`broadcast`]: `GWLosses`' broadcast loss (fusion flavour).
//! * [`combine`]: the total loss (a mean of weighted terms).
//!
//! Metrics are kept in an ordered map in shimmer's emission order; a name
//! inserted again keeps its position and takes the new value, as a Python
//! dict does.

pub mod broadcast;
pub mod combine;
pub mod contrastive;
pub mod domain_loss;
pub mod two_domains;

use crate::gw::module::GwModule;
use crate::gw::selection::Selection;
use crate::gw::{Batch, Latents};
use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use indexmap::IndexMap;
use shimmer_plugin_api::{LossSpec, LossUse};
use std::cell::RefCell;

/// Named scalar metrics, in emission order.
pub type Metrics = IndexMap<String, Tensor>;

/// A prediction one loss term scored, kept when asked for: what a
/// caller needs to score it again elsewhere (per loss-spec segment, in the
/// plugin's space, with accuracies).
#[derive(Clone, Debug)]
pub struct Prediction {
    /// The metric the term logs (`translation_v_to_attr`, `demi_cycle_v`).
    pub metric: String,
    /// Position of the group in the batch (the target's rows).
    pub group: usize,
    /// The predicted domain.
    pub domain: String,
    /// The prediction, `[batch, latent_dim]`, without gradient.
    pub pred: Tensor,
}

/// Where [`LossContext::domain_loss`] keeps predictions.
pub type Predictions = RefCell<Vec<Prediction>>;

/// Which loss term a domain loss belongs to: its metric name and group.
#[derive(Clone, Copy, Debug)]
pub struct Term<'a> {
    /// The metric the term logs.
    pub metric: &'a str,
    /// Position of the group in the batch.
    pub group: usize,
}

/// What the loss functions need from the model.
#[derive(Clone, Copy)]
pub struct LossContext<'a> {
    /// Encoders, decoders and fusion.
    pub gw: &'a GwModule,
    /// Scores for every fusion.
    pub selection: &'a Selection,
    /// Each model domain's loss spec.
    pub specs: &'a IndexMap<String, LossSpec>,
    /// The model's implementation of the hot spots.
    pub ops: crate::ops::Ops,
    /// Keeps every scored prediction here, when given.
    pub predictions: Option<&'a Predictions>,
}

impl LossContext<'_> {
    /// `domain`'s loss for `use_` in `term`; `None` when disabled. The
    /// prediction is kept when the context keeps them.
    pub fn domain_loss(
        &self,
        term: Term<'_>,
        domain: &str,
        use_: LossUse,
        pred: &Tensor,
        target: &Tensor,
    ) -> Result<Option<Tensor>> {
        let spec = self
            .specs
            .get(domain)
            .with_context(|| format!("no loss spec for domain `{domain}`"))?;
        let loss = domain_loss::domain_loss(self.ops, spec, use_, pred, target)
            .with_context(|| format!("loss of domain `{domain}`"))?;
        if let (Some(keep), Some(_)) = (self.predictions, &loss) {
            keep.borrow_mut().push(Prediction {
                metric: term.metric.to_string(),
                group: term.group,
                domain: domain.to_string(),
                pred: pred.detach(),
            });
        }
        Ok(loss)
    }
}

/// One group of a batch with what every loss reads from it, computed once
/// per step: the pre-fusion encodings of its domains and, for a one-domain
/// group, its workspace state (which involves no selection draw).
pub struct EncodedGroup<'a> {
    /// Position of the group in the batch.
    pub index: usize,
    /// The group's latents, `domain -> [B, dim]`, in group order.
    pub latents: &'a Latents,
    /// `e_d(z_d)` for every domain of the group, same order.
    pub encodings: Latents,
    /// `activation(e_d(z_d))` when the group has exactly one domain.
    pub single_state: Option<Tensor>,
}

/// Encodes every group of `batch` once, in batch order.
pub fn encode_batch<'a>(ctx: &LossContext<'_>, batch: &'a Batch) -> Result<Vec<EncodedGroup<'a>>> {
    batch
        .values()
        .enumerate()
        .map(|(index, latents)| {
            let encodings = ctx.gw.encode(latents)?;
            let single_state = if latents.len() == 1 {
                // A deterministic function of the encoding: no selection draw.
                Some(ctx.gw.fuse_selected(latents, &encodings, ctx.selection)?)
            } else {
                None
            };
            Ok(EncodedGroup {
                index,
                latents,
                encodings,
                single_state,
            })
        })
        .collect()
}

/// Mean of scalar tensors (`torch.stack(..).mean()`).
pub fn mean(values: &[Tensor]) -> Result<Tensor> {
    Ok(Tensor::stack(values, 0)?.mean_all()?)
}

/// Copies a scalar loss and scalar metrics to the host in one transfer
/// (one device synchronisation per step on a GPU).
pub fn read_back(loss: &Tensor, metrics: &Metrics) -> Result<(f32, Vec<(String, f32)>)> {
    let flat = metrics
        .values()
        .chain(std::iter::once(loss))
        .map(|t| t.detach().reshape(()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let mut values = Tensor::stack(&flat, 0)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    let loss_value = values.pop().context("the loss was read back")?;
    Ok((loss_value, metrics.keys().cloned().zip(values).collect()))
}
