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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::testing::Scratch;

    fn metrics(v: f64) -> IndexMap<String, f64> {
        [("val/loss".to_string(), v)].into_iter().collect()
    }

    #[test]
    fn stops_after_patience_validations_without_improvement_by_min_delta() {
        let es = training::EarlyStopping {
            monitor: None,
            mode: None,
            patience: 2,
            min_delta: 0.1,
        };
        let mut run = Scratch::new(TrainingConfig::default());
        let mut cb = EarlyStopping::new(&run.cfg, &es);
        // 1.0 sets the best; 0.95 is not 0.1 better; 0.85 is; then two misses.
        let flows: Vec<bool> = [(10, 1.0), (20, 0.95), (30, 0.85), (40, 0.8), (50, 0.9)]
            .into_iter()
            .map(|(step, v)| {
                let flow = run.at(step, |ctx| cb.on_validation_end(ctx, &metrics(v)).unwrap());
                matches!(flow, Flow::Stop(_))
            })
            .collect();
        assert_eq!(flows, [false, false, false, false, true]);
        assert_eq!((cb.best, cb.best_step, cb.wait), (Some(0.85), 30, 2));
    }

    #[test]
    fn state_round_trips_and_a_missing_monitor_is_an_error() {
        let es = training::EarlyStopping {
            monitor: Some("val/acc".into()),
            mode: Some(MonitorMode::Max),
            patience: 3,
            min_delta: 0.0,
        };
        let mut run = Scratch::new(TrainingConfig::default());
        let mut cb = EarlyStopping::new(&run.cfg, &es);
        let err = run
            .at(5, |ctx| cb.on_validation_end(ctx, &metrics(1.0)))
            .unwrap_err();
        assert!(err.to_string().contains("val/acc"), "{err}");
        let acc: IndexMap<String, f64> = [("val/acc".to_string(), 0.5)].into_iter().collect();
        run.at(5, |ctx| cb.on_validation_end(ctx, &acc)).unwrap();
        cb.wait = 2;
        let state: HashMap<String, Tensor> = cb.state().unwrap().into_iter().collect();
        let mut back = EarlyStopping::new(&run.cfg, &es);
        back.load_state(&state).unwrap();
        assert_eq!((back.best, back.best_step, back.wait), (Some(0.5), 5, 2));
    }
}
