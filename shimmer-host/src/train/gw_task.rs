//! Training a Global Workspace: host batches of plugin latents become
//! device tensors, go through the (frozen or trained) domain models, and
//! into the GW's losses.

use super::task::{StepOutput, Task, tensor_u128, u128_tensor};
use crate::data::batch::HostBatch;
use crate::gw::GlobalWorkspace;
use crate::gw::params::ParamStore;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use std::collections::HashMap;

/// Checkpoint name of the selection module's RNG position.
const SELECTION_RNG: &str = "trainer.selection_rng";

/// A GW and the device its batches go to.
pub struct GwTask {
    gw: GlobalWorkspace,
    device: Device,
}

impl GwTask {
    /// Wraps a built workspace.
    pub fn new(gw: GlobalWorkspace, device: Device) -> Self {
        Self { gw, device }
    }

    /// The workspace.
    pub fn workspace(&self) -> &GlobalWorkspace {
        &self.gw
    }

    fn step(&mut self, batch: &HostBatch) -> Result<StepOutput> {
        let tensors = batch
            .to_gw_batch(&self.device)
            .context("cannot move a batch to the training device")?;
        let out = self.gw.step_loss(&tensors)?;
        Ok(StepOutput {
            loss: out.loss,
            metrics: out.metrics,
        })
    }
}

impl Task for GwTask {
    fn params(&self) -> &ParamStore {
        self.gw.params()
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

    fn describe(&self) -> String {
        let n: usize = self
            .gw
            .params()
            .params()
            .values()
            .map(|v| v.elem_count())
            .sum();
        format!("Global Workspace with {n} trainable parameters")
    }
}
