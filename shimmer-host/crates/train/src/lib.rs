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

pub mod callback;
pub mod callbacks;
mod eval;
mod gw_task;
mod hparams;
pub mod logger;
mod position;
mod predict;
mod pretrain_task;
mod progress;
pub mod resume;
pub mod run_dir;
pub mod stop;
pub mod task;
mod trainer;

pub use gw_task::{AttachedModel, GwTask};
pub use predict::{EvalOptions, predict, test};
pub use pretrain_task::PretrainTask;
pub use run_dir::{RunDir, RunStatus, RunSummary};
pub use shimmer_config::{MonitorMode, TrainingConfig};
pub use trainer::{Position, Trainer, total_steps};

use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use logger::RunLogger;
use shimmer_config::Experiment;
use shimmer_data::{DataPipeline, ModelSource, open_sources};
use shimmer_nn::domain_model::{DomainModel, DomainModelConfig};
use shimmer_nn::optim::Optimizer;
use shimmer_nn::{DomainSpec, GlobalWorkspace};
use shimmer_nn::{checkpoint, device};
use shimmer_plugin_api::LossSpec;
use shimmer_tensorboard::SessionStatus;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use task::Task;
use trainer::{Loaders, evaluate};

/// What `shimmer run` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Experiment file (ignored when resuming: the run's own config is used).
    pub experiment: PathBuf,
    /// `key.path=value` overrides, applied after the YAML layers.
    pub overrides: Vec<String>,
    /// Exact run folder instead of `runs/<name>/<run-id>/`.
    pub run_dir: Option<PathBuf>,
    /// Run folder to continue from its last checkpoint.
    pub resume: Option<PathBuf>,
    /// One training and one validation batch, end to end.
    pub fast_dev_run: bool,
    /// Watch the plugin files and swap in rebuilt plugins between steps
    /// (see [`crate::hotswap`]).
    pub watch: bool,
    /// With `resume`: `DOMAIN=PLUGIN` changes of a domain's plugin, checked
    /// and recorded in the run's config (see [`crate::hotswap::resume`]).
    pub set_plugins: Vec<String>,
    /// When set, the run stops at the next step boundary, saving its last
    /// checkpoint ([`stop::StopRequest::on_signals`] sets it on SIGINT,
    /// SIGTERM or SIGHUP).
    pub stop: stop::StopRequest,
}

impl RunOptions {
    /// Options to run `experiment` as is.
    pub fn new(experiment: impl Into<PathBuf>) -> Self {
        Self {
            experiment: experiment.into(),
            ..Self::default()
        }
    }
}

/// A loaded experiment, and the run folder when resuming one.
struct Prepared {
    exp: Experiment,
    resolved_yaml: String,
    /// The experiment file (for a resumed run, the one it was started from).
    experiment_file: Option<PathBuf>,
    run_dir: Option<RunDir>,
}

