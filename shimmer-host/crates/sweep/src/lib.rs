//! Sweeps: many runs of one experiment with some keys varied, grouped in
//! one folder, run locally N at a time or as a Slurm job array.
//!
//! The experiment's `sweep:` section ([`config::SweepConfig`]) names the
//! varied keys; [`expand`] turns it into trials, each a list of
//! `key.path=value` overrides for `shimmer run`, applied after the sweep's
//! own command-line overrides. Every trial is a normal run in
//! `<sweep-dir>/trials/<NNN>/` (resolved config, event file, checkpoints,
//! `summary.json`), so `tensorboard --logdir <sweep-dir>` shows all trials
//! side by side. The folder layout is described in [`manifest`].
//!
//! ```text
//! shimmer sweep experiments/tutorial/gw.yaml --jobs 4        # local, 4 at a time
//! shimmer sweep experiments/tutorial/gw.yaml --launcher slurm --partition gpu --gpus 1
//! shimmer sweep --status  runs/tutorial/sweep-2025-01-01_12-00-00
//! shimmer sweep --resume  runs/tutorial/sweep-2025-01-01_12-00-00
//! shimmer sweep --summary runs/tutorial/sweep-2025-01-01_12-00-00
//! ```

pub mod expand;
mod hparams;
mod local;
mod manifest;
mod slurm;
mod summary;
mod trial;

pub use manifest::{Manifest, SweepDir, TrialState};
pub use shimmer_config::sweep::{LauncherKind, SlurmConfig, SweepConfig};

use anyhow::{Context, Result, anyhow, bail};
use shimmer_sys::lock::{FolderLock, holds_more_than_a_lock};
use shimmer_train::failure::{Failed, Interrupted};
use std::path::{Path, PathBuf};

/// What `shimmer sweep <experiment>` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// The experiment file with a `sweep:` section.
    pub experiment: PathBuf,
    /// `key.path=value` overrides, applied before the sweep is expanded
    /// and passed on to every trial.
    pub overrides: Vec<String>,
    /// The sweep folder; default `runs/<name>/sweep-<UTC time>/`.
    pub sweep_dir: Option<PathBuf>,
    /// Replaces `sweep.launcher.kind`.
    pub launcher: Option<LauncherKind>,
    /// Replaces `sweep.launcher.jobs`.
    pub jobs: Option<usize>,
    /// Slurm settings from the command line: set fields replace the YAML's,
    /// `extra` and `setup` lines are added to it.
    pub slurm: SlurmConfig,
    /// Print the trials (or the Slurm script) and run nothing.
    pub dry_run: bool,
}

/// A planned sweep, before its folder exists.
pub struct Plan {
    /// What to run.
    pub manifest: Manifest,
    /// The experiment's runs folder (`training.runs_dir`).
    pub runs_dir: PathBuf,
    /// Each trial's config, resolved with every default and its item
    /// files made absolute, in trial order: what it will run.
    pub trial_configs: Vec<String>,
}

/// Reads the experiment with `overrides`, expands its sweep and resolves
/// (so checks) every trial's configuration, before anything runs.
pub fn plan(experiment: &Path, overrides: &[String]) -> Result<Plan> {
    let loaded = shimmer_config::load(experiment, overrides)?;
    let config_files = loaded
        .files()
        .iter()
        .map(|f| manifest::ConfigFile::record(f))
        .collect::<Result<Vec<_>>>()?;
    let exp = loaded.config;
    let Some(section) = exp.sweep else {
        bail!(
            "{} has no `sweep:` section: add one, e.g. \
             `sweep: {{grid: {{optim.lr: [1.0e-3, 3.0e-4]}}}}`",
            experiment.display()
        );
    };
    let space = section
        .space()
        .with_context(|| format!("invalid sweep in {}", experiment.display()))?;
    let trials = expand::expand(&space)?;
    let base = std::path::absolute(experiment)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut trial_configs = Vec::with_capacity(trials.len());
    for trial in &trials {
        let all: Vec<String> = overrides.iter().chain(&trial.overrides).cloned().collect();
        let mut trial_exp = shimmer_config::load(experiment, &all)
            .with_context(|| {
                format!(
                    "trial {} of the sweep ({}) is not a valid experiment",
                    trial.index,
                    trial.overrides.join(" ")
                )
            })?
            .config;
        trial_exp.data.anchor_item_files(&base);
        trial_configs.push(
            shimmer_config::with_defaults(&trial_exp)
                .with_context(|| format!("cannot write the config of trial {}", trial.index))?,
        );
    }
    let params = space
        .grid
        .iter()
        .map(|(k, _)| k.clone())
        .chain(space.random.iter().map(|(k, _)| k.clone()))
        .collect();
    let runs_dir = exp.training.runs_dir.clone();
    let manifest = Manifest {
        version: manifest::MANIFEST_VERSION,
        name: exp.name,
        experiment: std::path::absolute(experiment)
            .with_context(|| format!("cannot resolve {}", experiment.display()))?,
        workdir: std::env::current_dir().context("cannot read the current folder")?,
        overrides: overrides.to_vec(),
        params,
        trials,
        launcher: section.launcher,
        slurm_jobs: Vec::new(),
        config_files,
    };
    Ok(Plan {
        manifest,
        runs_dir,
        trial_configs,
    })
}

