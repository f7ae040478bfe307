//! `shimmer run`: trains an experiment end to end (or resumes a run),
//! writing its run folder; see the crate documentation.

use crate::build::{base_dir, build_from};
use crate::callbacks;
use crate::failure::TrainingFailed;
use crate::hparams;
use crate::images::ImageLogger;
use crate::logger::{LogPosition, RunLogger};
use crate::provenance::Provenance;
use crate::run_dir::{RunDir, RunStatus, RunSummary};
use crate::stop;
use crate::task::Task;
use crate::trainer::{Loaders, Trainer, evaluate, load_last_checkpoint, total_steps};
use anyhow::{Context, Result};
use shimmer_config::Experiment;
use shimmer_data::swap::PluginWatcher;
use shimmer_data::{DataPipeline, open_sources};
use shimmer_nn::optim::Optimizer;
use shimmer_nn::{checkpoint, device};
use shimmer_tensorboard::SessionStatus;
use std::collections::HashMap;
use std::path::PathBuf;

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
    /// (see [`shimmer_data::swap`] and [`crate::callbacks::HotSwap`]).
    pub watch: bool,
    /// With `resume`: `DOMAIN=PLUGIN` changes of a domain's plugin, checked
    /// and recorded in the run's config (see [`crate::resume`]).
    pub set_plugins: Vec<String>,
    /// With `resume`: go on although a frozen domain model's checkpoint
    /// changed since the run started (see [`crate::provenance`]).
    pub allow_changed_checkpoints: bool,
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
    /// The merged config, to place errors found after loading at their key.
    document: shimmer_config::Document,
    /// The experiment file (for a resumed run, the one it was started from).
    experiment_file: Option<PathBuf>,
    run_dir: Option<RunDir>,
}

fn prepare(opts: &RunOptions) -> Result<Prepared> {
    if let Some(dir) = &opts.resume {
        let run_dir = RunDir::open(dir)?.take()?;
        let loaded = crate::resume::load_config(&run_dir, &opts.set_plugins, &opts.overrides)?;
        return Ok(Prepared {
            exp: loaded.config,
            resolved_yaml: loaded.resolved_yaml,
            document: loaded.document,
            experiment_file: run_dir.experiment_file()?,
            run_dir: Some(run_dir),
        });
    }
    let loaded = shimmer_config::load(&opts.experiment, &opts.overrides)?;
    Ok(Prepared {
        experiment_file: Some(opts.experiment.clone()),
        exp: loaded.config,
        resolved_yaml: loaded.resolved_yaml,
        document: loaded.document,
        run_dir: None,
    })
}

