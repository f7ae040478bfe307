//! The trainer's extension points, in the spirit of Lightning's `Callback`
//! and burn's learner: a [`Callback`] is called when a fit starts, before
//! and after each optimiser step, after each validation and when the fit
//! ends, and says whether training goes on ([`Flow`]). Logging, checkpoint
//! policy, early stopping, the learning-rate monitor, plugin hot-swap, the
//! batch trace and stopping on a signal are callbacks
//! ([`crate::callbacks`]); the loop itself only steps, validates and
//! counts.
//!
//! ```
//! use shimmer_train::callback::{Callback, FitContext, Flow, StepOutcome};
//!
//! /// Stops the run once the training loss is below a threshold.
//! struct StopBelow(f32);
//!
//! impl Callback for StopBelow {
//!     fn name(&self) -> &'static str {
//!         "stop-below"
//!     }
//!     fn on_step_end(&mut self, ctx: &mut FitContext<'_>, step: &StepOutcome) -> anyhow::Result<Flow> {
//!         Ok(if step.loss < self.0 {
//!             Flow::stop(format!("loss {} below {} at step {}", step.loss, self.0, ctx.position.global_step))
//!         } else {
//!             Flow::Continue
//!         })
//!     }
//! }
//! ```

use crate::logger::RunLogger;
use crate::position::Position;
use crate::progress::Progress;
use crate::run_dir::{KeptCheckpoint, RunDir};
use anyhow::Result;
use candle_core::Tensor;
use indexmap::IndexMap;
use shimmer_config::TrainingConfig;
use shimmer_data::HostBatch;
use std::collections::HashMap;
use std::path::PathBuf;

/// What a callback asks of the loop after a hook.
#[derive(Clone, Debug, PartialEq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// End training now (after this step), as a finished run.
    Stop(StopReason),
    /// Batches prepared ahead are stale (a plugin was swapped): load the
    /// rest of the epoch anew from the next batch.
    ReloadEpoch,
}

impl Flow {
    /// A stop of a finished run, for `reason` (said in the log and in
    /// `summary.json`).
    pub fn stop(reason: impl Into<String>) -> Self {
        Flow::Stop(StopReason::Finished(reason.into()))
    }

    /// The stronger of two requests: a stop wins over a reload, a reload
    /// over going on; of two stops, the first.
    pub fn and(self, other: Flow) -> Flow {
        match (self, other) {
            (Flow::Stop(r), _) | (_, Flow::Stop(r)) => Flow::Stop(r),
            (Flow::ReloadEpoch, _) | (_, Flow::ReloadEpoch) => Flow::ReloadEpoch,
            _ => Flow::Continue,
        }
    }
}

/// Why a fit stopped before its last step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A policy ended training early (early stopping); the run finishes
    /// normally: its best checkpoint is validated and tested.
    Finished(String),
    /// A signal asked for a stop: the last checkpoint is saved and the run
    /// ends as interrupted, to be resumed.
    Interrupted {
        /// The signal, e.g. `SIGTERM`.
        signal: &'static str,
    },
}

/// How a fit ended, as the callbacks' [`Callback::on_fit_end`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FitEnd {
    /// Every step was done.
    Completed,
    /// A callback stopped it.
    Stopped(StopReason),
}

/// One optimiser step, as callbacks see it.
#[derive(Clone, Debug)]
pub struct StepOutcome {
    /// Training loss of the step.
    pub loss: f32,
    /// Its metrics, under shimmer's names (without `train/`).
    pub metrics: Vec<(String, f32)>,
    /// Learning rate the step used.
    pub lr: f64,
    /// Items in the batch.
    pub rows: usize,
    /// Whether a validation follows this step, once every callback has
    /// seen it (that validation writes `last`).
    pub validated: bool,
}

/// What the callbacks may read and ask for during a hook.
pub struct FitContext<'a> {
    /// Where training stands (after the step, during step hooks).
    pub position: &'a Position,
    /// Steps of the whole fit.
    pub total_steps: u64,
    /// Training settings.
    pub cfg: &'a TrainingConfig,
    /// The run folder.
    pub run_dir: &'a RunDir,
    /// TensorBoard and `scalars.jsonl`.
    pub logger: &'a mut RunLogger,
    /// One training and one validation batch only.
    pub fast_dev_run: bool,
    /// The model being trained (absent in callback unit tests).
    pub task: Option<&'a mut dyn crate::task::Task>,
    pub(crate) progress: &'a Progress,
    pub(crate) saves: &'a mut Vec<PathBuf>,
    pub(crate) report: &'a mut FitReport,
}

impl FitContext<'_> {
    /// Whether the step just done is the fit's last.
    pub fn is_last_step(&self) -> bool {
        self.fast_dev_run || self.position.global_step >= self.total_steps
    }

    /// Prints a line without breaking the progress bar.
    pub fn println(&self, line: &str) {
        self.progress.println(line);
    }

    /// Asks for a training checkpoint (weights, optimiser, loop and
    /// callback state) at `path`, written atomically once the hook returns.
    pub fn save_checkpoint(&mut self, path: PathBuf) {
        if !self.saves.contains(&path) {
            self.saves.push(path);
        }
    }

    /// What the fit reports to the run summary (kept checkpoints, why it
    /// stopped).
    pub fn report(&mut self) -> &mut FitReport {
        self.report
    }
}

/// What callbacks report of a fit, for `summary.json`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FitReport {
    /// The best checkpoints kept, best first.
    pub top_k: Vec<KeptCheckpoint>,
    /// Why training stopped before its last step, if it did.
    pub stop_reason: Option<String>,
    /// Step it stopped at.
    pub stopped_at_step: Option<u64>,
}

/// A trainer callback. Every hook has a default that does nothing, so a
/// callback implements only what it needs.
pub trait Callback {
    /// Short name, for errors (`checkpoint`, `early-stopping`).
    fn name(&self) -> &'static str;

    /// Once, before the first step (also when resuming).
    fn on_fit_start(&mut self, _ctx: &mut FitContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Before the step of `batch`, the `batch_in_epoch`-th of the epoch.
    fn on_batch_start(
        &mut self,
        _ctx: &mut FitContext<'_>,
        _batch: &HostBatch,
        _batch_in_epoch: usize,
    ) -> Result<()> {
        Ok(())
    }

    /// After each optimiser step (and the validation it triggered, if any).
    fn on_step_end(&mut self, _ctx: &mut FitContext<'_>, _step: &StepOutcome) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// After each validation, with its `val/*` means (empty when the run
    /// has no validation set).
    fn on_validation_end(
        &mut self,
        _ctx: &mut FitContext<'_>,
        _metrics: &IndexMap<String, f64>,
    ) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Once, when the fit ends without error.
    fn on_fit_end(&mut self, _ctx: &mut FitContext<'_>, _end: &FitEnd) -> Result<()> {
        Ok(())
    }

    /// State to keep in checkpoints (tensors named `trainer.<name>.*`),
    /// so a resumed run goes on exactly where it stopped.
    fn state(&self) -> Result<IndexMap<String, Tensor>> {
        Ok(IndexMap::new())
    }

    /// Restores what [`Callback::state`] saved, from a checkpoint's tensors.
    fn load_state(&mut self, _tensors: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}
