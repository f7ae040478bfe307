//! The training loop: steps, validation cadence and the loop position.
//! Everything else (logging, checkpoints, early stopping, hot-swap, the
//! batch trace, stopping on a signal) is a [`Callback`].

use crate::callback::{Callback, FitContext, FitEnd, FitReport, Flow, StepOutcome, StopReason};
use crate::eval::MetricMeans;
use crate::logger::RunLogger;
pub use crate::position::Position;
use crate::progress::Progress;
use crate::run_dir::RunDir;
use crate::task::Task;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor, backprop::GradStore};
use indexmap::IndexMap;
use shimmer_config::TrainingConfig;
use shimmer_data::DataLoader;
use shimmer_data::batch::HostBatch;
use shimmer_nn::checkpoint;
use shimmer_nn::optim::Optimizer;
use std::collections::HashMap;
use std::time::Instant;

/// The loaders a loop reads.
pub struct Loaders<'a> {
    /// Training batches.
    pub train: &'a DataLoader,
    /// Validation batches.
    pub val: Option<&'a DataLoader>,
}

/// Loads a run's last checkpoint into `params` and `optimizer`, reading it
/// once, and returns its `trainer.*` entries (loop position, log
/// positions, task and callback state) for [`Trainer::restore`] and the
/// run's logs.
///
/// # Errors
/// A run without a last checkpoint, or one that does not fit the model.
pub fn load_last_checkpoint(
    run_dir: &RunDir,
    params: &shimmer_nn::ParamStore,
    optimizer: &mut Optimizer,
) -> Result<HashMap<String, Tensor>> {
    let path = run_dir.last_checkpoint();
    if !path.exists() {
        bail!(
            "{} has no checkpoint to resume from ({} is missing)",
            run_dir.path().display(),
            path.display()
        );
    }
    checkpoint::load_training(&path, params, optimizer)
}

/// Runs training of a [`Task`] to the end, calling its callbacks.
pub struct Trainer<'a, T: Task> {
    /// The model and its losses.
    pub task: T,
    /// Optimiser over the task's parameters.
    pub optimizer: Optimizer,
    /// Training settings.
    pub cfg: &'a TrainingConfig,
    /// Where checkpoints go.
    pub run_dir: &'a RunDir,
    /// TensorBoard and `scalars.jsonl` output.
    pub tb: RunLogger,
    /// Where training stands.
    pub position: Position,
    /// One training batch, one validation batch, then stop.
    pub fast_dev_run: bool,
    /// Last validation metrics.
    pub last_val: IndexMap<String, f64>,
    /// Called at each point of the loop, in order.
    pub callbacks: Vec<Box<dyn Callback>>,
    /// What the callbacks reported, for the run summary.
    pub report: FitReport,
}

/// The state of one [`Trainer::fit`] call.
struct Fit<'l, 'a> {
    loaders: &'l Loaders<'a>,
    total: u64,
    started: Instant,
    wall_before: f64,
    progress: Progress,
    /// Step of the last validation.
    validated_at: Option<u64>,
}

impl Fit<'_, '_> {
    /// Training wall time over all resumes.
    fn wall_time(&self) -> f64 {
        self.wall_before + self.started.elapsed().as_secs_f64()
    }
}

/// Number of optimiser steps of a run.
pub fn total_steps(cfg: &TrainingConfig, steps_per_epoch: usize) -> Result<u64> {
    let per_epoch = steps_per_epoch as u64;
    let from_epochs = match cfg.max_epochs {
        None => None,
        Some(e) => Some((e as u64).checked_mul(per_epoch).with_context(|| {
            format!(
                "training.max_epochs: {e} epochs of {per_epoch} batches is too many steps to count"
            )
        })?),
    };
    let total = match (cfg.max_steps.map(|s| s as u64), from_epochs) {
        (Some(s), Some(e)) => s.min(e),
        (Some(s), None) => s,
        (None, Some(e)) => e,
        (None, None) => {
            bail!("`training` sets neither `max_steps` nor `max_epochs`: say how long to train")
        }
    };
    if total == 0 {
        bail!("the run has no training step (an epoch has {per_epoch} batches)");
    }
    Ok(total)
}