/// Writes each trial's planned config to `configs/<NNN>.yaml`: trials run
/// from these, so a resume runs what the sweep started with even if the
/// experiment changed since.
fn record_trial_configs(dir: &SweepDir, trial_configs: &[String]) -> Result<()> {
    let folder = dir.root().join("configs");
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    for (index, text) in trial_configs.iter().enumerate() {
        shimmer_sys::fs::write_atomic(&dir.config_file(index), text.as_bytes())?;
    }
    Ok(())
}

/// Applies command-line launcher settings over the YAML's.
fn apply_flags(
    manifest: &mut Manifest,
    launcher: Option<LauncherKind>,
    jobs: Option<usize>,
    slurm: &SlurmConfig,
) -> Result<()> {
    let l = &mut manifest.launcher;
    if let Some(kind) = launcher {
        l.kind = kind;
    }
    if let Some(jobs) = jobs {
        l.jobs = jobs;
    }
    let s = &mut l.slurm;
    macro_rules! replace {
        ($($f:ident),*) => { $( if slurm.$f.is_some() { s.$f = slurm.$f.clone(); } )* };
    }
    replace!(partition, time, cpus, gpus, mem, max_parallel, job_name);
    s.extra.extend(slurm.extra.iter().cloned());
    s.setup.extend(slurm.setup.iter().cloned());
    // Flags are held to Slurm's syntax as the YAML is: a line break in
    // `--time` would run as shell in the job script.
    s.check().map_err(|e| {
        let flag = e
            .key
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .replace('_', "-");
        anyhow!("`--{flag}` or `{}`: {}", e.key, e.message)
    })
}

/// `shimmer sweep <experiment>`: plans the sweep, creates its folder and
/// runs or submits every trial.
pub fn start(opts: &SweepOptions) -> Result<()> {
    let Plan {
        mut manifest,
        runs_dir,
        trial_configs,
    } = plan(&opts.experiment, &opts.overrides)?;
    apply_flags(&mut manifest, opts.launcher, opts.jobs, &opts.slurm)?;
    let root = match &opts.sweep_dir {
        Some(dir) => {
            std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?
        }
        None => default_dir(&runs_dir, &manifest.name)?,
    };
    let dir = SweepDir::new(&root, manifest.trials.len());
    let all: Vec<usize> = (0..manifest.trials.len()).collect();
    if opts.dry_run {
        return dry_run(&manifest, &dir, &all);
    }
    let _lock = create_dir(&root, opts.sweep_dir.is_some())?;
    record_trial_configs(&dir, &trial_configs)?;
    manifest.save(&dir)?;
    println!(
        "sweep {}: {} trials of {} (launcher: {}); TensorBoard: tensorboard --logdir {}",
        root.display(),
        manifest.trials.len(),
        manifest.name,
        launcher_name(&manifest),
        root.display()
    );
    launch(&mut manifest, &dir, &all)
}

/// `shimmer sweep --resume <sweep-dir>`: runs (or submits) again every
/// trial that did not finish, interrupted ones from their last checkpoint.
pub fn resume(
    root: &Path,
    launcher: Option<LauncherKind>,
    jobs: Option<usize>,
    slurm: &SlurmConfig,
) -> Result<()> {
    let (mut manifest, dir) = Manifest::load(root)?;
    let _lock = FolderLock::acquire(root, "sweep folder")?;
    let changed: Vec<String> = manifest
        .config_files
        .iter()
        .filter(|f| !f.unchanged())
        .map(|f| f.path.display().to_string())
        .collect();
    if !changed.is_empty() {
        eprintln!(
            "note: the experiment's config changed since the sweep started ({}); the trials \
             run the configs recorded then, in {}",
            changed.join(", "),
            dir.root().join("configs").display()
        );
    }
    apply_flags(&mut manifest, launcher, jobs, slurm)?;
    let active = match manifest.launcher.kind {
        LauncherKind::Slurm => slurm::squeue(&slurm::job_ids(&manifest)).unwrap_or_default(),
        LauncherKind::Local => Default::default(),
    };
    let mut todo = Vec::new();
    for trial in &manifest.trials {
        let record = dir.record(trial.index)?;
        let finished = record.state == TrialState::Finished;
        let queued = active
            .get(&trial.index)
            .is_some_and(|s| slurm::is_active(s));
        if !finished && !queued {
            todo.push(trial.index);
        }
    }
    if todo.is_empty() {
        println!(
            "nothing to resume in {}: every trial finished or is still queued",
            root.display()
        );
        return print_summary(&manifest, &dir);
    }
    manifest.save(&dir)?;
    println!(
        "resuming {} of {} trials in {} (launcher: {})",
        todo.len(),
        manifest.trials.len(),
        root.display(),
        launcher_name(&manifest)
    );
    launch(&mut manifest, &dir, &todo)
}