/// Folder that relative item-list files of an experiment are taken from.
fn base_dir(experiment_file: Option<&Path>) -> PathBuf {
    experiment_file
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn prepare(opts: &RunOptions) -> Result<Prepared> {
    if let Some(dir) = &opts.resume {
        if !opts.overrides.is_empty() {
            bail!("a resumed run keeps its own config: drop the overrides, or start a new run");
        }
        let run_dir = RunDir::open(dir)?;
        let loaded = crate::resume::load_config(&run_dir, &opts.set_plugins)?;
        return Ok(Prepared {
            exp: loaded.config,
            resolved_yaml: loaded.resolved_yaml,
            experiment_file: run_dir.experiment_file()?,
            run_dir: Some(run_dir),
        });
    }
    let loaded = shimmer_config::load(&opts.experiment, &opts.overrides)?;
    Ok(Prepared {
        experiment_file: Some(opts.experiment.clone()),
        exp: loaded.config,
        resolved_yaml: loaded.resolved_yaml,
        run_dir: None,
    })
}

/// Trains an experiment (or resumes a run) and returns its summary; the
/// summary is also in the run folder, with status `failed` and the error
/// when training stopped on one.
pub fn run(opts: &RunOptions) -> Result<RunSummary> {
    let p = prepare(opts)?;
    // Plugins, data and model first: bad input leaves no run folder behind.
    let (sources, watcher) = if opts.watch {
        let (sources, watcher) = shimmer_data::swap::open_watched_sources(&p.exp)?;
        (sources, Some(watcher))
    } else {
        (open_sources(&p.exp)?, None)
    };
    // Watched domains keep their own latent cache (see `hotswap`).
    let uncached;
    let exp = match &watcher {
        Some(_) => {
            let mut e = p.exp.clone();
            e.data.cache.enabled = false;
            uncached = e;
            &uncached
        }
        None => &p.exp,
    };
    // Watched: frozen domain models keep their outputs themselves.
    let memoize_frozen = watcher.is_some() && p.exp.data.cache.enabled;
    let (pipeline, task) = build_from(
        exp,
        &base_dir(p.experiment_file.as_deref()),
        &sources,
        memoize_frozen,
    )?;
    let watcher = match watcher {
        Some(mut w) => {
            let loaders = [
                Some(&pipeline.train),
                pipeline.val.as_ref(),
                pipeline.test.as_ref(),
            ];
            w.require_items(&loaders.into_iter().flatten().collect::<Vec<_>>());
            if p.exp.data.cache.enabled {
                w.enable_cache(p.exp.data.workers)
                    .context("data: building the latent cache")?;
            }
            Some(w)
        }
        None => None,
    };
    let (run_dir, resuming) = match &p.run_dir {
        Some(dir) => (dir.clone(), true),
        None => {
            let training = &p.exp.training;
            let dir = RunDir::create(opts.run_dir.as_deref(), &training.runs_dir, &p.exp.name)?;
            dir.write_config(&p.resolved_yaml)?;
            (dir, false)
        }
    };
    let mut summary = RunSummary {
        experiment: p.exp.name.clone(),
        experiment_file: p.experiment_file.as_ref().map(|f| f.display().to_string()),
        run_dir: Some(run_dir.path().display().to_string()),
        status: RunStatus::Running,
        error: None,
        monitor: p.exp.training.monitor.clone(),
        mode: p.exp.training.mode,
        best_value: None,
        best_step: None,
        steps: 0,
        epochs: 0,
        wall_time_s: 0.0,
        metrics: Default::default(),
        top_k: Vec::new(),
        stop_reason: None,
        stopped_at_step: None,
    };
    run_dir.write_summary(&summary)?;
    eprintln!("run folder {}", run_dir.path().display());
    eprintln!(
        "training on {}",
        device::describe(task.params().device(), p.exp.precision)
    );
    let run = Run {
        exp: &p.exp,
        resolved_yaml: &p.resolved_yaml,
        run_dir: &run_dir,
        resuming,
        fast_dev_run: opts.fast_dev_run,
    };
    let result = run.train(&pipeline, task, &mut summary, watcher, &opts.stop);
    match &result {
        Ok(()) => summary.status = RunStatus::Finished,
        Err(e) => {
            summary.status = if e.downcast_ref::<stop::Stopped>().is_some() {
                RunStatus::Interrupted
            } else {
                RunStatus::Failed
            };
            summary.error = Some(format!("{e:#}"));
        }
    }
    run_dir
        .write_summary(&summary)
        .context("cannot write the run summary")?;
    result.map(|()| summary)
}

/// Builds the GW's domain list: latent sizes (the domain model's, else the
/// plugin's) and loss specs (the YAML's, else the plugin's for a domain
/// without model, else MSE), in model order.
fn domain_specs(
    exp: &Experiment,
    sources: &shimmer_data::Sources,
    models: &IndexMap<String, AttachedModel>,
) -> Result<Vec<DomainSpec>> {
    exp.domains
        .iter()
        .map(|(name, d)| {
            let source = sources.get(name);
            let latent_dim = match (models.get(name), source, d.latent_dim) {
                (Some(m), _, _) => m.model.latent_dim(),
                (None, Some(s), _) => s.latent_dim(),
                (None, None, Some(dim)) => dim,
                (None, None, None) => bail!("domain `{name}` has no plugin and no `latent_dim`"),
            };
            let plugin_spec = if models.contains_key(name) {
                None
            } else {
                source.and_then(|s| s.loss_spec())
            };
            let loss = match (&d.loss, plugin_spec) {
                (Some(segments), _) => LossSpec {
                    segments: segments.clone(),
                },
                (None, Some(spec)) => spec,
                (None, None) => LossSpec::mse(latent_dim),
            };
            Ok(DomainSpec {
                name: name.clone(),
                latent_dim,
                loss,
            })
        })
        .collect()
}

/// Opens the plugins, builds the loaders and what the experiment trains: a
/// GW with its domain models, or one domain model to pretrain. A frozen
/// domain model becomes part of its domain's data (so the latent cache holds
/// its outputs); a trained one runs in the GW's step.
pub fn build(exp: &Experiment, base_dir: &Path) -> Result<(DataPipeline, Box<dyn Task>)> {
    build_from(exp, base_dir, &open_sources(exp)?, false)
}

/// [`build`] over already opened plugin `sources` (watched ones, with
/// `--watch`); `memoize_frozen` makes frozen domain models keep their
/// outputs in memory (when the run's latent cache is off for watching).
fn build_from(
    exp: &Experiment,
    base_dir: &Path,
    plugin_sources: &shimmer_data::Sources,
    memoize_frozen: bool,
) -> Result<(DataPipeline, Box<dyn Task>)> {
    let device = device::resolve(exp.device)?;
    device::check_precision(&device, exp.precision)?;
    let mut sources = plugin_sources.clone();
    let input_dim = |name: &str| -> Result<usize> {
        match (
            plugin_sources.get(name),
            exp.domains.get(name).and_then(|d| d.latent_dim),
        ) {
            (Some(s), _) => Ok(s.latent_dim()),
            (None, Some(dim)) => Ok(dim),
            (None, None) => bail!("domain `{name}` has no plugin and no `latent_dim`"),
        }
    };
    if let Some(p) = &exp.pretrain {
        let d = &exp.domains[&p.domain];
        let model = DomainModel::new(&d.model.arch, input_dim(&p.domain)?, &device, exp.seed)
            .with_context(|| format!("domain `{}`", p.domain))?;
        let pipeline = DataPipeline::build(&exp.data, &sources, exp.seed, Some(base_dir))
            .context("cannot build the data loaders")?;
        let task = PretrainTask::new(&p.domain, model, device, exp.seed, p.save_to.clone());
        return Ok((pipeline, Box::new(task)));
    }
    let mut trained = IndexMap::new();
    for (i, (name, d)) in exp.domains.iter().enumerate() {
        if d.model.arch == DomainModelConfig::Identity {
            continue;
        }
        let seed = exp.seed.wrapping_add(i as u64 + 1);
        let model = DomainModel::from_spec(&d.model, input_dim(name)?, &device, seed)
            .with_context(|| format!("domain `{name}`"))?;
        if !d.model.frozen {
            trained.insert(
                name.clone(),
                AttachedModel {
                    model,
                    frozen: false,
                },
            );
            continue;
        }
        if d.model.checkpoint.is_none() {
            eprintln!(
                "warning: domain `{name}`'s model is frozen and has no `checkpoint`: \
                 it stays a random projection"
            );
        }
        let inner = plugin_sources.get(name).cloned().with_context(|| {
            format!("domain `{name}` has a model but no plugin to give it data")
        })?;
        let mut wrapped =
            ModelSource::new(inner, model).with_context(|| format!("domain `{name}`"))?;
        if memoize_frozen {
            wrapped = wrapped.memoized();
        }
        sources.insert(name.clone(), Arc::new(wrapped));
    }
    let pipeline = DataPipeline::build(&exp.data, &sources, exp.seed, Some(base_dir))
        .context("cannot build the data loaders")?;
    let specs = domain_specs(exp, &sources, &trained)?;
    let gw = GlobalWorkspace::with_precision(
        exp.workspace()?,
        &exp.loss,
        &specs,
        &device,
        exp.precision,
        exp.seed,
    )?;
    Ok((pipeline, Box::new(GwTask::new(gw, trained, device)?)))
}

/// `shimmer validate`: loads an experiment, its plugins, data and model as
/// `shimmer run` would, without training; returns a short report.
pub fn validate(experiment: &Path, overrides: &[String]) -> Result<String> {
    let exp = shimmer_config::load(experiment, overrides)?.config;
    let (pipeline, task) = build(&exp, &base_dir(Some(experiment)))?;
    let steps = total_steps(&exp.training, pipeline.train.len())?;
    let mut report = format!(
        "{}: ok\n  domains      {}\n  model        {}\n  device       {}\n  training     {} batches per epoch, {steps} steps\n",
        experiment.display(),
        exp.domains.keys().cloned().collect::<Vec<_>>().join(", "),
        task.describe(),
        device::describe(task.params().device(), exp.precision),
        pipeline.train.len(),
    );
    for (name, loader) in [("validation", &pipeline.val), ("test", &pipeline.test)] {
        if let Some(l) = loader {
            report.push_str(&format!("  {name:<12} {} batches\n", l.len()));
        }
    }
    Ok(report)
}

/// One run being trained.
struct Run<'a> {
    exp: &'a Experiment,
    resolved_yaml: &'a str,
    run_dir: &'a RunDir,
    resuming: bool,
    fast_dev_run: bool,
}

