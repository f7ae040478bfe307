//! The folder of one run: `runs/<experiment>/<run-id>/` with the resolved
//! config, the TensorBoard event file, `checkpoints/` and `summary.json`.
//! Nothing that exists is ever overwritten, except the run's own files.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use shimmer_sys::lock::{FolderLock, holds_more_than_a_lock, remove_stale_temp_files};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the resolved config inside a run folder.
pub const CONFIG_FILE: &str = "config.yaml";
/// File name of the run summary.
pub const SUMMARY_FILE: &str = "summary.json";
/// File name of a run's provenance record (see [`crate::provenance`]).
pub const PROVENANCE_FILE: &str = "provenance.json";

/// A run folder. One made or opened to train holds its lock (see
/// [`shimmer_sys::lock`]) for as long as any clone of it lives.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
    lock: Option<Arc<FolderLock>>,
}

impl RunDir {
    /// Creates a fresh run folder and takes it: `dir` itself when given (it
    /// must not exist, or be empty), else `<runs_dir>/<experiment>/<date>_<time>`
    /// with a `-N` suffix when taken. Two processes never get one folder.
    pub fn create(dir: Option<&Path>, runs_dir: &Path, experiment: &str) -> Result<Self> {
        let (path, lock) = match dir {
            Some(d) => {
                ensure_empty(d)?;
                std::fs::create_dir_all(d)
                    .with_context(|| format!("cannot create run folder {}", d.display()))?;
                let lock = FolderLock::acquire(d, "run folder")?;
                // Another process may have filled it between the two looks.
                ensure_empty(d)?;
                (d.to_path_buf(), lock)
            }
            None => {
                let parent = runs_dir.join(experiment);
                std::fs::create_dir_all(&parent)
                    .with_context(|| format!("cannot create run folder {}", parent.display()))?;
                let stamp = timestamp();
                let mut n = 0;
                let candidate = loop {
                    let candidate = if n == 0 {
                        parent.join(&stamp)
                    } else {
                        parent.join(format!("{stamp}-{n}"))
                    };
                    match std::fs::create_dir(&candidate) {
                        Ok(()) => break candidate,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot create run folder {}", candidate.display())
                            });
                        }
                    }
                };
                let lock = FolderLock::acquire(&candidate, "run folder")?;
                (candidate, lock)
            }
        };
        std::fs::create_dir_all(path.join("checkpoints"))
            .with_context(|| format!("cannot create run folder {}", path.display()))?;
        Ok(Self {
            path,
            lock: Some(Arc::new(lock)),
        })
    }

    /// Opens an existing run folder to read it (`test`, `predict`: a run
    /// may be read while it trains). [`RunDir::take`] it to write.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join(CONFIG_FILE).is_file() {
            bail!(
                "{} is not a shimmer run folder (it has no {CONFIG_FILE})",
                path.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            lock: None,
        })
    }

    /// Takes the folder for this process (to resume it), refusing while
    /// another process trains in it, and removes the temporary files a
    /// killed write left behind.
    ///
    /// # Errors
    /// `run folder X is in use (pid N)`.
    pub fn take(mut self) -> Result<Self> {
        if self.lock.is_none() {
            self.lock = Some(Arc::new(FolderLock::acquire(&self.path, "run folder")?));
        }
        let freed = remove_stale_temp_files(&self.path)
            + remove_stale_temp_files(&self.path.join("checkpoints"));
        if freed > 0 {
            eprintln!(
                "removed {} of temporary files an interrupted write left in {}",
                shimmer_sys::memory::human_bytes(u128::from(freed)),
                self.path.display()
            );
        }
        Ok(self)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The resolved config file.
    pub fn config_file(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// `checkpoints/last.safetensors`.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.path.join("checkpoints/last.safetensors")
    }

    /// `checkpoints/best.safetensors`.
    pub fn best_checkpoint(&self) -> PathBuf {
        self.path.join("checkpoints/best.safetensors")
    }

    /// Writes the resolved config (only once: a resumed run keeps its own).
    pub fn write_config(&self, yaml: &str) -> Result<()> {
        write_atomic(&self.config_file(), yaml.as_bytes())
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &RunSummary) -> Result<()> {
        self.write_json(SUMMARY_FILE, summary)
    }

    /// Writes `summary.json` atomically or, when that fails (a full disk
    /// has no room for the temporary copy), in place over the old one,
    /// whose blocks it reuses: a run's final status is recorded whenever
    /// the disk allows it at all.
    ///
    /// # Errors
    /// The atomic write's error, when writing in place failed too.
    pub fn write_final_summary(&self, summary: &RunSummary) -> Result<()> {
        let Err(atomic) = self.write_summary(summary) else {
            return Ok(());
        };
        let path = self.path.join(SUMMARY_FILE);
        if path.is_file() {
            let text = serde_json::to_string_pretty(summary)?;
            let in_place = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, text.as_bytes())?;
                    f.sync_all()
                });
            if in_place.is_ok() {
                return Ok(());
            }
        }
        Err(atomic)
    }

    /// Refuses `out` as the file a command writes (`predict --out`,
    /// `export --out`) when writing it would destroy something: a special
    /// file (device, FIFO, socket, folder), a symbolic link (which the
    /// rename would replace, not follow), or one of this run's own files
    /// (its config, summary, logs, checkpoints, images, lock), which would
    /// leave the run unreadable. A missing file in an existing folder, or an
    /// earlier output, is fine.
    ///
    /// # Errors
    /// What `out` is and why it is refused.
    pub fn check_output(&self, out: &Path) -> Result<()> {
        if let Ok(meta) = std::fs::symlink_metadata(out) {
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target = std::fs::read_link(out)
                    .map(|t| format!(" (to {})", t.display()))
                    .unwrap_or_default();
                bail!(
                    "{} is a symbolic link{target}: shimmer replaces files whole and does not \
                     write through links; give the file itself or another path",
                    out.display()
                );
            }
            if !kind.is_file() {
                bail!(
                    "{} is {}: give the path of a file to write",
                    out.display(),
                    shimmer_formats::file::kind_of(kind)
                );
            }
        }
        let name = out
            .file_name()
            .with_context(|| format!("{} does not name a file", out.display()))?;
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        let folder = parent.canonicalize().with_context(|| {
            format!(
                "cannot write {}: no folder {}",
                out.display(),
                parent.display()
            )
        })?;
        let run = self
            .path
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", self.path.display()))?;
        let Ok(inside) = folder.join(name).strip_prefix(&run).map(Path::to_path_buf) else {
            return Ok(());
        };
        if let Some(what) = own_file(&inside) {
            bail!(
                "{} is {what} of the run {}: writing there would leave the run unreadable; \
                 choose another path",
                out.display(),
                self.path.display()
            );
        }
        Ok(())
    }

    /// Writes `value` as the JSON file `name` of the run folder, atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        write_atomic(&self.path.join(name), text.as_bytes())
    }

    /// The experiment file the run was started from, as its summary records
    /// it (relative item-list files are taken from its folder).
    pub fn experiment_file(&self) -> Result<Option<PathBuf>> {
        Ok(self
            .read_summary()?
            .and_then(|s| s.experiment_file)
            .map(PathBuf::from))
    }

    /// Reads `summary.json`, if the run wrote one.
    pub fn read_summary(&self) -> Result<Option<RunSummary>> {
        self.read_json(SUMMARY_FILE, "a run summary")
    }

    /// Reads the JSON file `name` of the run folder as `T`, if it exists;
    /// `what` names the content in errors.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>> {
        let file = self.path.join(name);
        if !file.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not {what}", file.display()))
    }
}

