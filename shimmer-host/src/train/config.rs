//! The `training:` section of an experiment: how long to train, how often to
//! log and validate, what to monitor for the best checkpoint.
//!
//! ```yaml
//! training:
//!   max_epochs: 4
//!   log_every_n_steps: 10
//!   val_every_n_epochs: 1
//!   monitor: val/loss
//!   mode: min
//!   gradient_clip: 1.0
//! ```

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Training length, logging, validation and checkpointing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Stop after this many optimiser steps.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Stop after this many epochs (when `max_steps` is not reached first).
    #[serde(default)]
    pub max_epochs: Option<usize>,
    /// Log `train/*` scalars every this many steps (Lightning's default 50).
    #[serde(default = "default_log_every")]
    pub log_every_n_steps: usize,
    /// Validate every this many steps, in addition to epoch ends.
    #[serde(default)]
    pub val_every_n_steps: Option<usize>,
    /// Validate at the end of every this many epochs (0: never at epoch ends).
    #[serde(default = "one")]
    pub val_every_n_epochs: usize,
    /// Also write `checkpoints/last.safetensors` every this many steps (it is
    /// always written after each validation and at the end).
    #[serde(default)]
    pub checkpoint_every_n_steps: Option<usize>,
    /// Metric that picks `checkpoints/best.safetensors`.
    #[serde(default = "default_monitor")]
    pub monitor: String,
    /// Whether the monitored metric is better when lower or higher.
    #[serde(default)]
    pub mode: MonitorMode,
    /// Clip the global gradient norm to this value (Lightning's
    /// `gradient_clip_val` with the `norm` algorithm).
    #[serde(default)]
    pub gradient_clip: Option<f64>,
    /// Folder that holds `<experiment>/<run-id>/` run folders.
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
}

fn default_log_every() -> usize {
    50
}
fn one() -> usize {
    1
}
fn default_monitor() -> String {
    "val/loss".to_string()
}
fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            max_steps: None,
            max_epochs: None,
            log_every_n_steps: default_log_every(),
            val_every_n_steps: None,
            val_every_n_epochs: one(),
            checkpoint_every_n_steps: None,
            monitor: default_monitor(),
            mode: MonitorMode::Min,
            gradient_clip: None,
            runs_dir: default_runs_dir(),
        }
    }
}

/// Direction of the monitored metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorMode {
    /// Lower is better (losses).
    #[default]
    Min,
    /// Higher is better (accuracies).
    Max,
}

impl MonitorMode {
    /// Whether `candidate` improves on `best`.
    pub fn improves(self, candidate: f64, best: Option<f64>) -> bool {
        match best {
            None => candidate.is_finite(),
            Some(b) => match self {
                MonitorMode::Min => candidate < b,
                MonitorMode::Max => candidate > b,
            },
        }
    }

    /// `min` or `max`.
    pub fn name(self) -> &'static str {
        match self {
            MonitorMode::Min => "min",
            MonitorMode::Max => "max",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_modes_compare_as_named() {
        assert!(MonitorMode::Min.improves(0.5, Some(0.6)));
        assert!(!MonitorMode::Min.improves(0.7, Some(0.6)));
        assert!(MonitorMode::Max.improves(0.7, Some(0.6)));
        assert!(MonitorMode::Min.improves(1.0, None));
        assert!(!MonitorMode::Min.improves(f64::NAN, None));
    }
}
