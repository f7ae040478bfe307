//! `shimmer run`: trains an experiment end to end — loads its plugins and
//! data, builds the model, trains with validation and checkpoints, logs to
//! TensorBoard, then validates and tests the best checkpoint.
//!
//! ```no_run
//! use shimmer_train::{RunOptions, run};
//! let summary = run(&RunOptions::new("experiments/tutorial/gw.yaml"))?;
//! println!("best val/loss {:?}", summary.best_value);
//! # Ok::<(), anyhow::Error>(())
//! ```

mod build;
pub mod callback;
pub mod callbacks;
mod eval;
pub mod failure;
pub mod grid;
mod gw_task;
mod hparams;
pub mod images;
pub mod import;
pub mod logger;
mod position;
mod predict;
mod pretrain_task;
mod progress;
pub mod provenance;
pub mod resume;
mod run;
pub mod run_dir;
pub mod stop;
pub mod task;
mod trainer;
pub mod watchdog;

pub use build::{build, validate};
pub use gw_task::{AttachedModel, GwTask};
pub use predict::{EvalOptions, export, predict, test};
pub use pretrain_task::PretrainTask;
pub use run::{RunOptions, run};
pub use run_dir::{RunDir, RunStatus, RunSummary};
pub use shimmer_config::{MonitorMode, TrainingConfig};
pub use trainer::{Position, Trainer, total_steps};
