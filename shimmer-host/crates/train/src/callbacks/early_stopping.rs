//! Lightning's `EarlyStopping`: stop when the monitored metric has not
//! improved for `patience` validations.

use crate::callback::{Callback, FitContext, Flow};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use shimmer_config::{MonitorMode, TrainingConfig, training};
use std::collections::HashMap;

const BEST: &str = "trainer.early_stopping.best";
const WAIT: &str = "trainer.early_stopping.wait";

/// Stops the fit after `patience` validations in a row in which the
/// monitored metric did not beat its best by more than `min_delta`. The
/// run then finishes as usual (its best checkpoint validated and tested);
/// the log and `summary.json` say why and at which step it stopped.
#[derive(Debug)]
pub struct EarlyStopping {
    monitor: String,
    mode: MonitorMode,
    patience: usize,
    min_delta: f64,
    best: Option<f64>,
    best_step: u64,
    wait: usize,
}

impl EarlyStopping {
    /// The policy `es` of `cfg` (monitor and mode default to the run's).
    pub fn new(cfg: &TrainingConfig, es: &training::EarlyStopping) -> Self {
        Self {
            monitor: es.monitor.clone().unwrap_or_else(|| cfg.monitor.clone()),
            mode: es.mode.unwrap_or(cfg.mode),
            patience: es.patience,
            min_delta: es.min_delta,
            best: None,
            best_step: 0,
            wait: 0,
        }
    }
}

impl Callback for EarlyStopping {
    fn name(&self) -> &'static str {
        "early-stopping"
    }

    fn on_validation_end(
        &mut self,
        ctx: &mut FitContext<'_>,
        metrics: &IndexMap<String, f64>,
    ) -> Result<Flow> {
        if metrics.is_empty() {
            return Ok(Flow::Continue);
        }
        let value = *metrics.get(&self.monitor).with_context(|| {
            format!(
                "`training.early_stopping.monitor` is `{}`, which is not among the validation \
                 metrics: {}",
                self.monitor,
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if self.mode.improves_by(value, self.best, self.min_delta) {
            self.best = Some(value);
            self.best_step = ctx.position.global_step;
            self.wait = 0;
            return Ok(Flow::Continue);
        }
        self.wait += 1;
        if self.wait < self.patience {
            return Ok(Flow::Continue);
        }
        Ok(Flow::stop(format!(
            "early stopping: `{}` did not improve on its best ({} at step {}) by more than {} \
             for {} validations",
            self.monitor,
            self.best
                .map_or_else(|| "none".to_string(), |b| format!("{b:.6}")),
            self.best_step,
            self.min_delta,
            self.patience
        )))
    }

    fn state(&self) -> Result<IndexMap<String, Tensor>> {
        let cpu = Device::Cpu;
        let best = [self.best.unwrap_or(f64::NAN), self.best_step as f64];
        let mut out = IndexMap::new();
        out.insert(BEST.into(), Tensor::new(&best, &cpu)?);
        out.insert(WAIT.into(), Tensor::new(&[self.wait as i64], &cpu)?);
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        if let (Some(best), Some(wait)) = (tensors.get(BEST), tensors.get(WAIT)) {
            let best = best.to_vec1::<f64>()?;
            self.best = best.first().copied().filter(|b| !b.is_nan());
            self.best_step = best.get(1).copied().unwrap_or(0.0) as u64;
            self.wait = wait.to_vec1::<i64>()?.first().copied().unwrap_or(0) as usize;
        }
        Ok(())
    }
}
