//! What a sweep folder holds on disk: `sweep.json` (what to run), one
//! `state/<NNN>.json` per trial (how it went, as the launcher saw it) and
//! the trials' own run folders with their `summary.json`.
//!
//! ```text
//! runs/<name>/sweep-<id>/
//!   sweep.json          experiment, overrides, trials, launcher, Slurm jobs
//!   configs/<NNN>.yaml  each trial's config as resolved when the sweep started
//!   trials/<NNN>/       a normal run folder per trial (config, events, checkpoints)
//!   state/<NNN>.json    the trial's state: pending/running/finished/failed/interrupted
//!   logs/<NNN>.log      the trial's output; Slurm's own logs beside it
//!   retired/<NNN>.<k>/  run folders of earlier failed attempts, kept
//!   summary.csv         the ranked table of `shimmer sweep --summary`
//!   sweep.sbatch        the Slurm job-array script (sweep.2.sbatch, ... on resume)
//! ```

use super::expand::Trial;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shimmer_config::sweep::LauncherConfig;
use std::path::{Path, PathBuf};

/// Layout version of `sweep.json`.
pub const MANIFEST_VERSION: u32 = 1;

/// `sweep.json`: everything needed to run, resume or inspect a sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// The experiment's name.
    pub name: String,
    /// The experiment file, absolute.
    pub experiment: PathBuf,
    /// Working folder of every trial (where `shimmer sweep` was started),
    /// so relative paths in the experiment mean the same in every trial.
    pub workdir: PathBuf,
    /// Command-line overrides of the sweep, applied to every trial first.
    pub overrides: Vec<String>,
    /// Swept keys, in column order.
    pub params: Vec<String>,
    /// The trials.
    pub trials: Vec<Trial>,
    /// How the trials are launched.
    pub launcher: LauncherConfig,
    /// Slurm job arrays submitted for this sweep, oldest first.
    #[serde(default)]
    pub slurm_jobs: Vec<SlurmJob>,
    /// Every config file the experiment was read from when the sweep
    /// started, with its SHA-256: a resume names those changed since (the
    /// trials run the configs recorded then).
    #[serde(default)]
    pub config_files: Vec<ConfigFile>,
}

/// A config file of the sweep's experiment, by content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Its path, absolute.
    pub path: PathBuf,
    /// SHA-256 of its bytes when the sweep started.
    pub sha256: String,
}

impl ConfigFile {
    /// Records `path` as it is now.
    pub fn record(path: &Path) -> Result<Self> {
        let path = std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let sha256 = shimmer_sys::fs::sha256_file(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self { path, sha256 })
    }

    /// Whether the file still holds what was recorded.
    pub fn unchanged(&self) -> bool {
        shimmer_sys::fs::sha256_file(&self.path).is_ok_and(|s| s == self.sha256)
    }
}

/// One `sbatch` submission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlurmJob {
    /// The array job's id.
    pub job_id: String,
    /// Trial indices it runs (its array indices).
    pub trials: Vec<usize>,
}

/// A trial's state as recorded by the launcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Not started yet.
    #[default]
    Pending,
    /// Started and not known to have ended.
    Running,
    /// `shimmer run` exited successfully.
    Finished,
    /// `shimmer run` failed; see the error.
    Failed,
    /// Stopped by Ctrl-C or a termination signal; resumable.
    Interrupted,
}

impl TrialState {
    /// The lower-case name used in files and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Pending => "pending",
            TrialState::Running => "running",
            TrialState::Finished => "finished",
            TrialState::Failed => "failed",
            TrialState::Interrupted => "interrupted",
        }
    }
}

/// `state/<NNN>.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Current state.
    pub state: TrialState,
    /// Why it failed, one paragraph.
    #[serde(default)]
    pub error: Option<String>,
    /// Exit code of `shimmer run`, if it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// How many times it was started.
    #[serde(default)]
    pub attempts: u32,
    /// Seconds it ran in its last attempt.
    #[serde(default)]
    pub wall_time_s: Option<f64>,
    /// `<array job>_<index>` when run by Slurm.
    #[serde(default)]
    pub slurm_task: Option<String>,
}