/// Trains an experiment (or resumes a run) and returns its summary; the
/// summary is also in the run folder, with status `failed` and the error
/// when training stopped on one.
pub fn run(opts: &RunOptions) -> Result<RunSummary> {
    let p = prepare(opts)?;
    // From the first plugin call on: opening plugins and caches may hang too.
    let watchdog = crate::watchdog::Watchdog::start(p.exp.training.watchdog_s);
    // Plugins, data and model first: bad input leaves no run folder behind.
    let (pipeline, mut task, watcher, mut provenance) =
        open_inputs(&p, opts.watch).map_err(|e| crate::build::place_at_key(e, &p.document))?;
    // A stop asked while the inputs opened ends here, with nothing written.
    shimmer_sys::stop::check("opening the plugins and data")?;
    crate::build::check_monitors(&p.exp, &pipeline, task.as_mut())?
        .map_err(|e| p.document.invalid_at(&e.key, e.message))?;
    if p.run_dir.is_none() {
        crate::import::warm_start(task.as_mut(), &p.exp, &p.document)?;
    }
    let (run_dir, resuming) = match &p.run_dir {
        Some(dir) => {
            let record = provenance.compare_with_run(dir, opts.allow_changed_checkpoints)?;
            if let Some(done) = finished_already(dir, &p.exp, &pipeline, task.as_ref(), opts)? {
                return Ok(done);
            }
            if let Some((recorded, notes)) = record {
                let stamp = shimmer_sys::time::utc_stamp(std::time::SystemTime::now());
                provenance.changes = recorded.changes;
                for note in notes {
                    eprintln!("note: {note}");
                    provenance.changes.push(format!("resumed {stamp}: {note}"));
                }
            }
            provenance.write(dir)?;
            (dir.clone(), true)
        }
        None => {
            let training = &p.exp.training;
            // Fast dev runs are kept apart from the runs they check.
            let name = if opts.fast_dev_run {
                format!("{}/fast-dev-run", p.exp.name)
            } else {
                p.exp.name.clone()
            };
            let dir = RunDir::create(opts.run_dir.as_deref(), &training.runs_dir, &name)?;
            dir.write_config(&p.resolved_yaml)?;
            provenance.write(&dir)?;
            (dir, false)
        }
    };
    let mut summary = RunSummary::start(&p.exp, p.experiment_file.as_deref(), &run_dir);
    summary.fast_dev_run = opts.fast_dev_run;
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
    let folder = run_dir.path().to_path_buf();
    opts.stop.on_forced_exit(move || {
        let Ok(dir) = RunDir::open(&folder) else {
            return String::new();
        };
        let next = resume_hint(&dir);
        if let Ok(Some(mut s)) = dir.read_summary() {
            s.status = RunStatus::Interrupted;
            s.error = Some(format!(
                "ended by a second Ctrl-C, without a final checkpoint; {next}"
            ));
            let _ = dir.write_summary(&s);
        }
        next
    });
    let result = run.train(&pipeline, task, &mut summary, watcher, &opts.stop);
    drop(watchdog);
    match &result {
        Ok(()) => summary.status = RunStatus::Finished,
        Err(e) => {
            let stopped = e.downcast_ref::<stop::Stopped>().is_some()
                || e.downcast_ref::<shimmer_sys::stop::StopAsked>().is_some();
            summary.status = if stopped {
                RunStatus::Interrupted
            } else {
                RunStatus::Failed
            };
            summary.error = Some(format!("{e:#}"));
        }
    }
    if let Err(e) = run_dir.write_final_summary(&summary) {
        // Training ran: a summary that cannot be written (a full disk) is
        // a failure of the run, not bad input.
        let e = e.context(format!(
            "cannot write the run summary {}",
            run_dir.path().join("summary.json").display()
        ));
        // The run's end is then known only from this message: say it too.
        let e = match result {
            Err(first) => anyhow::anyhow!("{e:#} (the run had ended: {first:#})"),
            Ok(()) => e,
        };
        return Err(e.context(TrainingFailed {
            step: summary.steps,
        }));
    }
    result.map(|()| summary)
}

/// What a run folder offers to go on with: the resume command when a
/// last checkpoint exists, otherwise that there is nothing to resume.
fn resume_hint(dir: &RunDir) -> String {
    if dir.last_checkpoint().is_file() {
        format!(
            "`shimmer run --resume {}` continues from its last checkpoint",
            dir.path().display()
        )
    } else {
        format!(
            "no checkpoint was written yet, so {} has nothing to resume: run the experiment again",
            dir.path().display()
        )
    }
}

/// When resuming a run that already finished (and the resume does not
/// train it longer), says so and returns its summary, touching nothing:
/// resuming it again would validate and log its last step once more.
fn finished_already(
    dir: &RunDir,
    exp: &Experiment,
    pipeline: &DataPipeline,
    task: &dyn Task,
    opts: &RunOptions,
) -> Result<Option<RunSummary>> {
    let Some(summary) = dir.read_summary()? else {
        return Ok(None);
    };
    if summary.status != RunStatus::Finished {
        return Ok(None);
    }
    let total = total_steps(&exp.training, pipeline.train.len())?;
    let stopped_early = summary.stop_reason.is_some() && opts.overrides.is_empty();
    if summary.steps < total && !stopped_early {
        return Ok(None);
    }
    // What a resume would refuse is refused here too: a damaged checkpoint.
    let last = dir.last_checkpoint();
    if last.exists() {
        checkpoint::load_weights(&last, task.params())?;
    }
    let how = match &summary.stop_reason {
        Some(reason) if summary.steps < total => {
            format!("stopped at step {}: {reason}", summary.steps)
        }
        _ => format!("{} of {total} steps", summary.steps),
    };
    eprintln!(
        "{} is finished ({how}): nothing to resume. To train it longer, resume with a larger \
         `training.max_steps` or `training.max_epochs`",
        dir.path().display()
    );
    Ok(Some(summary))
}

