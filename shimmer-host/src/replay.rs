//! `shimmer replay`: runs training steps on given batches of latents from
//! given initial weights, and writes every step's metrics, so anyone can
//! check this port against the Python library number for number.

use anyhow::Result;
use std::path::PathBuf;

/// What to replay and where to write the results.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Experiment YAML (model, losses, optimiser, scheduler).
    pub experiment: PathBuf,
    /// Initial weights, safetensors under shimmer's state-dict names.
    pub init: PathBuf,
    /// Batches, safetensors with keys `step{k}/{group}/{domain}`.
    pub batches: PathBuf,
    /// Output: one JSON line per step.
    pub out: PathBuf,
    /// Optional output: weights after the last step.
    pub final_weights: Option<PathBuf>,
}

/// Runs the replay.
pub fn run(_options: &ReplayOptions) -> Result<()> {
    anyhow::bail!("replay is not built yet")
}