/// Paths inside one sweep folder.
#[derive(Clone, Debug)]
pub struct SweepDir {
    root: PathBuf,
    width: usize,
}

impl SweepDir {
    /// The folder `root` of a sweep with `trials` trials.
    pub fn new(root: impl Into<PathBuf>, trials: usize) -> Self {
        let width = trials.saturating_sub(1).to_string().len().max(3);
        Self {
            root: root.into(),
            width,
        }
    }

    /// The sweep folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `sweep.json`.
    pub fn manifest(&self) -> PathBuf {
        self.root.join("sweep.json")
    }

    /// A trial's zero-padded name, `007`.
    pub fn trial_name(&self, index: usize) -> String {
        format!("{index:0w$}", w = self.width)
    }

    /// Trial `index`'s config as recorded when the sweep started
    /// (`configs/<NNN>.yaml`): what it runs, whatever the experiment files
    /// say later.
    pub fn config_file(&self, index: usize) -> PathBuf {
        self.root
            .join("configs")
            .join(format!("{}.yaml", self.trial_name(index)))
    }

    /// Trial `index`'s run folder.
    pub fn run_dir(&self, index: usize) -> PathBuf {
        self.root.join("trials").join(self.trial_name(index))
    }

    /// A trial's state file.
    pub fn state_file(&self, index: usize) -> PathBuf {
        self.root
            .join("state")
            .join(format!("{}.json", self.trial_name(index)))
    }

    /// A trial's output log.
    pub fn log_file(&self, index: usize) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{}.log", self.trial_name(index)))
    }

    /// Where an earlier attempt's run folder is kept.
    pub fn retired_dir(&self, index: usize, attempt: u32) -> PathBuf {
        self.root
            .join("retired")
            .join(format!("{}.{attempt}", self.trial_name(index)))
    }

    /// The ranked table as CSV.
    pub fn summary_csv(&self) -> PathBuf {
        self.root.join("summary.csv")
    }

    /// The job-array script of the sweep's `k`-th submission (from 1):
    /// `sweep.sbatch`, then `sweep.2.sbatch`, ... for resumed ones.
    pub fn sbatch_script(&self, k: usize) -> PathBuf {
        if k <= 1 {
            self.root.join("sweep.sbatch")
        } else {
            self.root.join(format!("sweep.{k}.sbatch"))
        }
    }

    /// Reads a trial's state; a missing file means pending.
    pub fn record(&self, index: usize) -> Result<TrialRecord> {
        let path = self.state_file(index);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("cannot parse trial state {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrialRecord::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Saves a trial's state (atomically).
    pub fn save_record(&self, index: usize, record: &TrialRecord) -> Result<()> {
        write_json(&self.state_file(index), record)
    }

    /// The run's `summary.json`, if it wrote a readable one.
    pub fn run_summary(&self, index: usize) -> Option<shimmer_train::RunSummary> {
        let bytes = std::fs::read(self.run_dir(index).join("summary.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl Manifest {
    /// Reads `sweep.json` from a sweep folder; the returned paths are
    /// absolute, as trials run in the sweep's own working folder.
    pub fn load(dir: &Path) -> Result<(Self, SweepDir)> {
        let dir = &std::path::absolute(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let path = dir.join("sweep.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "{} is not a sweep folder: cannot read {}",
                dir.display(),
                path.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("cannot parse {}", path.display()))?;
        if manifest.version != MANIFEST_VERSION {
            anyhow::bail!(
                "{} has layout version {}, this shimmer reads version {MANIFEST_VERSION}",
                path.display(),
                manifest.version
            );
        }
        let sweep_dir = SweepDir::new(dir, manifest.trials.len());
        Ok((manifest, sweep_dir))
    }

    /// Writes `sweep.json` (atomically).
    pub fn save(&self, dir: &SweepDir) -> Result<()> {
        write_json(&dir.manifest(), self)
    }
}

/// Writes `value` as pretty JSON to a temporary file beside `path`, then
/// renames it, so a reader never sees half a file.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create folder {}", parent.display()))?;
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    let tmp = parent.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