fn launcher_name(manifest: &Manifest) -> String {
    match manifest.launcher.kind {
        LauncherKind::Local => format!("local, {} at a time", manifest.launcher.jobs.max(1)),
        LauncherKind::Slurm => "slurm".to_string(),
    }
}

/// Runs trials `indices` locally, or submits them to Slurm.
fn launch(manifest: &mut Manifest, dir: &SweepDir, indices: &[usize]) -> Result<()> {
    match manifest.launcher.kind {
        LauncherKind::Local => {
            let stop = local::StopFlag::on_signals()?;
            let outcome = local::run(manifest, dir, indices, manifest.launcher.jobs, &stop)?;
            println!();
            print_summary(manifest, dir)?;
            if outcome.interrupted > 0 {
                return Err(Interrupted {
                    signal: stop.signal().unwrap_or(signal_hook::consts::SIGINT),
                    message: format!(
                        "sweep interrupted: {} trial(s) did not finish; run \
                         `shimmer sweep --resume {}` to finish them",
                        outcome.interrupted,
                        dir.root().display()
                    ),
                }
                .into());
            }
            if outcome.failed > 0 {
                return Err(Failed(format!(
                    "{} of {} trial(s) failed (errors in the table above and in {}/logs/)",
                    outcome.failed,
                    indices.len(),
                    dir.root().display()
                ))
                .into());
            }
            Ok(())
        }
        LauncherKind::Slurm => {
            let exe = std::env::current_exe()
                .context("cannot find the path of this shimmer executable")?;
            let text = slurm::script(manifest, dir, &exe, indices);
            let path = dir.sbatch_script(manifest.slurm_jobs.len() + 1);
            std::fs::create_dir_all(dir.root().join("logs"))
                .with_context(|| format!("cannot create {}/logs", dir.root().display()))?;
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let job_id = slurm::submit(&path)?;
            manifest.slurm_jobs.push(manifest::SlurmJob {
                job_id: job_id.clone(),
                trials: indices.to_vec(),
            });
            manifest.save(dir)?;
            println!(
                "submitted Slurm job array {job_id} ({} task{}); follow it with \
                 `shimmer sweep --status {}`",
                indices.len(),
                if indices.len() == 1 { "" } else { "s" },
                dir.root().display()
            );
            Ok(())
        }
    }
}