/// Opens the plugins (watched ones with `--watch`, which keep their own
/// latent cache), builds the loaders and the model.
/// What [`open_inputs`] opens: the data, the task, the plugin watcher
/// (with `--watch`) and what they were made from.
type Inputs = (
    DataPipeline,
    Box<dyn Task>,
    Option<PluginWatcher>,
    Provenance,
);

fn open_inputs(p: &Prepared, watch: bool) -> Result<Inputs> {
    let base = base_dir(p.experiment_file.as_deref());
    if !watch {
        let sources = open_sources(&p.exp)?;
        let provenance = Provenance::of(&p.exp, &sources)?;
        let (pipeline, task) = build_from(&p.exp, &base, &sources, false)?;
        return Ok((pipeline, task, None, provenance));
    }
    let (sources, mut watcher) = shimmer_data::swap::open_watched_sources(&p.exp)?;
    let provenance = Provenance::of(&p.exp, &sources)?;
    let mut uncached = p.exp.clone();
    uncached.data.cache.enabled = false;
    // Watched: frozen domain models keep their outputs themselves.
    let (pipeline, task) = build_from(&uncached, &base, &sources, p.exp.data.cache.enabled)?;
    let loaders = [
        Some(&pipeline.train),
        pipeline.val.as_ref(),
        pipeline.test.as_ref(),
    ];
    watcher.require_items(&loaders.into_iter().flatten().collect::<Vec<_>>());
    if p.exp.data.cache.enabled {
        watcher
            .enable_cache(p.exp.data.workers)
            .context("data: building the latent cache")?;
    }
    Ok((pipeline, task, Some(watcher), provenance))
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
        watcher: Option<PluginWatcher>,
        stop: &stop::StopRequest,
    ) -> Result<()> {
        let (exp, fast_dev_run) = (self.exp, self.fast_dev_run);
        let total = if fast_dev_run {
            1
        } else {
            total_steps(&exp.training, pipeline.train.len())?
        };
        let mut optimizer =
            Optimizer::new(task.params().params(), &exp.optim, Some(total as usize))?;
        // A resume reads the last checkpoint once: weights and optimiser now,
        // the rest for the logs and the trainer below.
        let resumed = if self.resuming {
            Some(load_last_checkpoint(
                self.run_dir,
                task.params(),
                &mut optimizer,
            )?)
        } else {
            None
        };
        let mut callbacks = callbacks::standard(&exp.training, watcher, stop.clone())?;
        if exp.training.images > 0
            && let Some(val) = &pipeline.val
            && let Some(first) = val.epoch(0)?.next()
        {
            let first = first.context("the first validation batch, for image grids")?;
            // Before the signal handler, which must stay last.
            let at = callbacks.len().saturating_sub(1);
            callbacks.insert(at, Box::new(ImageLogger::new(&first, exp.training.images)));
        }
        let tb = if let Some(state) = &resumed {
            let last = self.run_dir.last_checkpoint().display().to_string();
            let step = crate::position::Position::from_tensors(state, &last)?.global_step as i64;
            RunLogger::resume(
                self.run_dir.path(),
                LogPosition::from_tensors(state).as_ref(),
                step,
            )?
        } else if fast_dev_run {
            RunLogger::without_tensorboard(self.run_dir.path())?
        } else {
            RunLogger::create(self.run_dir.path())?
        };
        let mut trainer = Trainer::new(task, optimizer, &exp.training, self.run_dir, tb, callbacks);
        trainer.fast_dev_run = fast_dev_run;
        self.start(&mut trainer, resumed.as_ref())?;
        if resumed.is_none()
            && exp
                .workspace
                .as_ref()
                .is_some_and(|w| w.init_from.is_some())
            && let Some(val) = &pipeline.val
            && !fast_dev_run
        {
            // Where the warm start stands before its first step, as a
            // validation of the weights it starts from would say.
            let means = evaluate(&mut trainer.task, val, "val", false)?;
            for (name, v) in &means {
                trainer.tb.scalar(name, 0, *v as f32)?;
            }
            trainer.tb.flush()?;
            if let Some(loss) = means.get("val/loss") {
                eprintln!("step 0  val/loss {loss:.5}  (the weights it starts from)");
            }
        }
        // A stop asked before the first step trains none.
        if let (Some(signal), Some(number)) = (stop.asked(), stop.signal()) {
            trainer.tb.flush()?;
            if resumed.is_none() {
                return Err(shimmer_sys::stop::StopAsked {
                    signal: number,
                    during: "starting the run".to_string(),
                }
                .into());
            }
            return Err(stop::Stopped {
                signal,
                step: trainer.position.global_step,
                run_dir: self.run_dir.path().display().to_string(),
            }
            .into());
        }
        let loaders = Loaders {
            train: &pipeline.train,
            val: pipeline.val.as_ref(),
        };
        let fitted = trainer.fit(&loaders, total);
        record(summary, &trainer);
        if let Err(e) = fitted {
            // An interrupted run is not over: its resume writes the end.
            if e.downcast_ref::<stop::Stopped>().is_some() {
                let _ = trainer.tb.flush();
                return Err(e);
            }
            let _ = trainer.tb.session_end(SessionStatus::Failure);
            let _ = trainer.tb.flush();
            return Err(e.context(TrainingFailed {
                step: trainer.position.global_step,
            }));
        }
        if !fast_dev_run {
            self.evaluate_best(&mut trainer, pipeline, summary)?;
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

    /// Restores a resumed run from its checkpoint's `resumed` state, or logs
    /// a new one's config and HParams.
    fn start<T: Task>(
        &self,
        trainer: &mut Trainer<'_, T>,
        resumed: Option<&HashMap<String, candle_core::Tensor>>,
    ) -> Result<()> {
        if let Some(state) = resumed {
            trainer.restore(state)?;
            eprintln!(
                "resuming at step {} (epoch {}, batch {})",
                trainer.position.global_step,
                trainer.position.epoch,
                trainer.position.batch_in_epoch
            );
        } else {
            let config = format!("```yaml\n{}\n```", self.resolved_yaml);
            trainer.tb.text("config", 0, &config)?;
            trainer.tb.hparams(&hparams::of(self.exp)?)?;
        }
        trainer.tb.flush()
    }

    /// Validates and tests the best checkpoint, as shimmer's tutorial does
    /// (`best/val/*`, `test/*`), and exports what the task exports.
    fn evaluate_best<T: Task>(
        &self,
        trainer: &mut Trainer<'_, T>,
        pipeline: &DataPipeline,
        summary: &mut RunSummary,
    ) -> Result<()> {
        let best = self.run_dir.best_checkpoint();
        if !best.exists() {
            return Ok(());
        }
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
            let at = trainer.position.best_step.unwrap_or(0);
            eprintln!("best checkpoint (step {at}):");
            for (name, v) in &results {
                eprintln!("  {name:<40} {v:.6}");
            }
        }
        Ok(())
    }
}

/// Copies where `trainer` stands into `summary`: steps, epochs, time, best
/// value, last validation metrics, kept checkpoints and why it stopped.
fn record<T: Task>(summary: &mut RunSummary, trainer: &Trainer<'_, T>) {
    let p = &trainer.position;
    summary.steps = p.global_step;
    summary.epochs = p.epoch;
    summary.wall_time_s = p.wall_time_s;
    summary.best_value = p.best_value;
    summary.best_step = p.best_step;
    summary.metrics = trainer.last_val.clone().into_iter().collect();
    summary.top_k = trainer.report.top_k.clone();
    summary.stop_reason = trainer.report.stop_reason.clone();
    summary.stopped_at_step = trainer.report.stopped_at_step;
}