/// Refuses `dir` when it holds anything but a lock file.
fn ensure_empty(dir: &Path) -> Result<()> {
    if holds_more_than_a_lock(dir)? {
        bail!(
            "run folder {} already exists and is not empty; \
             choose another one or resume it with `--resume`",
            dir.display()
        );
    }
    Ok(())
}

/// Where a run stands, as `summary.json` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Training (or killed while training).
    Running,
    /// Finished normally.
    Finished,
    /// Stopped on an error.
    Failed,
    /// Stopped on request (a signal) with its last checkpoint saved.
    Interrupted,
}

/// `summary.json`: what a run reached, for people and for sweeps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// Experiment name.
    pub experiment: String,
    /// The experiment file the run was started from.
    #[serde(default)]
    pub experiment_file: Option<String>,
    /// The run folder.
    #[serde(default)]
    pub run_dir: Option<String>,
    /// Where the run stands.
    pub status: RunStatus,
    /// The error that stopped it, if any.
    pub error: Option<String>,
    /// Monitored metric.
    pub monitor: String,
    /// Whether lower (`min`) or higher (`max`) is better.
    pub mode: shimmer_config::MonitorMode,
    /// Best monitored value.
    pub best_value: Option<f64>,
    /// Step of the best value.
    pub best_step: Option<u64>,
    /// Optimiser steps done.
    pub steps: u64,
    /// Epochs completed.
    pub epochs: u64,
    /// Wall time of training, in seconds (summed over resumes).
    pub wall_time_s: f64,
    /// Last validation metrics, then `best/val/*` and `test/*` of the best
    /// checkpoint when the run finished (a NaN is written as `null`, and
    /// read back as NaN).
    #[serde(deserialize_with = "nan_for_null")]
    pub metrics: BTreeMap<String, f64>,
    /// The best checkpoints kept (`training.checkpoints.save_top_k`), best
    /// first, with their step and monitored value.
    #[serde(default)]
    pub top_k: Vec<KeptCheckpoint>,
    /// Why training stopped before its last step (early stopping), if it did.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// A `--fast-dev-run` check (one batch), not a training: kept out of
    /// comparisons.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fast_dev_run: bool,
    /// The step it stopped at.
    #[serde(default)]
    pub stopped_at_step: Option<u64>,
}

