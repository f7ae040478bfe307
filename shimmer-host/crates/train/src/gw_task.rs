//! Training a Global Workspace: host batches of plugin latents become
//! device tensors, go through the domain models (frozen: no gradient;
//! otherwise trained with the GW), and into the GW's losses.
//!
//! Evaluation also scores every prediction in its plugin's own space:
//! decoded through the domain's model when it has one, against the
//! plugin's items, per segment of the plugin's loss spec, with the accuracy
//! of each cross-entropy segment (`translation_v_to_attr/accuracy`).

use super::task::{StepOutput, Task, tensor_u128, u128_tensor};
use crate::grid::ImageGrid;
use crate::task::PluginSpace;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use shimmer_data::batch::HostBatch;
use shimmer_models::domain_model::{DomainModel, Mode};
use shimmer_nn::losses::Prediction;
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
    spaces: IndexMap<String, PluginSpace>,
    /// The GW's tensors plus the domain models' under `domain_mods.<d>.`
    /// (shimmer's names): trained ones as parameters, frozen ones as buffers.
    store: ParamStore,
    device: Device,
}

impl GwTask {
    /// Wraps a built workspace and the domain models of its non-identity
    /// domains; evaluation scores predictions again in `spaces`.
    pub fn new(
        gw: GlobalWorkspace,
        models: IndexMap<String, AttachedModel>,
        spaces: IndexMap<String, PluginSpace>,
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
            spaces,
            store,
            device,
        })
    }

    /// The workspace.
    pub fn workspace(&self) -> &GlobalWorkspace {
        &self.gw
    }

    /// The GW's input: plugin latents through each domain's model (the
    /// trained ones in `mode`).
    fn gw_batch(&self, batch: &HostBatch, mode: Mode) -> Result<Batch> {
        let mut tensors = batch
            .to_gw_batch(&self.device)
            .context("cannot move a batch to the training device")?;
        for latents in tensors.values_mut() {
            for (domain, z) in latents.iter_mut() {
                if let Some(m) = self.models.get(domain) {
                    let mode = if m.frozen { Mode::Eval } else { mode };
                    let encoded = m
                        .model
                        .encode_in(z, mode)
                        .with_context(|| format!("domain model of `{domain}`"))?;
                    *z = if m.frozen { encoded.detach() } else { encoded };
                }
            }
        }
        Ok(tensors)
    }

    fn step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        let out = self.gw.step_loss(&self.gw_batch(batch, Mode::Train)?)?;
        Ok(StepOutput {
            loss: out.loss,
            loss_value: out.loss_value,
            metrics: out.metrics,
        })
    }

    /// `{metric}/{segment}` (and `{metric}/accuracy`) of every prediction
    /// of a domain whose plugin space adds something.
    fn segment_metrics(
        &self,
        batch: &HostBatch,
        predictions: &[Prediction],
    ) -> Result<Vec<(String, f32)>> {
        let mut targets: HashMap<(usize, String), Tensor> = HashMap::new();
        let mut names = Vec::new();
        let mut values = Vec::new();
        for p in predictions {
            let Some(space) = self.spaces.get(&p.domain).filter(|s| s.adds_metrics()) else {
                continue;
            };
            let Some((_, group)) = batch.groups.get_index(p.group) else {
                continue;
            };
            let key = (p.group, p.domain.clone());
            if !targets.contains_key(&key) {
                let target = space.plugin_values(group, &p.domain, &self.device)?;
                targets.insert(key.clone(), target);
            }
            let pred = space.to_plugin_space(&p.pred)?;
            let ops = self.store.ops();
            for (segment, value) in shimmer_nn::losses::domain_loss::segment_metrics(
                ops,
                &space.spec,
                &pred,
                &targets[&key],
            )? {
                names.push(format!("{}/{segment}", p.metric));
                values.push(value);
            }
        }
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let flat = Tensor::stack(&values, 0)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        Ok(names.into_iter().zip(flat).collect())
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
        let (out, predictions) = self
            .gw
            .step_loss_with_predictions(&self.gw_batch(batch, Mode::Eval)?)?;
        let mut metrics = out.metrics;
        metrics.extend(self.segment_metrics(batch, &predictions)?);
        Ok(StepOutput {
            loss: out.loss,
            loss_value: out.loss_value,
            metrics,
        })
    }

    fn start_evaluation(&mut self) -> Result<()> {
        self.gw.selection().start_evaluation()
    }

    fn end_evaluation(&mut self) -> Result<()> {
        self.gw.selection().end_evaluation()
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
    /// shimmer's names: the workspace's own (`gw_mod.*`, `selection_mod.*`,
    /// `loss_mod.contrastive_fn.logit_scale`), every domain model, trained or
    /// frozen, under `gw_mod.domain_mods.<d>.`, and the aliases shimmer's
    /// loss module adds by holding the same modules (`loss_mod.gw_mod.*`,
    /// `loss_mod.selection_mod.*`).
    fn state_dict(&self) -> Result<IndexMap<String, Tensor>> {
        let mut out = self.gw.params().tensors();
        for (name, space) in &self.spaces {
            if let Some(model) = &space.model {
                for (k, t) in model.params().tensors() {
                    out.insert(format!("gw_mod.domain_mods.{name}.{k}"), t);
                }
            }
        }
        // shimmer's loss module holds the GW module and, beside it, the
        // domain modules: each of those tensors is in its state dict twice.
        let aliases: Vec<(String, Tensor)> = out
            .iter()
            .filter(|(k, _)| k.starts_with("gw_mod.") || k.starts_with("selection_mod."))
            .flat_map(|(k, t)| {
                let inner = k
                    .strip_prefix("gw_mod.")
                    .filter(|rest| rest.starts_with("domain_mods."))
                    .map(|rest| (format!("loss_mod.{rest}"), t.clone()));
                std::iter::once((format!("loss_mod.{k}"), t.clone())).chain(inner)
            })
            .collect();
        out.extend(aliases);
        Ok(out)
    }

    fn load_weights(&mut self, tensors: &HashMap<String, Tensor>, origin: &str) -> Result<()> {
        const DOMAINS: &str = "gw_mod.domain_mods.";
        for (d, space) in &self.spaces {
            let prefix = format!("{DOMAINS}{d}.");
            let theirs = shimmer_nn::weights::under(tensors, &prefix);
            if theirs.is_empty() {
                // A file of the GW alone: the domain models stay as loaded.
                continue;
            }
            match &space.model {
                Some(model) => shimmer_nn::weights::load_strict(
                    model.params(),
                    &theirs,
                    &format!("{origin} (domain `{d}`)"),
                )?,
                None => anyhow::bail!(
                    "{origin} holds a module for domain `{d}` ({} tensors under `{prefix}`), \
                     but the experiment gives `{d}` no model",
                    theirs.len()
                ),
            }
        }
        let gw: HashMap<String, Tensor> = tensors
            .iter()
            .filter(|(k, _)| !k.starts_with(DOMAINS))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        shimmer_nn::weights::load_strict(self.gw.params(), &gw, origin)
    }

    fn predict(&mut self, batch: &HostBatch) -> Result<IndexMap<String, Tensor>> {
        let Some((_, group)) = super::task::fullest_group(batch) else {
            anyhow::bail!("an empty batch");
        };
        let key = shimmer_nn::GroupKey::new(group.domains.keys().cloned());
        let mut tensors = self.gw_batch(batch, Mode::Eval)?;
        let latents = tensors
            .swap_remove(&key)
            .context("the fullest group vanished from the batch")?;
        let (module, selection) = (self.gw.module(), self.gw.selection());
        let mut out = IndexMap::new();
        let mut states = Vec::new();
        for (d, z) in &latents {
            // The items as the plugin gave them, to join predictions to data.
            if let Some(space) = self.spaces.get(d) {
                out.insert(
                    format!("input/{d}"),
                    space.plugin_values(group, d, &self.device)?,
                );
            }
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

    /// For the fullest group: each drawable domain's items above its
    /// demi-cycles (`images/<d>/demi_cycle`), and for each other domain of
    /// the group its items, the target's items and the translation
    /// (`images/<s>_to_<d>`), all drawn by the plugins.
    fn image_grids(&mut self, batch: &HostBatch) -> Result<Vec<ImageGrid>> {
        let Some((index, (_, group))) = batch
            .groups
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, (_, g))| g.domains.len())
        else {
            return Ok(Vec::new());
        };
        let mut tensors = self.gw_batch(batch, Mode::Eval)?;
        let Some((_, latents)) = tensors.swap_remove_index(index) else {
            return Ok(Vec::new());
        };
        let (module, selection) = (self.gw.module(), self.gw.selection());
        let n = group.rows();
        // Every domain's items, drawn (None: not drawable).
        let mut drawn: IndexMap<String, Option<shimmer_data::Rendered>> = IndexMap::new();
        for d in latents.keys() {
            let picture = match self.spaces.get(d) {
                Some(space) => space.draw(&space.plugin_values(group, d, &self.device)?)?,
                None => None,
            };
            drawn.insert(d.clone(), picture);
        }
        let mut grids = Vec::new();
        for (from, z) in &latents {
            let single: shimmer_nn::Latents = [(from.clone(), z.clone())].into();
            let state = module.encode_and_fuse(&single, selection)?;
            for (to, pred) in module.decode(&state, None)? {
                let (Some(space), Some(Some(target))) = (self.spaces.get(&to), drawn.get(&to))
                else {
                    continue;
                };
                if !latents.contains_key(&to) {
                    continue;
                }
                let Some(made) = space.draw(&space.to_plugin_space(&pred)?)? else {
                    continue;
                };
                let (tag, rows) = if *from == to {
                    (
                        format!("images/{to}/demi_cycle"),
                        vec![target.rgb.clone(), made.rgb],
                    )
                } else {
                    let mut rows = Vec::new();
                    if let Some(Some(source)) = drawn.get(from)
                        && (source.width, source.height) == (target.width, target.height)
                    {
                        rows.push(source.rgb.clone());
                    }
                    rows.push(target.rgb.clone());
                    rows.push(made.rgb);
                    (format!("images/{from}_to_{to}"), rows)
                };
                grids.push(ImageGrid::new(tag, target.width, target.height, n, rows)?);
            }
        }
        Ok(grids)
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
