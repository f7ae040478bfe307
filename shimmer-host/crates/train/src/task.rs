//! What the training loop trains: a Global Workspace, or one domain's model
//! during pretraining. The loop (logging, validation, checkpoints, resume)
//! is the same for both.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use shimmer_data::batch::{GroupBatch, HostBatch};
use shimmer_data::{ItemSource, Rendered};
use shimmer_models::domain_model::DomainModel;
use shimmer_nn::params::ParamStore;
use shimmer_plugin_api::LossSpec;
use std::collections::HashMap;
use std::sync::Arc;

/// A domain as its plugin gives it: where predictions are scored again
/// (per loss-spec segment) and drawn, in the plugin's own space.
pub struct PluginSpace {
    /// The plugin's latents (before any domain model).
    pub source: Arc<dyn ItemSource>,
    /// The loss spec in that space (the YAML's, else the plugin's).
    pub spec: LossSpec,
    /// The domain model between the plugin and the GW, if any (its
    /// decoder brings predictions back to the plugin's space).
    pub model: Option<DomainModel>,
}

impl PluginSpace {
    /// Whether scoring in this space tells more than the GW's own loss: a
    /// model in between, or several segments.
    pub fn adds_metrics(&self) -> bool {
        self.model.is_some() || self.spec.segments.len() > 1
    }

    /// The plugin's values of `group`'s items of `domain`, `[rows, dim]` on
    /// `device`: the batch's own latents without a model, else loaded anew.
    pub fn plugin_values(
        &self,
        group: &GroupBatch,
        domain: &str,
        device: &Device,
    ) -> Result<Tensor> {
        if self.model.is_none()
            && let Some(latents) = group.domains.get(domain)
        {
            return Ok(latents.to_tensor(device)?);
        }
        let dim = self.source.latent_dim();
        let mut raw = vec![0f32; group.items.len() * dim];
        self.source
            .load_latents(group.split, &group.items, &mut raw)
            .with_context(|| format!("loading `{domain}` items in the plugin's space"))?;
        Ok(Tensor::from_vec(raw, (group.items.len(), dim), device)?)
    }

    /// GW-side latents of this domain back in the plugin's space.
    pub fn to_plugin_space(&self, z: &Tensor) -> Result<Tensor> {
        match &self.model {
            Some(m) => m.decode(z),
            None => Ok(z.clone()),
        }
    }

    /// The plugin's drawing of plugin-space values `[rows, dim]`, `None`
    /// when its items cannot be drawn.
    pub fn draw(&self, values: &Tensor) -> Result<Option<Rendered>> {
        let rows = values.dim(0)?;
        let flat = values
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.source.render(&flat, rows)
    }
}

/// One step's loss (with its graph) and metric values under their names.
pub struct StepOutput {
    /// The loss to minimise.
    pub loss: Tensor,
    /// Its value on the host (read back with the metrics, in one transfer).
    pub loss_value: f32,
    /// Metric values (without `loss`), in emission order.
    pub metrics: Vec<(String, f32)>,
}

/// A trainable model with its losses, fed with host batches.
pub trait Task {
    /// Everything checkpointed; its parameters are what the optimiser trains.
    fn params(&self) -> &ParamStore;

    /// Loss and metrics of a training batch.
    fn train_step(&mut self, batch: &HostBatch) -> Result<StepOutput>;

    /// Loss and metrics of a validation or test batch.
    fn eval_step(&mut self, batch: &HostBatch) -> Result<StepOutput>;

    /// Called before a pass of [`Task::eval_step`]s: a task whose model
    /// draws random numbers makes every pass draw the same ones, apart from
    /// training's (see `Selection::start_evaluation`).
    fn start_evaluation(&mut self) -> Result<()> {
        Ok(())
    }

    /// Called after a pass of [`Task::eval_step`]s, even a failed one.
    fn end_evaluation(&mut self) -> Result<()> {
        Ok(())
    }

    /// Random-generator positions and other state a resumed run needs, as
    /// `trainer.*` tensors.
    fn state(&self) -> Result<IndexMap<String, Tensor>>;

