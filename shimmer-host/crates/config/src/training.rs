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

use crate::check::CheckError;
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
    /// Older spelling of `checkpoints.every_n_steps`, still accepted.
    #[serde(default)]
    pub checkpoint_every_n_steps: Option<usize>,
    /// Which checkpoints are written and kept.
    #[serde(default)]
    pub checkpoints: CheckpointPolicy,
    /// Stop when the monitored metric stops improving.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
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
    /// Validation items drawn in image grids after each validation
    /// (reconstructions, demi-cycles, translations of domains whose plugin
    /// draws its items); 0 turns the grids off.
    #[serde(default = "default_images")]
    pub images: usize,
    /// Seconds a call into a plugin may take before the run names it (the
    /// plugin, domain, operation and items) on the terminal; 0 turns the
    /// watchdog off. The run keeps waiting: Ctrl-C stops it.
    #[serde(default = "default_watchdog_s")]
    pub watchdog_s: u64,
}

fn default_watchdog_s() -> u64 {
    300
}

/// Most items an image grid shows.
pub const MAX_IMAGE_ITEMS: usize = 64;

fn default_images() -> usize {
    8
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
            checkpoints: CheckpointPolicy::default(),
            early_stopping: None,
            monitor: default_monitor(),
            mode: MonitorMode::Min,
            gradient_clip: None,
            runs_dir: default_runs_dir(),
            images: default_images(),
            watchdog_s: default_watchdog_s(),
        }
    }
}

impl TrainingConfig {
    /// Steps between extra writes of `last.safetensors`, from either spelling.
    pub fn last_every_n_steps(&self) -> Option<usize> {
        self.checkpoints
            .every_n_steps
            .or(self.checkpoint_every_n_steps)
    }

    /// Range checks of the section (see [`crate::Experiment::check`]).
    ///
    /// # Errors
    /// The first key out of range.
    pub fn check(&self) -> Result<(), CheckError> {
        if self.checkpoint_every_n_steps.is_some() && self.checkpoints.every_n_steps.is_some() {
            return Err(CheckError::new(
                "training.checkpoint_every_n_steps",
                "set `training.checkpoints.every_n_steps` or its older spelling \
                 `training.checkpoint_every_n_steps`, not both",
            ));
        }
        if self.images > MAX_IMAGE_ITEMS {
            return Err(CheckError::new(
                "training.images",
                format!(
                    "`images` is {}: image grids show at most {MAX_IMAGE_ITEMS} items (0 turns them off)",
                    self.images
                ),
            ));
        }
        if self.checkpoints.save_top_k == 0 {
            return Err(CheckError::new(
                "training.checkpoints.save_top_k",
                "`save_top_k` must be at least 1 (`best.safetensors` is the best of them)",
            ));
        }
        for (key, value) in [
            (
                "training.checkpoints.every_n_steps",
                self.last_every_n_steps(),
            ),
            (
                "training.checkpoints.keep_every_n_steps",
                self.checkpoints.keep_every_n_steps,
            ),
        ] {
            if value == Some(0) {
                return Err(CheckError::new(key, "must be at least 1 (or left out)"));
            }
        }
        if let Some(es) = &self.early_stopping {
            if es.patience == 0 {
                return Err(CheckError::new(
                    "training.early_stopping.patience",
                    "`patience` must be at least 1 validation",
                ));
            }
            if !es.min_delta.is_finite() || es.min_delta < 0.0 {
                return Err(CheckError::new(
                    "training.early_stopping.min_delta",
                    format!(
                        "`min_delta` must be a finite number >= 0, got {}",
                        es.min_delta
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `training.checkpoints`: besides `last.safetensors` (after each
/// validation, on a stop, and every `every_n_steps`), the `save_top_k` best
/// checkpoints by `training.monitor` are kept as `top-<step>.safetensors`,
/// the best of them also as `best.safetensors`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// How many of the best checkpoints are kept (1: only `best`).
    #[serde(default = "one")]
    pub save_top_k: usize,
    /// Also write `last.safetensors` every this many steps.
    #[serde(default)]
    pub every_n_steps: Option<usize>,
    /// Keep a copy `step-<N>.safetensors` every this many steps (history).
    #[serde(default)]
    pub keep_every_n_steps: Option<usize>,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            save_top_k: 1,
            every_n_steps: None,
            keep_every_n_steps: None,
        }
    }
}

/// `training.early_stopping`: Lightning's `EarlyStopping` callback. The run
/// stops after `patience` validations in a row without the monitored
/// metric improving on its best by more than `min_delta`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Metric watched; defaults to `training.monitor`.
    #[serde(default)]
    pub monitor: Option<String>,
    /// Direction; defaults to `training.mode`.
    #[serde(default)]
    pub mode: Option<MonitorMode>,
    /// Validations without improvement before stopping.
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
}

fn default_patience() -> usize {
    3
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
        self.improves_by(candidate, best, 0.0)
    }

    /// Whether `candidate` improves on `best` by more than `min_delta`.
    pub fn improves_by(self, candidate: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => candidate.is_finite(),
            Some(b) => match self {
                MonitorMode::Min => candidate < b - min_delta,
                MonitorMode::Max => candidate > b + min_delta,
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
