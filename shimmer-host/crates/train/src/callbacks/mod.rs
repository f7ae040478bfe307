//! The callbacks every run uses, and the list a run is built with.
//!
//! | callback | what it does |
//! |---|---|
//! | [`ScalarLogger`] | `train/*` every `log_every_n_steps`, `val/*` after each validation |
//! | [`LrMonitor`] | `lr-AdamW`, as Lightning's `LearningRateMonitor` |
//! | [`CheckpointSaver`] | `last`, `best`, the top-k and the kept history (`training.checkpoints`) |
//! | [`EarlyStopping`] | stops when the monitor stops improving (`training.early_stopping`) |
//! | [`BatchTrace`] | records which items each step used (`SHIMMER_TRACE_BATCHES`) |
//! | [`HotSwap`] | swaps rebuilt plugins in between steps (`shimmer run --watch`) |
//! | [`SignalStop`] | ends the run cleanly on SIGINT, SIGTERM or SIGHUP |

mod batch_trace;
mod checkpoint;
mod early_stopping;
mod hot_swap;
mod logging;
mod signal_stop;

pub use batch_trace::{BatchTrace, TRACE_ENV};
pub use checkpoint::CheckpointSaver;
pub use early_stopping::EarlyStopping;
pub use hot_swap::HotSwap;
pub use logging::{LrMonitor, ScalarLogger};
pub use signal_stop::SignalStop;

use crate::callback::Callback;
use crate::stop::StopRequest;
use anyhow::Result;
use shimmer_config::TrainingConfig;
use shimmer_data::swap::PluginWatcher;

/// The callbacks of a run with these settings, in the order they are
/// called: logging first, then checkpoints (so a checkpoint written at a
/// step holds what was logged), then the policies that may stop the run.
///
/// # Errors
/// When the batch trace file cannot be opened.
pub fn standard(
    cfg: &TrainingConfig,
    watcher: Option<PluginWatcher>,
    stop: StopRequest,
) -> Result<Vec<Box<dyn Callback>>> {
    let mut list: Vec<Box<dyn Callback>> = vec![
        Box::new(ScalarLogger::new(cfg)),
        Box::new(LrMonitor::new(cfg)),
        Box::new(CheckpointSaver::new(cfg)),
    ];
    if let Some(es) = &cfg.early_stopping {
        list.push(Box::new(EarlyStopping::new(cfg, es)));
    }
    if let Some(trace) = BatchTrace::from_env()? {
        list.push(Box::new(trace));
    }
    if let Some(watcher) = watcher {
        list.push(Box::new(HotSwap::new(watcher)));
    }
    list.push(Box::new(SignalStop::new(stop)));
    Ok(list)
}

/// Whether `step` is a positive multiple of `every` (`None` or 0: never).
pub(crate) fn every_n(step: u64, every: Option<usize>) -> bool {
    every.is_some_and(|n| n > 0 && step > 0 && step.is_multiple_of(n as u64))
}

/// A context over a scratch run folder, for the callbacks' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::callback::{FitContext, FitReport};
    use crate::logger::RunLogger;
    use crate::position::Position;
    use crate::progress::Progress;
    use crate::run_dir::RunDir;
    use shimmer_config::TrainingConfig;
    use std::path::PathBuf;

    /// A scratch run: its folder, settings, position and what was asked.
    pub(crate) struct Scratch {
        pub(crate) _tmp: tempfile::TempDir,
        pub(crate) run_dir: RunDir,
        pub(crate) cfg: TrainingConfig,
        pub(crate) position: Position,
        pub(crate) logger: RunLogger,
        pub(crate) progress: Progress,
        pub(crate) saves: Vec<PathBuf>,
        pub(crate) report: FitReport,
    }

    impl Scratch {
        pub(crate) fn new(cfg: TrainingConfig) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let run_dir = RunDir::create(Some(&tmp.path().join("run")), tmp.path(), "t").unwrap();
            let logger = RunLogger::create(run_dir.path()).unwrap();
            Self {
                _tmp: tmp,
                run_dir,
                cfg,
                position: Position::default(),
                logger,
                progress: Progress::new(100, 0),
                saves: Vec::new(),
                report: FitReport::default(),
            }
        }

        /// Runs `f` with a context at `step` (the saves it asks are kept).
        pub(crate) fn at<R>(&mut self, step: u64, f: impl FnOnce(&mut FitContext<'_>) -> R) -> R {
            self.position.global_step = step;
            let mut ctx = FitContext {
                position: &self.position,
                total_steps: 100,
                cfg: &self.cfg,
                run_dir: &self.run_dir,
                logger: &mut self.logger,
                fast_dev_run: false,
                task: None,
                progress: &self.progress,
                saves: &mut self.saves,
                report: &mut self.report,
            };
            f(&mut ctx)
        }

        /// File names of the checkpoints asked for since the last call.
        pub(crate) fn take_saves(&mut self) -> Vec<String> {
            std::mem::take(&mut self.saves)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cadences_skip_step_zero_and_zero_periods() {
        assert!(super::every_n(10, Some(5)));
        assert!(!super::every_n(11, Some(5)));
        assert!(!super::every_n(0, Some(5)));
        assert!(!super::every_n(10, Some(0)));
        assert!(!super::every_n(10, None));
    }
}
