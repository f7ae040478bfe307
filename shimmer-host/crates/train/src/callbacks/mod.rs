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
