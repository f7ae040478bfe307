//! Pretraining one domain's model on its plugin's data (shimmer's
//! tutorial's first step), with the same loop, logs and checkpoints as a GW.

use super::task::{StepOutput, Task, tensor_u128, u128_tensor};
use crate::grid::ImageGrid;
use crate::task::PluginSpace;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shimmer_data::batch::HostBatch;
use shimmer_models::domain_model::{self, DomainModel, Mode};
use shimmer_nn::losses::domain_loss::segment_metrics;
use shimmer_nn::params::ParamStore;
use std::collections::HashMap;
use std::path::PathBuf;

/// Checkpoint name of the sampling RNG's position (VAE noise).
const NOISE_RNG: &str = "trainer.noise_rng";

/// Trains `model` to reconstruct the latents of `domain`.
pub struct PretrainTask {
    domain: String,
    model: DomainModel,
    /// The plugin's space: evaluation scores the reconstruction per
    /// segment of its loss spec (`reconstruction/accuracy`,
    /// `reconstruction/mse`), and image grids draw it.
    space: Option<PluginSpace>,
    rng: ChaCha8Rng,
    device: Device,
    save_to: PathBuf,
}

impl PretrainTask {
    /// A task for `domain`'s `model`, noise seeded with `seed`, best weights
    /// exported to `save_to`; validation also scores reconstructions in
    /// the plugin's `space`, segment by segment.
    pub fn new(
        domain: &str,
        model: DomainModel,
        space: Option<PluginSpace>,
        device: Device,
        seed: u64,
        save_to: PathBuf,
    ) -> Self {
        Self {
            domain: domain.to_string(),
            model,
            space,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_d0a1),
            device,
            save_to,
        }
    }

    /// Every row of the domain in the batch (all groups that carry it).
    fn inputs(&self, batch: &HostBatch) -> Result<Tensor> {
        let parts: Vec<Tensor> = batch
            .to_tensors(&self.device)?
            .into_values()
            .filter_map(|mut domains| domains.swap_remove(&self.domain))
            .collect();
        if parts.is_empty() {
            bail!(
                "a batch has no group with domain `{}` (groups: {}): list groups that carry the \
                 pretrained domain in `data.groups`, `data.val` and `data.test`",
                self.domain,
                batch.groups.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    fn step(&mut self, batch: &HostBatch, mode: Mode) -> Result<StepOutput> {
        let x = self.inputs(batch)?;
        let (loss, metrics) = self.model.pretrain_loss(&x, &mut self.rng, mode)?;
        let metrics: shimmer_nn::losses::Metrics = metrics
            .into_iter()
            .filter(|(n, _)| n != domain_model::LOSS)
            .collect();
        let mut metrics = metrics;
        if let (Mode::Eval, Some(spec)) = (mode, self.space.as_ref().map(|s| &s.spec)) {
            let reconstruction = self.model.decode(&self.model.encode(&x)?)?;
            let ops = self.model.params().ops();
            for (name, value) in segment_metrics(ops, spec, &reconstruction, &x)? {
                metrics.insert(format!("reconstruction/{name}"), value);
            }
        }
        let (loss_value, metrics) = shimmer_nn::losses::read_back(&loss, &metrics)?;
        Ok(StepOutput {
            loss,
            loss_value,
            metrics,
        })
    }
}

impl Task for PretrainTask {
    fn params(&self) -> &ParamStore {
        self.model.params()
    }

    fn train_step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        self.step(batch, Mode::Train)
    }

    fn eval_step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        self.step(batch, Mode::Eval)
    }

    fn state(&self) -> Result<IndexMap<String, Tensor>> {
        Ok([(NOISE_RNG.to_string(), u128_tensor(self.rng.get_word_pos())?)].into())
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        if let Some(t) = state.get(NOISE_RNG) {
            self.rng.set_word_pos(tensor_u128(t)?);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "pretraining of domain `{}`'s model {} ({} -> {})",
            self.domain,
            self.model.config(),
            self.model.input_dim(),
            self.model.latent_dim()
        )
    }

    /// The inputs (`input/<d>`), their latents (`latent/<d>`, the mean for
    /// a VAE) and reconstructions (`reconstruction/<d>`).
    fn predict(&mut self, batch: &HostBatch) -> Result<IndexMap<String, Tensor>> {
        let x = self.inputs(batch)?;
        let z = self.model.encode(&x)?;
        let d = &self.domain;
        Ok([
            (format!("reconstruction/{d}"), self.model.decode(&z)?),
            (format!("latent/{d}"), z),
            (format!("input/{d}"), x),
        ]
        .into())
    }

    /// `images/<domain>/reconstruction`: the items above their
    /// reconstructions (through the posterior mean), drawn by the plugin.
    fn image_grids(&mut self, batch: &HostBatch) -> Result<Vec<ImageGrid>> {
        let Some(space) = &self.space else {
            return Ok(Vec::new());
        };
        let x = self.inputs(batch)?;
        let reconstruction = self.model.decode(&self.model.encode(&x)?)?;
        let (Some(a), Some(b)) = (space.draw(&x)?, space.draw(&reconstruction)?) else {
            return Ok(Vec::new());
        };
        let tag = format!("images/{}/reconstruction", self.domain);
        Ok(vec![ImageGrid::new(
            tag,
            a.width,
            a.height,
            x.dim(0)?,
            vec![a.rgb, b.rgb],
        )?])
    }

    fn export(&self) -> Result<Option<String>> {
        if let Some(dir) = self.save_to.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        self.model.save(&self.save_to)?;
        Ok(Some(format!(
            "domain model of `{}` saved to {}",
            self.domain,
            self.save_to.display()
        )))
    }
}
