//! Checkpoint policy (`training.checkpoints`): which training checkpoints
//! are written, and which are kept.
//!
//! * `last.safetensors` after each validation, every `every_n_steps`, and
//!   when a signal stops the run: what `--resume` continues from;
//! * `best.safetensors` whenever the monitored metric improves;
//! * with `save_top_k: k > 1`, the k best as `top-step<N>.safetensors`
//!   (a better one evicts the worst);
//! * with `keep_every_n_steps: n`, a kept copy `step-<N>.safetensors`
//!   every n steps (history, never deleted).
//!
//! The kept list, with steps and values, goes to `summary.json` (`top_k`)
//! and into each checkpoint, so a resumed run keeps evicting correctly.

use super::every_n;
use crate::callback::{Callback, FitContext, FitEnd, Flow, StepOutcome, StopReason};
use crate::run_dir::KeptCheckpoint;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use indexmap::IndexMap;
use shimmer_config::{CheckpointPolicy, MonitorMode, TrainingConfig};
use std::collections::HashMap;

const STEPS: &str = "trainer.checkpoint.top_k_steps";
const VALUES: &str = "trainer.checkpoint.top_k_values";

/// Writes and prunes training checkpoints by `training.checkpoints`.
#[derive(Debug)]
pub struct CheckpointSaver {
    policy: CheckpointPolicy,
    last_every: Option<usize>,
    monitor: String,
    mode: MonitorMode,
    /// Kept top-k checkpoints, best first (`save_top_k > 1` only).
    kept: Vec<(u64, f64)>,
}

impl CheckpointSaver {
    /// The policy of `cfg`.
    pub fn new(cfg: &TrainingConfig) -> Self {
        Self {
            policy: cfg.checkpoints.clone(),
            last_every: cfg.last_every_n_steps(),
            monitor: cfg.monitor.clone(),
            mode: cfg.mode,
            kept: Vec::new(),
        }
    }

    fn top_file(step: u64) -> String {
        format!("checkpoints/top-step{step}.safetensors")
    }

    /// Adds the checkpoint of `step` to the top-k if it belongs there;
    /// returns whether it does, after removing the files it evicts.
    fn admit(&mut self, ctx: &FitContext<'_>, step: u64, value: f64) -> Result<bool> {
        if !value.is_finite() || self.kept.iter().any(|(s, _)| *s == step) {
            return Ok(false);
        }
        let k = self.policy.save_top_k;
        let worst = self.kept.last().map(|(_, v)| *v);
        if self.kept.len() >= k && !self.mode.improves(value, worst) {
            return Ok(false);
        }
        let at = self
            .kept
            .iter()
            .position(|(_, v)| self.mode.improves(value, Some(*v)))
            .unwrap_or(self.kept.len());
        self.kept.insert(at, (step, value));
        for (evicted, _) in self.kept.split_off(k.min(self.kept.len())) {
            let file = ctx.run_dir.path().join(Self::top_file(evicted));
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", file.display()));
                }
            }
        }
        Ok(true)
    }

    fn report(&self, ctx: &mut FitContext<'_>) {
        let kept = if self.policy.save_top_k > 1 {
            self.kept
                .iter()
                .map(|&(step, value)| KeptCheckpoint {
                    step,
                    value,
                    file: Self::top_file(step),
                })
                .collect()
        } else {
            match (ctx.position.best_step, ctx.position.best_value) {
                (Some(step), Some(value)) => vec![KeptCheckpoint {
                    step,
                    value,
                    file: "checkpoints/best.safetensors".to_string(),
                }],
                _ => Vec::new(),
            }
        };
        ctx.report().top_k = kept;
    }
}

impl Callback for CheckpointSaver {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn on_fit_start(&mut self, ctx: &mut FitContext<'_>) -> Result<()> {
        self.report(ctx);
        Ok(())
    }

    fn on_step_end(&mut self, ctx: &mut FitContext<'_>, step: &StepOutcome) -> Result<Flow> {
        let at = ctx.position.global_step;
        if !step.validated && every_n(at, self.last_every) {
            ctx.save_checkpoint(ctx.run_dir.last_checkpoint());
        }
        if every_n(at, self.policy.keep_every_n_steps) {
            let file = ctx
                .run_dir
                .path()
                .join(format!("checkpoints/step-{at}.safetensors"));
            ctx.save_checkpoint(file);
        }
        Ok(Flow::Continue)
    }

    fn on_validation_end(
        &mut self,
        ctx: &mut FitContext<'_>,
        metrics: &IndexMap<String, f64>,
    ) -> Result<Flow> {
        let step = ctx.position.global_step;
        if let Some(&value) = metrics.get(&self.monitor) {
            if ctx.position.best_step == Some(step) {
                ctx.save_checkpoint(ctx.run_dir.best_checkpoint());
            }
            if self.policy.save_top_k > 1 && self.admit(ctx, step, value)? {
                let file = ctx.run_dir.path().join(Self::top_file(step));
                ctx.save_checkpoint(file);
            }
        }
        self.report(ctx);
        ctx.save_checkpoint(ctx.run_dir.last_checkpoint());
        Ok(Flow::Continue)
    }

