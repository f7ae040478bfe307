//! From a checked experiment to what trains: its plugins opened, the data
//! loaders built, and a GW with its domain models (or one domain model to
//! pretrain); `shimmer validate` stops there.

use crate::gw_task::{AttachedModel, GwTask};
use crate::pretrain_task::PretrainTask;
use crate::task::PluginSpace;
use crate::task::Task;
use crate::trainer::total_steps;
use anyhow::{Context, Result, bail};
use indexmap::IndexMap;
use shimmer_config::Experiment;
use shimmer_data::{DataPipeline, ModelSource, open_sources};
use shimmer_models::domain_model::{DomainModel, DomainModelConfig};
use shimmer_nn::device;
use shimmer_nn::workspace::memory_estimate;
use shimmer_nn::{DomainSpec, GlobalWorkspace};
use shimmer_plugin_api::LossSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Folder that relative item-list files of an experiment are taken from.
pub(crate) fn base_dir(experiment_file: Option<&Path>) -> PathBuf {
    experiment_file
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
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
pub(crate) fn build_from(
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
    // Where each plugin domain's predictions are scored again: the YAML's
    // loss spec, else the plugin's.
    let mut spaces: IndexMap<String, PluginSpace> = IndexMap::new();
    for (name, d) in &exp.domains {
        if let Some(source) = plugin_sources.get(name) {
            let spec = match &d.loss {
                Some(segments) => LossSpec {
                    segments: segments.clone(),
                },
                None => source
                    .loss_spec()
                    .unwrap_or_else(|| LossSpec::mse(source.latent_dim())),
            };
            spaces.insert(
                name.clone(),
                PluginSpace {
                    source: source.clone(),
                    spec,
                    model: None,
                },
            );
        }
    }
    if let Some(p) = &exp.pretrain {
        let d = &exp.domains[&p.domain];
        let model = DomainModel::new(&d.model.arch, input_dim(&p.domain)?, &device, exp.seed)
            .with_context(|| format!("domain `{}`", p.domain))?;
        let pipeline = DataPipeline::build(&exp.data, &sources, exp.seed, Some(base_dir))
            .context("cannot build the data loaders")?;
        let space = spaces.swap_remove(&p.domain);
        let task = PretrainTask::new(&p.domain, model, space, device, exp.seed, p.save_to.clone());
        return Ok((pipeline, Box::new(task)));
    }
    let mut trained = IndexMap::new();
    for (i, (name, d)) in exp.domains.iter().enumerate() {
        if d.model.arch == DomainModelConfig::Identity {
            continue;
        }
        let seed = exp.seed.wrapping_add(i as u64 + 1);
        let model = DomainModel::from_spec(&d.model, name, input_dim(name)?, &device, seed)
            .with_context(|| format!("domain `{name}`"))?;
        if let Some(space) = spaces.get_mut(name) {
            space.model = Some(model.clone());
        }
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
    if device.is_cpu() {
        let dims: Vec<(String, usize)> = specs
            .iter()
            .map(|d| (d.name.clone(), d.latent_dim))
            .collect();
        let estimate = memory_estimate(exp.workspace()?, &dims, exp.data.batch_size);
        shimmer_sys::memory::ensure_fits(
            &format!(
                "training this workspace ({} parameters, batches of {})",
                estimate.parameters, exp.data.batch_size
            ),
            estimate.bytes,
            shimmer_sys::memory::available_bytes(),
        )?;
    }
    let gw = GlobalWorkspace::with_precision(
        exp.workspace()?,
        &exp.loss,
        &specs,
        &device,
        exp.precision,
        exp.seed,
    )?;
    Ok((
        pipeline,
        Box::new(GwTask::new(gw, trained, spaces, device)?),
    ))
}

/// An error about a key of the config met while opening the inputs (a
/// plugin refusing its `config`), placed where that key is in the YAML;
/// other errors as they are.
pub(crate) fn place_at_key(e: anyhow::Error, document: &shimmer_config::Document) -> anyhow::Error {
    match e.downcast_ref::<shimmer_config::check::CheckError>() {
        Some(c) => document.invalid_at(&c.key, c.message.clone()).into(),
        None => e,
    }
}

/// Checks that `training.monitor` and `training.early_stopping.monitor`
/// name validation metrics the run will log, by evaluating one validation
/// batch (the task's random state is put back, so the run's numbers do not
/// change): a misspelt metric is refused before training rather than at
/// the first validation. Without a validation set nothing is monitored and
/// nothing is checked.
///
/// # Errors
/// The outer error when the batch cannot be evaluated; the inner one names
/// the key whose metric does not exist, with the metrics that do.
pub fn check_monitors(
    exp: &Experiment,
    pipeline: &DataPipeline,
    task: &mut dyn Task,
) -> Result<Result<(), shimmer_config::check::CheckError>> {
    let Some(val) = &pipeline.val else {
        return Ok(Ok(()));
    };
    let saved: std::collections::HashMap<String, candle_core::Tensor> =
        task.state()?.into_iter().collect();
    let means = crate::trainer::evaluate(task, val, "val", true)
        .context("cannot evaluate a validation batch to check the monitored metrics")?;
    task.load_state(&saved)?;
    let training = &exp.training;
    let mut wanted = vec![("training.monitor", training.monitor.as_str())];
    if let Some(m) = training
        .early_stopping
        .as_ref()
        .and_then(|e| e.monitor.as_deref())
    {
        wanted.push(("training.early_stopping.monitor", m));
    }
    for (key, metric) in wanted {
        if !means.contains_key(metric) {
            let known: Vec<&str> = means.keys().map(String::as_str).collect();
            return Ok(Err(shimmer_config::check::CheckError::new(
                key,
                format!(
                    "`{metric}` is not a validation metric of this experiment; it logs {}",
                    known.join(", ")
                ),
            )));
        }
    }
    Ok(Ok(()))
}

/// `shimmer validate`: loads an experiment, its plugins, data and model as
/// `shimmer run` would, without training; returns a short report.
pub fn validate(experiment: &Path, overrides: &[String]) -> Result<String> {
    let loaded = shimmer_config::load(experiment, overrides)?;
    let exp = &loaded.config;
    let (pipeline, mut task) =
        build(exp, &base_dir(Some(experiment))).map_err(|e| place_at_key(e, &loaded.document))?;
    check_monitors(exp, &pipeline, task.as_mut())?
        .map_err(|e| loaded.invalid_at(&e.key, e.message))?;
    crate::import::warm_start(task.as_mut(), exp, &loaded.document)?;
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