impl<'a, T: Task> Trainer<'a, T> {
    /// A trainer at step 0 with these callbacks.
    pub fn new(
        task: T,
        optimizer: Optimizer,
        cfg: &'a TrainingConfig,
        run_dir: &'a RunDir,
        tb: RunLogger,
        callbacks: Vec<Box<dyn Callback>>,
    ) -> Self {
        Self {
            task,
            optimizer,
            cfg,
            run_dir,
            tb,
            position: Position::default(),
            fast_dev_run: false,
            last_val: IndexMap::new(),
            callbacks,
            report: FitReport::default(),
        }
    }

    /// Restores the loop position, the task's and the callbacks' state
    /// from `state`, the `trainer.*` entries [`load_last_checkpoint`] read
    /// (the weights and optimiser are loaded by then).
    pub fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let path = self.run_dir.last_checkpoint();
        self.position = Position::from_tensors(state, &path.display().to_string())?;
        self.task.load_state(state)?;
        for cb in &mut self.callbacks {
            cb.load_state(state)
                .with_context(|| format!("{}: state of `{}`", path.display(), cb.name()))?;
        }
        Ok(())
    }

    fn save(&mut self, path: &std::path::Path) -> Result<()> {
        let mut extra = self.position.to_tensors()?;
        // Everything logged so far is on disk before the checkpoint is.
        extra.extend(self.tb.position()?.to_tensors()?);
        extra.extend(self.task.state()?);
        for cb in &self.callbacks {
            extra.extend(cb.state()?);
        }
        checkpoint::save_training(path, self.task.params(), Some(&self.optimizer), &extra)
    }

    /// Calls `hook` on every callback with one context, then writes the
    /// checkpoints they asked for; returns the strongest [`Flow`] asked.
    fn dispatch(
        &mut self,
        progress: &Progress,
        total_steps: u64,
        mut hook: impl FnMut(&mut dyn Callback, &mut FitContext<'_>) -> Result<Flow>,
    ) -> Result<Flow> {
        let mut saves = Vec::new();
        let mut flow = Flow::Continue;
        let mut ctx = FitContext {
            position: &self.position,
            total_steps,
            cfg: self.cfg,
            run_dir: self.run_dir,
            logger: &mut self.tb,
            fast_dev_run: self.fast_dev_run,
            task: Some(&mut self.task),
            progress,
            saves: &mut saves,
            report: &mut self.report,
        };
        for cb in &mut self.callbacks {
            flow = flow.and(hook(cb.as_mut(), &mut ctx)?);
        }
        // One state, so serialise it once and copy it to the other paths.
        if let Some((first, rest)) = saves.split_first() {
            self.save(first)?;
            for path in rest {
                shimmer_sys::fs::write_atomic_with(path, |tmp, _| {
                    std::fs::copy(first, tmp)?;
                    Ok(())
                })?;
            }
        }
        Ok(flow)
    }

    /// Trains until `total` steps are done or a callback stops the fit.
    ///
    /// # Errors
    /// A failed step (a non-finite loss among them) or callback; a stop
    /// asked by a signal is the error [`crate::stop::Stopped`], after the
    /// last checkpoint is saved.
    pub fn fit(&mut self, loaders: &Loaders<'_>, total: u64) -> Result<FitEnd> {
        if loaders.train.is_empty() {
            bail!(
                "an epoch of the training set has no batch: every group needs at least \
                 `data.batch_size` items (or `data.drop_last: false`)"
            );
        }
        let mut fit = Fit {
            loaders,
            total,
            started: Instant::now(),
            wall_before: self.position.wall_time_s,
            progress: Progress::new(total, self.position.global_step),
            validated_at: None,
        };
        self.dispatch(&fit.progress, total, |cb, ctx| {
            cb.on_fit_start(ctx).map(|()| Flow::Continue)
        })?;
        let end = loop {
            if self.position.global_step >= total {
                break FitEnd::Completed;
            }
            if let Some(end) = self.run_epoch(&mut fit)? {
                break end;
            }
        };
        self.finish(&mut fit, end)
    }

    /// Trains the rest of the current epoch. `Some` when the fit ends in
    /// it; `None` at the epoch's end, or when a callback asked to reload
    /// the rest of the epoch.
    fn run_epoch(&mut self, fit: &mut Fit<'_, '_>) -> Result<Option<FitEnd>> {
        let epoch = self.position.epoch;
        let start = self.position.batch_in_epoch as usize;
        let batches = fit.loaders.train.epoch_from(epoch, start)?;
        let n_batches = start + batches.len();
        for (k, batch) in (start..).zip(batches) {
            let batch = batch.with_context(|| format!("training epoch {epoch}, batch {k}"))?;
            let at_epoch_end = k + 1 == n_batches;
            let (flow, done, validate) = self.step(fit, &batch, k, at_epoch_end)?;
            match flow {
                // A signal's stop keeps the position mid-epoch, as saved.
                Flow::Stop(reason @ StopReason::Interrupted { .. }) => {
                    return Ok(Some(FitEnd::Stopped(reason)));
                }
                Flow::Stop(reason) => {
                    self.end_epoch_if(at_epoch_end);
                    return Ok(Some(FitEnd::Stopped(reason)));
                }
                _ if done => {
                    self.end_epoch_if(at_epoch_end);
                    return Ok(Some(FitEnd::Completed));
                }
                _ => {}
            }
            self.end_epoch_if(at_epoch_end);
            // Validated after the step's callbacks logged it, so the
            // checkpoint a validation writes holds every step logged so far.
            if validate {
                let flow = self.validate(fit.loaders, &fit.progress, fit.total)?;
                fit.validated_at = Some(self.position.global_step);
                if let Flow::Stop(reason) = flow {
                    return Ok(Some(FitEnd::Stopped(reason)));
                }
            }
            if matches!(flow, Flow::ReloadEpoch) && !at_epoch_end {
                return Ok(None);
            }
        }
        if start == n_batches {
            // Resumed from a checkpoint written after the epoch's last step
            // (a signal's stop): the epoch ends, with its validation if due.
            self.end_epoch_if(true);
            let (step, epochs) = (self.position.global_step, self.position.epoch);
            if step < fit.total && self.validation_due(step, epochs, true) {
                let flow = self.validate(fit.loaders, &fit.progress, fit.total)?;
                fit.validated_at = Some(self.position.global_step);
                if let Flow::Stop(reason) = flow {
                    return Ok(Some(FitEnd::Stopped(reason)));
                }
            }
        }
        Ok(None)
    }

    /// Whether step `step`, after which `epochs_done` epochs are complete,
    /// is validated: every `val_every_n_steps` steps, and at the end of
    /// every `val_every_n_epochs`-th epoch (once when both fall on the same
    /// step). The fit's last step is validated by [`Trainer::finish`].
    fn validation_due(&self, step: u64, epochs_done: u64, at_epoch_end: bool) -> bool {
        let every_epochs = self.cfg.val_every_n_epochs as u64;
        let by_epoch = at_epoch_end && every_epochs > 0 && epochs_done.is_multiple_of(every_epochs);
        super::callbacks::every_n(step, self.cfg.val_every_n_steps) || by_epoch
    }

    /// One optimiser step on `batch` (the `k`-th of its epoch) and every
    /// callback's [`Callback::on_step_end`]; returns what they asked,
    /// whether it was the fit's last step and whether it is to be
    /// validated (which [`Trainer::run_epoch`] does once the step's
    /// callbacks have logged it).
    fn step(
        &mut self,
        fit: &mut Fit<'_, '_>,
        batch: &HostBatch,
        k: usize,
        at_epoch_end: bool,
    ) -> Result<(Flow, bool, bool)> {
        let total = fit.total;
        self.dispatch(&fit.progress, total, |cb, ctx| {
            cb.on_batch_start(ctx, batch, k).map(|()| Flow::Continue)
        })?;
        let mut outcome = self.train_step(batch, k)?;
        fit.progress
            .step(self.position.global_step, outcome.loss, outcome.rows);
        self.position.batch_in_epoch = k as u64 + 1;
        self.position.wall_time_s = fit.wall_time();
        let step = self.position.global_step;
        let done = step >= total || self.fast_dev_run;
        // The epoch counter moves after the callbacks: ask as it will be.
        let epochs_done = self.position.epoch + u64::from(at_epoch_end);
        outcome.validated = !done && self.validation_due(step, epochs_done, at_epoch_end);
        let flow = self.dispatch(&fit.progress, total, |cb, ctx| {
            cb.on_step_end(ctx, &outcome)
        })?;
        Ok((flow, done, outcome.validated))
    }

    /// Ends a fit: after a signal, saves and returns [`crate::stop::Stopped`];
    /// otherwise validates the final weights (unless that step was just
    /// validated) and calls the callbacks' [`Callback::on_fit_end`].
    fn finish(&mut self, fit: &mut Fit<'_, '_>, end: FitEnd) -> Result<FitEnd> {
        self.position.wall_time_s = fit.wall_time();
        let total = fit.total;
        if let FitEnd::Stopped(StopReason::Interrupted { signal }) = &end {
            let signal = *signal;
            self.dispatch(&fit.progress, total, |cb, ctx| {
                cb.on_fit_end(ctx, &end).map(|()| Flow::Continue)
            })?;
            self.tb.flush()?;
            fit.progress.finish();
            return Err(crate::stop::Stopped {
                signal,
                step: self.position.global_step,
                run_dir: self.run_dir.path().display().to_string(),
            }
            .into());
        }
        if let FitEnd::Stopped(StopReason::Finished(reason)) = &end {
            let step = self.position.global_step;
            fit.progress.println(&format!("step {step}: {reason}"));
            self.report.stop_reason = Some(reason.clone());
            self.report.stopped_at_step = Some(step);
        }
        if fit.validated_at != Some(self.position.global_step) {
            self.validate(fit.loaders, &fit.progress, total)?;
        }
        self.dispatch(&fit.progress, total, |cb, ctx| {
            cb.on_fit_end(ctx, &end).map(|()| Flow::Continue)
        })?;
        fit.progress.finish();
        Ok(end)
    }

    fn end_epoch_if(&mut self, at_epoch_end: bool) {
        if at_epoch_end {
            self.position.epoch += 1;
            self.position.batch_in_epoch = 0;
        }
    }

    fn train_step(&mut self, batch: &HostBatch, k: usize) -> Result<StepOutcome> {
        let step = self.position.global_step;
        let out = self.task.train_step(batch)?;
        let loss = out.loss_value;
        if !loss.is_finite() {
            let last = self.run_dir.last_checkpoint();
            return Err(anyhow::Error::new(crate::failure::NonFiniteLoss(format!(
                "the training loss became {loss} at step {step} (epoch {}, batch {k}); \
                 training stopped. {} Metrics of that step: {}",
                self.position.epoch,
                if last.exists() {
                    format!("The last good checkpoint is kept at {}.", last.display())
                } else {
                    "No checkpoint was written before it.".to_string()
                },
                out.metrics
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))));
        }
        let (lr, _beta1) = self.optimizer.current()?;
        let mut grads = out.loss.backward()?;
        if let Some(max_norm) = self.cfg.gradient_clip {
            clip_grad_norm(&mut grads, self.task.params(), max_norm)?;
        }
        self.optimizer.step(&grads)?;
        self.position.global_step += 1;
        Ok(StepOutcome {
            loss,
            metrics: out.metrics,
            lr,
            rows: batch.groups.values().map(|g| g.rows()).sum(),
            validated: false,
        })
    }

    /// Runs the validation set, tracks the best monitored value, and calls
    /// the callbacks' [`Callback::on_validation_end`] (which log `val/*` and
    /// write `last` and `best`).
    fn validate(&mut self, loaders: &Loaders<'_>, progress: &Progress, total: u64) -> Result<Flow> {
        let means = match loaders.val {
            None => IndexMap::new(),
            Some(val) => evaluate(&mut self.task, val, "val", self.fast_dev_run)?,
        };
        if !means.is_empty() {
            let monitor = &self.cfg.monitor;
            let value = *means.get(monitor).with_context(|| {
                format!(
                    "the monitored metric `{monitor}` (training.monitor) is not among the \
                     validation metrics: {}",
                    means
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            if self.cfg.mode.improves(value, self.position.best_value) {
                self.position.best_value = Some(value);
                self.position.best_step = Some(self.position.global_step);
            }
            progress.println(&format!(
                "step {}  {monitor} {value:.5}  (best {:.5} at step {})",
                self.position.global_step,
                self.position.best_value.unwrap_or(f64::NAN),
                self.position.best_step.unwrap_or(0)
            ));
        }
        let flow = self.dispatch(progress, total, |cb, ctx| cb.on_validation_end(ctx, &means))?;
        if !means.is_empty() {
            self.last_val = means;
        }
        Ok(flow)
    }
}

/// Means of `loss` and every metric over one pass of `loader`, weighted by
/// batch size, named `{prefix}/{name}`.
pub fn evaluate<T: Task + ?Sized>(
    task: &mut T,
    loader: &DataLoader,
    prefix: &str,
    one_batch: bool,
) -> Result<IndexMap<String, f64>> {
    task.start_evaluation()?;
    let means = evaluate_pass(task, loader, prefix, one_batch);
    let ended = task.end_evaluation();
    let means = means?;
    ended?;
    Ok(means)
}

/// One pass of [`evaluate`], between the task's start and end of evaluation.
fn evaluate_pass<T: Task + ?Sized>(
    task: &mut T,
    loader: &DataLoader,
    prefix: &str,
    one_batch: bool,
) -> Result<IndexMap<String, f64>> {
    let mut means = MetricMeans::default();
    for (k, batch) in loader.epoch(0)?.enumerate() {
        let batch = batch.with_context(|| format!("{prefix} batch {k}"))?;
        let out = task.eval_step(&batch)?;
        let loss = out.loss_value;
        let rows = batch.groups.values().map(|g| g.rows()).max().unwrap_or(0);
        means.add(
            std::iter::once(("loss", loss))
                .chain(out.metrics.iter().map(|(n, v)| (n.as_str(), *v))),
            rows,
        );
        if one_batch {
            break;
        }
    }
    Ok(means.means(prefix))
}

/// Scales gradients so their global L2 norm is at most `max_norm`, as
/// PyTorch's `clip_grad_norm_` (with its `1e-6` guard).
fn clip_grad_norm(
    grads: &mut GradStore,
    params: &shimmer_nn::params::ParamStore,
    max_norm: f64,
) -> Result<()> {
    // Squared norms summed on the device: one read back per step, not one
    // per parameter.
    let mut squares: Option<Tensor> = None;
    for var in params.params().values() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let s = g.to_dtype(DType::F64)?.sqr()?.sum_all()?;
            squares = Some(match squares {
                None => s,
                Some(acc) => (acc + s)?,
            });
        }
    }
    let Some(squares) = squares else {
        return Ok(());
    };
    let total = squares.to_scalar::<f64>()?;
    let coef = max_norm / (total.sqrt() + 1e-6);
    if coef < 1.0 {
        for var in params.params().values() {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * coef)?);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_steps_takes_the_shorter_limit() {
        let mut cfg = TrainingConfig::default();
        assert!(total_steps(&cfg, 10).is_err());
        cfg.max_epochs = Some(3);
        assert_eq!(total_steps(&cfg, 10).unwrap(), 30);
        cfg.max_steps = Some(25);
        assert_eq!(total_steps(&cfg, 10).unwrap(), 25);
        cfg.max_steps = Some(100);
        assert_eq!(total_steps(&cfg, 10).unwrap(), 30);
    }

    #[test]
    fn gradient_clipping_scales_to_the_global_norm() {
        use candle_core::Device;
        use shimmer_nn::params::ParamStore;
        let mut store = ParamStore::new(&Device::Cpu, DType::F32);
        let a = store
            .add_param("a", Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        let b = store
            .add_param("b", Tensor::new(&[1f32], &Device::Cpu).unwrap())
            .unwrap();
        // loss = 3 a0 + 4 a1 + 12 b: gradients (3, 4) and (12), global norm 13.
        let loss = || {
            let w = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
            let l = (a.as_tensor() * &w).unwrap().sum_all().unwrap();
            (l + (b.as_tensor() * 12.0).unwrap().sum_all().unwrap()).unwrap()
        };
        let grad = |g: &GradStore, v: &candle_core::Var| {
            g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap()
        };
        let mut grads = loss().backward().unwrap();
        clip_grad_norm(&mut grads, &store, 1.3).unwrap();
        let coef = 1.3 / (13.0 + 1e-6);
        let (ga, gb) = (grad(&grads, &a), grad(&grads, &b));
        for (got, want) in ga.iter().chain(&gb).zip([3.0, 4.0, 12.0]) {
            assert!(
                (f64::from(*got) - want * coef).abs() < 1e-6,
                "{got} vs {}",
                want * coef
            );
        }
        // Below the bound nothing changes.
        let mut grads = loss().backward().unwrap();
        clip_grad_norm(&mut grads, &store, 100.0).unwrap();
        assert_eq!(grad(&grads, &a), [3.0, 4.0]);
        assert_eq!(grad(&grads, &b), [12.0]);
    }
}