    fn on_fit_end(&mut self, ctx: &mut FitContext<'_>, end: &FitEnd) -> Result<()> {
        if matches!(end, FitEnd::Stopped(StopReason::Interrupted { .. })) {
            ctx.save_checkpoint(ctx.run_dir.last_checkpoint());
        }
        self.report(ctx);
        Ok(())
    }

    fn state(&self) -> Result<IndexMap<String, Tensor>> {
        let mut out = IndexMap::new();
        if self.policy.save_top_k > 1 {
            let steps: Vec<i64> = self.kept.iter().map(|(s, _)| *s as i64).collect();
            let values: Vec<f64> = self.kept.iter().map(|(_, v)| *v).collect();
            let n = steps.len();
            out.insert(STEPS.into(), Tensor::from_vec(steps, n, &Device::Cpu)?);
            out.insert(VALUES.into(), Tensor::from_vec(values, n, &Device::Cpu)?);
        }
        Ok(out)
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        if let (Some(steps), Some(values)) = (tensors.get(STEPS), tensors.get(VALUES)) {
            let steps = steps.to_vec1::<i64>()?;
            let values = values.to_vec1::<f64>()?;
            self.kept = steps.into_iter().map(|s| s as u64).zip(values).collect();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::testing::Scratch;

    fn validate(run: &mut Scratch, cb: &mut CheckpointSaver, step: u64, v: f64) -> Vec<String> {
        if run.cfg.mode.improves(v, run.position.best_value) {
            run.position.best_value = Some(v);
            run.position.best_step = Some(step);
        }
        let m: IndexMap<String, f64> = [("val/loss".to_string(), v)].into_iter().collect();
        run.at(step, |ctx| cb.on_validation_end(ctx, &m).unwrap());
        run.take_saves()
    }

    #[test]
    fn keeps_the_k_best_and_evicts_the_worst() {
        let mut cfg = TrainingConfig::default();
        cfg.checkpoints.save_top_k = 2;
        let mut run = Scratch::new(cfg);
        let mut cb = CheckpointSaver::new(&run.cfg);
        let saves = validate(&mut run, &mut cb, 1, 0.5);
        assert_eq!(
            saves,
            [
                "best.safetensors",
                "top-step1.safetensors",
                "last.safetensors"
            ]
        );
        assert_eq!(
            validate(&mut run, &mut cb, 2, 0.7),
            ["top-step2.safetensors", "last.safetensors"]
        );
        // Stand-ins for the files the trainer would write.
        for s in [1, 2] {
            std::fs::write(run.run_dir.path().join(CheckpointSaver::top_file(s)), b"").unwrap();
        }
        assert_eq!(
            validate(&mut run, &mut cb, 3, 0.6),
            ["top-step3.safetensors", "last.safetensors"]
        );
        assert!(
            !run.run_dir
                .path()
                .join(CheckpointSaver::top_file(2))
                .exists()
        );
        assert!(
            run.run_dir
                .path()
                .join(CheckpointSaver::top_file(1))
                .exists()
        );
        assert_eq!(validate(&mut run, &mut cb, 4, 0.9), ["last.safetensors"]);
        let kept: Vec<(u64, f64)> = run.report.top_k.iter().map(|k| (k.step, k.value)).collect();
        assert_eq!(kept, [(1, 0.5), (3, 0.6)]);
        // A resumed run keeps the list.
        let state: HashMap<String, Tensor> = cb.state().unwrap().into_iter().collect();
        let mut back = CheckpointSaver::new(&run.cfg);
        back.load_state(&state).unwrap();
        assert_eq!(back.kept, cb.kept);
    }

    #[test]
    fn periodic_and_history_checkpoints_follow_their_cadence() {
        let mut cfg = TrainingConfig::default();
        cfg.checkpoints.every_n_steps = Some(3);
        cfg.checkpoints.keep_every_n_steps = Some(4);
        let mut run = Scratch::new(cfg);
        let mut cb = CheckpointSaver::new(&run.cfg);
        let mut asked = Vec::new();
        for step in 1..=12 {
            let outcome = StepOutcome {
                loss: 0.0,
                metrics: Vec::new(),
                lr: 0.0,
                rows: 1,
                validated: step == 6,
            };
            run.at(step, |ctx| cb.on_step_end(ctx, &outcome).unwrap());
            asked.extend(run.take_saves().into_iter().map(|f| (step, f)));
        }
        let want: Vec<(u64, String)> = [
            (3, "last"),
            (4, "step-4"),
            (8, "step-8"),
            (9, "last"),
            (12, "last"),
            (12, "step-12"),
        ]
        .into_iter()
        .map(|(s, f)| (s, format!("{f}.safetensors")))
        .collect();
        // Step 6 validated (which writes `last` itself), so no extra write.
        assert_eq!(asked, want);
    }
}
