//! Training a Global Workspace: host batches of plugin latents become
//! device tensors, go through the domain models (frozen: no gradient;
//! otherwise trained with the GW), and into the GW's losses.

use super::task::{StepOutput, Task, tensor_u128, u128_tensor};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use shimmer_data::batch::HostBatch;
use shimmer_nn::domain_model::DomainModel;
use shimmer_nn::params::ParamStore;
use shimmer_nn::{Batch, GlobalWorkspace};
use std::collections::HashMap;

/// Checkpoint name of the selection module's RNG position.
const SELECTION_RNG: &str = "trainer.selection_rng";

/// A domain model between a plugin and the GW.
pub struct AttachedModel {
    /// The model.
    pub model: DomainModel,
    /// Whether its weights stay fixed.
    pub frozen: bool,
}

/// A GW, its domain models and the device its batches go to.
pub struct GwTask {
    gw: GlobalWorkspace,
    models: IndexMap<String, AttachedModel>,
    /// The GW's tensors plus the domain models' under `domain_mods.<d>.`
    /// (shimmer's names): trained ones as parameters, frozen ones as buffers.
    store: ParamStore,
    device: Device,
}

impl GwTask {
    /// Wraps a built workspace and the domain models of its non-identity domains.
    pub fn new(
        gw: GlobalWorkspace,
        models: IndexMap<String, AttachedModel>,
        device: Device,
    ) -> Result<Self> {
        let mut store = ParamStore::new(gw.params().device(), gw.params().dtype());
        store.adopt("", gw.params(), true)?;
        for (name, m) in &models {
            store.adopt(&format!("domain_mods.{name}."), m.model.params(), !m.frozen)?;
        }
        Ok(Self {
            gw,
            models,
            store,
            device,
        })
    }

    /// The workspace.
    pub fn workspace(&self) -> &GlobalWorkspace {
        &self.gw
    }

    /// The GW's input: plugin latents through each domain's model.
    fn gw_batch(&self, batch: &HostBatch) -> Result<Batch> {
        let mut tensors = batch
            .to_gw_batch(&self.device)
            .context("cannot move a batch to the training device")?;
        for latents in tensors.values_mut() {
            for (domain, z) in latents.iter_mut() {
                if let Some(m) = self.models.get(domain) {
                    let encoded = m
                        .model
                        .encode(z)
                        .with_context(|| format!("domain model of `{domain}`"))?;
                    *z = if m.frozen { encoded.detach() } else { encoded };
                }
            }
        }
        Ok(tensors)
    }

    fn step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        let out = self.gw.step_loss(&self.gw_batch(batch)?)?;
        Ok(StepOutput {
            loss: out.loss,
            loss_value: out.loss_value,
            metrics: out.metrics,
        })
    }
}

impl Task for GwTask {
    fn params(&self) -> &ParamStore {
        &self.store
    }

    fn train_step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        self.step(batch)
    }

    fn eval_step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        self.step(batch)
    }

    fn state(&self) -> Result<IndexMap<String, Tensor>> {
        let pos = self.gw.selection().rng_position()?;
        Ok([(SELECTION_RNG.to_string(), u128_tensor(pos)?)].into())
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        if let Some(t) = state.get(SELECTION_RNG) {
            self.gw.selection().set_rng_position(tensor_u128(t)?)?;
        }
        Ok(())
    }

    /// For the fullest group: each domain's latent (`latent/<d>`), the
    /// workspace state from each domain alone (`gw/<d>`) and from all of
    /// them (`gw/all`), and every state decoded to every domain
    /// (`pred/<from>_to_<to>`: demi-cycles, translations, fused).
    fn predict(&mut self, batch: &HostBatch) -> Result<IndexMap<String, Tensor>> {
        let Some((_, group)) = super::task::fullest_group(batch) else {
            anyhow::bail!("an empty batch");
        };
        let key = shimmer_nn::GroupKey::new(group.domains.keys().cloned());
        let mut tensors = self.gw_batch(batch)?;
        let latents = tensors
            .swap_remove(&key)
            .context("the fullest group vanished from the batch")?;
        let (module, selection) = (self.gw.module(), self.gw.selection());
        let mut out = IndexMap::new();
        let mut states = Vec::new();
        for (d, z) in &latents {
            out.insert(format!("latent/{d}"), z.clone());
            let single: shimmer_nn::Latents = [(d.clone(), z.clone())].into();
            states.push((d.clone(), module.encode_and_fuse(&single, selection)?));
        }
        if latents.len() > 1 {
            states.push((
                "all".to_string(),
                module.encode_and_fuse(&latents, selection)?,
            ));
        }
        for (from, state) in states {
            for (to, pred) in module.decode(&state, None)? {
                out.insert(format!("pred/{from}_to_{to}"), pred);
            }
            out.insert(format!("gw/{from}"), state);
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        let n: usize = self.store.params().values().map(|v| v.elem_count()).sum();
        let models: Vec<String> = self
            .models
            .iter()
            .map(|(d, m)| {
                format!(
                    "{d}: {} ({})",
                    m.model.config(),
                    if m.frozen { "frozen" } else { "trained" }
                )
            })
            .collect();
        if models.is_empty() {
            format!("Global Workspace, {n} trainable parameters")
        } else {
            format!(
                "Global Workspace, {n} trainable parameters; domain models {}",
                models.join(", ")
            )
        }
    }
}
