//! Experiment configuration for shimmer-rs: the YAML layer (`extends`,
//! `local.yaml`, `${}` interpolation, command-line overrides, errors at
//! file:line:column), every schema type of an experiment file, and the
//! semantic checks run before anything is built.
//!
//! This crate has no tensor library in its dependencies: a tool that only
//! reads or checks experiments builds it alone.
//!
//! ```no_run
//! let loaded = shimmer_config::load(
//!     std::path::Path::new("experiments/tutorial/gw.yaml"),
//!     &["optim.lr=3e-4".to_string()],
//! )?;
//! println!("{} domains", loaded.config.domains.len());
//! # Ok::<(), shimmer_config::yaml::ConfigError>(())
//! ```

pub mod check;
pub mod data;
pub mod domain_model;
pub mod experiment;
pub mod ranges;
pub mod sweep;
pub mod training;
pub mod yaml;

pub use data::{
    CacheConfig, CombineMode, DataConfig, DomainSplitItems, EvalSetConfig, GroupConfig, Items,
    RepeatMode, Select,
};
pub use domain_model::{DomainModelConfig, DomainModelSpec};
pub use experiment::*;
pub use sweep::SweepConfig;
pub use training::{CheckpointPolicy, EarlyStopping, MonitorMode, TrainingConfig};
pub use yaml::{ConfigError, Document, Loaded};

use std::path::Path;

/// Loads an experiment: `extends` bases, the experiment file, `local.yaml`,
/// `overrides` (`key.path=value`), `${}` interpolation, the typed schema
/// and every semantic check ([`Experiment::check`]). Every command loads
/// experiments through this function.
///
/// # Errors
/// A [`ConfigError`] at the file, line and column of the key at fault.
pub fn load(path: &Path, overrides: &[String]) -> Result<Loaded<Experiment>, ConfigError> {
    load_document(&Document::load(path, overrides)?)
}

/// [`load`] of an already merged document (a sweep's trials share one).
///
/// # Errors
/// As [`load`].
pub fn load_document(document: &Document) -> Result<Loaded<Experiment>, ConfigError> {
    let config: Experiment = document.deserialize()?;
    config
        .check()
        .and_then(|()| ranges::check(&config))
        .map_err(|e| document.invalid_at(&e.key, e.message))?;
    let resolved_yaml = with_defaults(&config)
        .map_err(|e| document.invalid_at("", format!("cannot write the resolved config: {e}")))?;
    Ok(Loaded {
        config,
        resolved_yaml,
        document: document.clone(),
    })
}

/// The experiment as YAML with every setting, defaults included (what
/// `shimmer config` prints and a run records in its `config.yaml`): it
/// loads back into the same experiment.
///
/// # Errors
/// When a value cannot be written as YAML (not for a loaded experiment).
pub fn with_defaults(exp: &Experiment) -> Result<String, serde_norway::Error> {
    serde_norway::to_string(exp)
}

/// An experiment from YAML text (no layers), checked as [`load`] does;
/// `path` names the text in errors. For experiments written by programs
/// and tests.
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str, path: &Path) -> Result<Experiment, ConfigError> {
    Ok(load_document(&Document::from_text(text, path)?)?.config)
}