impl Run<'_> {
    fn train(
        &self,
        pipeline: &DataPipeline,
        task: Box<dyn Task>,
        summary: &mut RunSummary,
        watcher: Option<shimmer_data::swap::PluginWatcher>,
        stop: &stop::StopRequest,
    ) -> Result<()> {
        let (exp, fast_dev_run) = (self.exp, self.fast_dev_run);
        let total = if fast_dev_run {
            1
        } else {
            total_steps(&exp.training, pipeline.train.len())?
        };
        let optimizer = Optimizer::new(task.params().params(), &exp.optim, Some(total as usize))?;
        let callbacks = callbacks::standard(&exp.training, watcher, stop.clone())?;
        let tb = RunLogger::create(self.run_dir.path())?;
        let mut trainer = Trainer::new(task, optimizer, &exp.training, self.run_dir, tb, callbacks);
        trainer.fast_dev_run = fast_dev_run;
        if self.resuming {
            trainer.resume()?;
            trainer.tb.restart_at(trainer.position.global_step as i64)?;
            eprintln!(
                "resuming at step {} (epoch {}, batch {})",
                trainer.position.global_step,
                trainer.position.epoch,
                trainer.position.batch_in_epoch
            );
        } else {
            trainer.tb.text(
                "config",
                0,
                &format!("```yaml\n{}\n```", self.resolved_yaml),
            )?;
            trainer.tb.hparams(
                &hparams::of(exp)?,
                std::slice::from_ref(&exp.training.monitor),
            )?;
        }
        trainer.tb.flush()?;

        let loaders = Loaders {
            train: &pipeline.train,
            val: pipeline.val.as_ref(),
        };
        let fitted = trainer.fit(&loaders, total);
        summary.steps = trainer.position.global_step;
        summary.epochs = trainer.position.epoch;
        summary.wall_time_s = trainer.position.wall_time_s;
        summary.best_value = trainer.position.best_value;
        summary.best_step = trainer.position.best_step;
        summary.metrics = trainer.last_val.clone().into_iter().collect();
        summary.top_k = trainer.report.top_k.clone();
        summary.stop_reason = trainer.report.stop_reason.clone();
        summary.stopped_at_step = trainer.report.stopped_at_step;
        if let Err(e) = fitted {
            let _ = trainer.tb.session_end(SessionStatus::Failure);
            let _ = trainer.tb.flush();
            return Err(e);
        }

        // Validate and test the best checkpoint, as shimmer's tutorial does.
        let best = self.run_dir.best_checkpoint();
        if best.exists() && !fast_dev_run {
            checkpoint::load_weights(&best, trainer.task.params())?;
            let step = trainer.position.global_step as i64;
            let mut results = Vec::new();
            if let Some(val) = &pipeline.val {
                results.extend(evaluate(&mut trainer.task, val, "best/val", false)?);
            }
            if let Some(test) = &pipeline.test {
                results.extend(evaluate(&mut trainer.task, test, "test", false)?);
            }
            for (name, v) in &results {
                trainer.tb.scalar(name, step, *v as f32)?;
                summary.metrics.insert(name.clone(), *v);
            }
            if let Some(what) = trainer.task.export()? {
                eprintln!("{what}");
            }
            if !results.is_empty() {
                eprintln!(
                    "best checkpoint (step {}):",
                    trainer.position.best_step.unwrap_or(0)
                );
                for (name, v) in &results {
                    eprintln!("  {name:<40} {v:.6}");
                }
            }
        }
        trainer.tb.session_end(SessionStatus::Success)?;
        trainer.tb.flush()?;
        eprintln!(
            "finished: {} steps, {} epochs in {:.1} s; best {} {} at step {}",
            summary.steps,
            summary.epochs,
            summary.wall_time_s,
            exp.training.monitor,
            summary
                .best_value
                .map(|v| format!("{v:.6}"))
                .unwrap_or_else(|| "n/a".into()),
            summary.best_step.unwrap_or(0)
        );
        Ok(())
    }
}