/// One of the best checkpoints kept by `training.checkpoints.save_top_k`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeptCheckpoint {
    /// Step it was written at.
    pub step: u64,
    /// Value of the monitored metric there.
    pub value: f64,
    /// Its file, relative to the run folder.
    pub file: String,
}

/// Reads metric values, `null` (how JSON writes NaN) as NaN.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let raw = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

impl RunSummary {
    /// The summary of a run starting (or resuming) in `dir`.
    pub fn start(exp: &shimmer_config::Experiment, file: Option<&Path>, dir: &RunDir) -> Self {
        Self {
            experiment: exp.name.clone(),
            experiment_file: file.map(|f| f.display().to_string()),
            run_dir: Some(dir.path().display().to_string()),
            status: RunStatus::Running,
            error: None,
            monitor: exp.training.monitor.clone(),
            mode: exp.training.mode,
            best_value: None,
            best_step: None,
            steps: 0,
            epochs: 0,
            wall_time_s: 0.0,
            metrics: Default::default(),
            top_k: Vec::new(),
            stop_reason: None,
            fast_dev_run: false,
            stopped_at_step: None,
        }
    }
}

fn timestamp() -> String {
    utc_stamp(std::time::SystemTime::now())
}

pub use shimmer_sys::fs::write_atomic;
pub use shimmer_sys::time::utc_stamp;

/// What `rel`, a path inside a run folder, is when it is one of the files
/// the run itself reads or writes.
fn own_file(rel: &Path) -> Option<&'static str> {
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_str().unwrap_or_default();
    let nested = parts.next().is_some();
    match first {
        "checkpoints" => Some("in the checkpoints"),
        "images" => Some("in the image grids"),
        _ if nested => None,
        CONFIG_FILE => Some("the config"),
        SUMMARY_FILE => Some("the summary"),
        PROVENANCE_FILE => Some("the provenance record"),
        crate::logger::SCALARS_FILE => Some("the scalar log"),
        shimmer_sys::lock::LOCK_FILE => Some("the lock"),
        f if f.starts_with(shimmer_tensorboard::EVENT_FILE_PREFIX) => {
            Some("a TensorBoard event file")
        }
        f if f.starts_with("eval-") && f.ends_with(".json") => Some("an evaluation report"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_folders_never_overwrite() {
        let root = tempfile::tempdir().unwrap();
        let a = RunDir::create(None, root.path(), "exp").unwrap();
        let b = RunDir::create(None, root.path(), "exp").unwrap();
        assert_ne!(a.path(), b.path());
        a.write_config("name: exp\n").unwrap();
        let err = RunDir::create(Some(a.path()), root.path(), "exp").unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(RunDir::open(a.path()).is_ok());
        assert!(RunDir::open(root.path()).is_err());
    }
}