fn dry_run(manifest: &Manifest, dir: &SweepDir, indices: &[usize]) -> Result<()> {
    match manifest.launcher.kind {
        LauncherKind::Slurm => {
            let exe = std::env::current_exe()
                .context("cannot find the path of this shimmer executable")?;
            print!("{}", slurm::script(manifest, dir, &exe, indices));
        }
        LauncherKind::Local => {
            println!(
                "{} trials in {} ({}):",
                manifest.trials.len(),
                dir.root().display(),
                launcher_name(manifest)
            );
            for trial in &manifest.trials {
                println!(
                    "{}  {}",
                    dir.trial_name(trial.index),
                    trial.overrides.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// `shimmer sweep --summary <sweep-dir>`: prints the ranked table and
/// writes it as `summary.csv` in the sweep folder.
pub fn summary(root: &Path) -> Result<()> {
    let (manifest, dir) = Manifest::load(root)?;
    print_summary(&manifest, &dir)
}

fn print_summary(manifest: &Manifest, dir: &SweepDir) -> Result<()> {
    let table = summary::collect(manifest, dir)?;
    println!(
        "sweep {} ({} trials: {}), ranked by {} ({}):",
        dir.root().display(),
        manifest.trials.len(),
        table.counts(),
        table.monitor,
        if table.maximize { "max" } else { "min" }
    );
    print!("{}", table.to_text());
    hparams::write_experiment(manifest, dir, &table.monitor)?;
    let csv = dir.summary_csv();
    std::fs::write(&csv, table.to_csv())
        .with_context(|| format!("cannot write {}", csv.display()))?;
    println!("CSV: {}", csv.display());
    Ok(())
}

/// `shimmer sweep --status <sweep-dir>`: each trial's state from its
/// record and run folder, and from `squeue` (and `sacct` where accounting
/// works) for a Slurm sweep.
pub fn status(root: &Path) -> Result<()> {
    let (manifest, dir) = Manifest::load(root)?;
    let jobs = slurm::job_ids(&manifest);
    let (queue, accounting) = if jobs.is_empty() {
        (Default::default(), None)
    } else {
        (slurm::squeue(&jobs)?, slurm::sacct(&jobs))
    };
    let mut lines = vec![[
        "trial".to_string(),
        "state".to_string(),
        "slurm".to_string(),
        "steps".to_string(),
        "error".to_string(),
    ]];
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for trial in &manifest.trials {
        let record = dir.record(trial.index)?;
        let run = dir.run_summary(trial.index);
        let row = summary::row(&dir, trial.index, Vec::new(), &record, run.as_ref());
        let slurm_state = queue
            .get(&trial.index)
            .or_else(|| accounting.as_ref().and_then(|a| a.get(&trial.index)))
            .cloned();
        let mut state = row.state.as_str().to_string();
        if !jobs.is_empty() {
            match (row.state, slurm_state.as_deref()) {
                (TrialState::Pending, Some("PENDING")) => state = "queued".to_string(),
                (TrialState::Pending | TrialState::Running, Some(s)) if !slurm::is_active(s) => {
                    // The task ended without recording an end: killed
                    // (time limit, cancel, node failure).
                    state = "lost".to_string();
                }
                (TrialState::Running, None) => state = "lost?".to_string(),
                _ => {}
            }
        }
        *counts.entry(state.clone()).or_default() += 1;
        let error = row.error.unwrap_or_default();
        lines.push([
            row.name,
            state,
            slurm_state.unwrap_or_default(),
            row.steps.map(|s| s.to_string()).unwrap_or_default(),
            error.chars().take(100).collect(),
        ]);
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!(
        "sweep {}: {} trials: {}",
        root.display(),
        manifest.trials.len(),
        counts.join(", ")
    );
    if !jobs.is_empty() {
        println!(
            "Slurm job(s) {}; {}",
            jobs.join(", "),
            if accounting.is_some() {
                "states from squeue, sacct and the run folders"
            } else {
                "no Slurm accounting (sacct): states from squeue and the run folders"
            }
        );
    }
    print!("{}", summary::aligned(&lines));
    Ok(())
}

/// `shimmer sweep --run-trial <sweep-dir> <index>` (used by the Slurm
/// script): runs one trial, records its state, and fails if it failed.
pub fn run_trial(root: &Path, index: usize) -> Result<()> {
    let (manifest, dir) = Manifest::load(root)?;
    if index >= manifest.trials.len() {
        bail!(
            "trial {index} does not exist: the sweep in {} has {} trials",
            root.display(),
            manifest.trials.len()
        );
    }
    if let (Ok(job), Ok(task)) = (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        let mut record = dir.record(index)?;
        record.slurm_task = Some(format!("{job}_{task}"));
        dir.save_record(index, &record)?;
    }
    let stop = local::StopFlag::on_signals()?;
    let outcome = local::run(&manifest, &dir, &[index], 1, &stop)?;
    if outcome.finished == 1 {
        return Ok(());
    }
    let record = dir.record(index)?;
    if let Some(signal) = stop.signal() {
        return Err(Interrupted {
            signal,
            message: format!(
                "trial {index} {}: {}",
                record.state.as_str(),
                record.error.unwrap_or_default()
            ),
        }
        .into());
    }
    Err(anyhow!(
        "trial {index} {}: {}",
        record.state.as_str(),
        record.error.unwrap_or_default()
    ))
}

/// `<runs_dir>/<name>/sweep-<UTC date>_<time>` (absolute), with a suffix
/// if that exists.
fn default_dir(runs_dir: &Path, name: &str) -> Result<PathBuf> {
    let base =
        std::path::absolute(runs_dir.join(name)).context("cannot resolve the runs folder")?;
    let stamp = shimmer_train::run_dir::utc_stamp(std::time::SystemTime::now());
    let mut dir = base.join(format!("sweep-{stamp}"));
    let mut k = 2;
    while dir.exists() {
        dir = base.join(format!("sweep-{stamp}-{k}"));
        k += 1;
    }
    Ok(dir)
}

/// Creates the sweep folder and takes it for this process; an explicit
/// one may exist only if empty (a lock file aside).
fn create_dir(root: &Path, explicit: bool) -> Result<FolderLock> {
    let ensure_empty = || -> Result<()> {
        if holds_more_than_a_lock(root)? {
            bail!(
                "sweep folder {} exists and is not empty: choose another, or \
                 `shimmer sweep --resume {}` to continue that sweep",
                root.display(),
                root.display()
            );
        }
        Ok(())
    };
    if explicit {
        ensure_empty()?;
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("cannot create sweep folder {}", root.display()))?;
    let lock = FolderLock::acquire(root, "sweep folder")?;
    // Another sweep may have started in it between the two looks.
    ensure_empty()?;
    Ok(lock)
}
