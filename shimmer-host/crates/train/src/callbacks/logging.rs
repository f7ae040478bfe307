//! Scalars of training and validation, and the learning rate.

use crate::callback::{Callback, FitContext, Flow, StepOutcome};
use anyhow::Result;
use indexmap::IndexMap;
use shimmer_config::TrainingConfig;

/// Whether the step just done is logged: every `log_every_n_steps`, and
/// every step of a fast dev run.
fn logged(ctx: &FitContext<'_>, every: u64) -> bool {
    ctx.position.global_step.is_multiple_of(every) || ctx.fast_dev_run
}

/// Logs `train/loss` and `train/<metric>` every `log_every_n_steps`, and
/// every `val/*` mean after each validation (then flushes, so a validation
/// is on disk when it is reported).
#[derive(Debug)]
pub struct ScalarLogger {
    every: u64,
}

impl ScalarLogger {
    /// A logger at `cfg.log_every_n_steps`.
    pub fn new(cfg: &TrainingConfig) -> Self {
        Self {
            every: cfg.log_every_n_steps.max(1) as u64,
        }
    }
}

impl Callback for ScalarLogger {
    fn name(&self) -> &'static str {
        "scalar-logger"
    }

    fn on_step_end(&mut self, ctx: &mut FitContext<'_>, step: &StepOutcome) -> Result<Flow> {
        if logged(ctx, self.every) {
            let s = ctx.position.global_step as i64 - 1;
            ctx.logger.scalar("train/loss", s, step.loss)?;
            for (name, v) in &step.metrics {
                ctx.logger.scalar(&format!("train/{name}"), s, *v)?;
            }
        }
        Ok(Flow::Continue)
    }

    fn on_validation_end(
        &mut self,
        ctx: &mut FitContext<'_>,
        metrics: &IndexMap<String, f64>,
    ) -> Result<Flow> {
        if metrics.is_empty() {
            return Ok(Flow::Continue);
        }
        let step = ctx.position.global_step as i64;
        for (name, v) in metrics {
            ctx.logger.scalar(name, step, *v as f32)?;
        }
        ctx.logger.flush()?;
        Ok(Flow::Continue)
    }
}

/// Logs the learning rate of each logged step as `lr-AdamW`, the name
/// Lightning's `LearningRateMonitor` gives it.
#[derive(Debug)]
pub struct LrMonitor {
    every: u64,
}

impl LrMonitor {
    /// A monitor at `cfg.log_every_n_steps`.
    pub fn new(cfg: &TrainingConfig) -> Self {
        Self {
            every: cfg.log_every_n_steps.max(1) as u64,
        }
    }
}

impl Callback for LrMonitor {
    fn name(&self) -> &'static str {
        "lr-monitor"
    }

    fn on_step_end(&mut self, ctx: &mut FitContext<'_>, step: &StepOutcome) -> Result<Flow> {
        if logged(ctx, self.every) {
            let s = ctx.position.global_step as i64 - 1;
            ctx.logger.scalar("lr-AdamW", s, step.lr as f32)?;
        }
        Ok(Flow::Continue)
    }
}