    /// Restores [`Task::state`] from a checkpoint's `trainer.*` tensors.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// One line saying what is trained.
    fn describe(&self) -> String;

    /// Named outputs for one evaluation batch (`shimmer predict`), one row
    /// per item of the batch's fullest group.
    fn predict(&mut self, batch: &HostBatch) -> Result<IndexMap<String, Tensor>>;

    /// Writes what the run produces besides checkpoints (a pretrained domain
    /// model's weights), once the best weights are loaded; says what it wrote.
    fn export(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Pictures of what the model makes of `batch`'s items (originals above
    /// reconstructions, translations), for the domains that can be drawn.
    fn image_grids(&mut self, batch: &HostBatch) -> Result<Vec<crate::grid::ImageGrid>> {
        let _ = batch;
        Ok(Vec::new())
    }

    /// Loads weights read from any kind of file ([`shimmer_nn::weights`],
    /// canonical names) into the model, strictly: every parameter there with
    /// its shape and nothing left over. A GW takes its domain modules' too
    /// when the file has them (`gw_mod.domain_mods.<d>.*`).
    fn load_weights(&mut self, tensors: &HashMap<String, Tensor>, origin: &str) -> Result<()> {
        shimmer_nn::weights::load_strict(self.params(), tensors, origin)
    }

    /// Every tensor of the model under the name shimmer's own
    /// `state_dict()` gives it (`shimmer export`), so that the Python
    /// module loads them with `load_state_dict(strict=True)`.
    fn state_dict(&self) -> Result<IndexMap<String, Tensor>> {
        Ok(self.params().tensors())
    }
}

impl<T: Task + ?Sized> Task for Box<T> {
    fn params(&self) -> &ParamStore {
        (**self).params()
    }
    fn train_step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        (**self).train_step(batch)
    }
    fn eval_step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        (**self).eval_step(batch)
    }
    fn start_evaluation(&mut self) -> Result<()> {
        (**self).start_evaluation()
    }
    fn end_evaluation(&mut self) -> Result<()> {
        (**self).end_evaluation()
    }
    fn state(&self) -> Result<IndexMap<String, Tensor>> {
        (**self).state()
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        (**self).load_state(state)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn export(&self) -> Result<Option<String>> {
        (**self).export()
    }
    fn predict(&mut self, batch: &HostBatch) -> Result<IndexMap<String, Tensor>> {
        (**self).predict(batch)
    }
    fn image_grids(&mut self, batch: &HostBatch) -> Result<Vec<crate::grid::ImageGrid>> {
        (**self).image_grids(batch)
    }
    fn state_dict(&self) -> Result<IndexMap<String, Tensor>> {
        (**self).state_dict()
    }
    fn load_weights(&mut self, tensors: &HashMap<String, Tensor>, origin: &str) -> Result<()> {
        (**self).load_weights(tensors, origin)
    }
}

/// The batch's group with the most domains (the fully paired one of an
/// evaluation batch); the first of those on a tie.
pub fn fullest_group(batch: &HostBatch) -> Option<(&String, &shimmer_data::batch::GroupBatch)> {
    batch
        .groups
        .iter()
        .rev()
        .max_by_key(|(_, g)| g.domains.len())
}

/// Packs a `u128` (an RNG position) into a 2-element `u32`-safe tensor.
pub fn u128_tensor(v: u128) -> Result<Tensor> {
    let hi = (v >> 64) as u64 as i64;
    let lo = v as u64 as i64;
    Ok(Tensor::new(&[hi, lo], &candle_core::Device::Cpu)?)
}

/// Reads back a [`u128_tensor`].
pub fn tensor_u128(t: &Tensor) -> Result<u128> {
    let v = t.to_device(&candle_core::Device::Cpu)?.to_vec1::<i64>()?;
    let [hi, lo] = v[..] else {
        anyhow::bail!("an RNG position must hold 2 values, found {}", v.len());
    };
    Ok((u128::from(hi as u64) << 64) | u128::from(lo as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u128_round_trips() {
        for v in [0u128, 1, u128::from(u64::MAX) + 7, u128::MAX] {
            assert_eq!(tensor_u128(&u128_tensor(v).unwrap()).unwrap(), v);
        }
    }
}
