//! The optimiser of a run: [`adamw::AdamW`] driven by a [`scheduler::Schedule`]
//! (learning rate and beta1 per step), with a state dict so training resumes
//! exactly from a checkpoint.
//!
//! ```
//! use candle_core::{Device, Var};
//! use indexmap::IndexMap;
//! use shimmer_config::OptimConfig;
//! use shimmer_nn::optim::Optimizer;
//!
//! let w = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
//! let params: IndexMap<String, Var> = [("w".to_string(), w.clone())].into();
//! let mut opt = Optimizer::new(&params, &OptimConfig::default(), Some(100)).unwrap();
//! let grads = w.as_tensor().sqr().unwrap().sum_all().unwrap().backward().unwrap();
//! opt.step(&grads).unwrap();
//! assert_eq!(opt.steps_done(), 1);
//! ```

pub mod adamw;
pub mod scheduler;

use adamw::AdamW;
use anyhow::{Context, Result, bail};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use indexmap::IndexMap;
use scheduler::Schedule;
use shimmer_config::OptimConfig;
use std::collections::HashMap;

/// Checkpoint prefix of the per-parameter AdamW state.
pub const STATE_PREFIX: &str = "optimizer.state.";
/// Checkpoint name of the scheduler's step count.
pub const SCHEDULER_STEP: &str = "optimizer.scheduler.step";

/// AdamW plus its learning-rate / beta1 schedule.
#[derive(Debug)]
pub struct Optimizer {
    adamw: AdamW,
    schedule: Schedule,
    step: usize,
    device: Device,
}

impl Optimizer {
    /// An optimiser for `params` configured by `cfg`; `training_steps` is the
    /// schedule length when `cfg.scheduler` does not give one.
    pub fn new(
        params: &IndexMap<String, Var>,
        cfg: &OptimConfig,
        training_steps: Option<usize>,
    ) -> Result<Self> {
        let [beta1, beta2] = cfg.betas;
        let schedule = Schedule::new(&cfg.scheduler, cfg.lr, beta1, training_steps)?;
        let device = params
            .values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu);
        Ok(Self {
            adamw: AdamW::new(params, beta2, cfg.eps, cfg.weight_decay)?,
            schedule,
            step: 0,
            device,
        })
    }

    /// `(lr, beta1)` the next [`Optimizer::step`] will use.
    pub fn current(&self) -> Result<(f64, f64)> {
        self.schedule.at(self.step)
    }

    /// Optimiser steps done so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Applies one AdamW update with the schedule's values, then steps the
    /// schedule.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (lr, beta1) = self.current()?;
        self.adamw.step(grads, lr, beta1)?;
        self.step += 1;
        Ok(())
    }

    /// Moments, step counts and the scheduler step, as checkpoint tensors.
    pub fn state_dict(&self) -> Result<IndexMap<String, Tensor>> {
        let mut out = self.adamw.state_dict(STATE_PREFIX)?;
        out.insert(
            SCHEDULER_STEP.to_string(),
            Tensor::new(&[self.step as i64], &self.device)?,
        );
        Ok(out)
    }

    /// Restores a [`Optimizer::state_dict`] read from `origin`.
    pub fn load_state_dict(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<()> {
        self.adamw.load_state_dict(tensors, STATE_PREFIX, origin)?;
        let t = tensors
            .get(SCHEDULER_STEP)
            .with_context(|| format!("{origin}: missing `{SCHEDULER_STEP}`"))?;
        let v = t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let [step] = v[..] else {
            bail!("{origin}: `{SCHEDULER_STEP}` must hold one integer");
        };
        self.step =
            usize::try_from(step).with_context(|| format!("{origin}: negative scheduler step"))?;
        Ok(())
    }
}
