//! `shimmer test` and `shimmer predict`: a finished (or stopped) run's
//! checkpoint evaluated on, or applied to, its validation or test set.

use super::run_dir::{RunDir, write_atomic};
use super::task::{Task, fullest_group};
use super::trainer::evaluate;
use crate::provenance::Provenance;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};
use indexmap::IndexMap;
use shimmer_nn::checkpoint;
use shimmer_plugin_api::Split;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Which run, checkpoint and split to evaluate.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The run folder (its `config.yaml` rebuilds the model and data).
    pub run_dir: PathBuf,
    /// Weights to use; default: the run's best checkpoint, else its last.
    pub checkpoint: Option<PathBuf>,
    /// `val` or `test`.
    pub split: Split,
    /// Evaluate although a frozen domain model's checkpoint changed since
    /// the run was trained (see [`crate::provenance`]).
    pub allow_changed_checkpoints: bool,
}

/// The run's model with the chosen weights (and the data pipeline).
fn load_model(opts: &EvalOptions) -> Result<(Box<dyn Task>, shimmer_data::DataPipeline, PathBuf)> {
    let run = RunDir::open(&opts.run_dir)?;
    let exp = shimmer_config::load(&run.config_file(), &[])?.config;
    let experiment_file = run.experiment_file()?;
    let sources = shimmer_data::open_sources(&exp)?;
    let now = Provenance::of(&exp, &sources)?;
    if let Some((_, notes)) = now.compare_with_run(&run, opts.allow_changed_checkpoints)? {
        for note in notes {
            eprintln!("note: {note}");
        }
    }
    let base = crate::build::base_dir(experiment_file.as_deref());
    let (pipeline, task) = crate::build::build_from(&exp, &base, &sources, false)?;
    let checkpoint = match &opts.checkpoint {
        Some(c) => c.clone(),
        None if run.best_checkpoint().exists() => run.best_checkpoint(),
        None if run.last_checkpoint().exists() => run.last_checkpoint(),
        None => bail!("{} has no checkpoint yet", run.path().display()),
    };
    let mut task = task;
    crate::import::load_into(task.as_mut(), &checkpoint, &exp)?;
    Ok((task, pipeline, checkpoint))
}

/// The run's model with the chosen weights, and the loader of the split.
fn load(opts: &EvalOptions) -> Result<(Box<dyn Task>, shimmer_data::DataLoader, PathBuf)> {
    let (task, pipeline, checkpoint) = load_model(opts)?;
    let loader = match opts.split {
        Split::Val => pipeline.val,
        Split::Test => pipeline.test,
        Split::Train => bail!("choose the `val` or `test` split"),
    }
    .with_context(|| format!("the run's experiment has no {} items", opts.split))?;
    Ok((task, loader, checkpoint))
}

/// Metrics of the checkpoint on the split (`test/*` or `val/*`), also
/// written to `<run>/eval-<split>.json`.
pub fn test(opts: &EvalOptions) -> Result<IndexMap<String, f64>> {
    let (mut task, loader, checkpoint) = load(opts)?;
    let metrics = evaluate(&mut task, &loader, opts.split.name(), false)?;
    let report = serde_json::json!({
        "checkpoint": checkpoint.display().to_string(),
        "split": opts.split.name(),
        "metrics": metrics,
    });
    let file = opts
        .run_dir
        .join(format!("eval-{}.json", opts.split.name()));
    write_atomic(&file, serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(metrics)
}

/// Applies the checkpoint to every batch of the split and writes the
/// outputs, rows in loader order, to a safetensors file (`items` holds the
/// item indices). Returns the number of rows.
pub fn predict(opts: &EvalOptions, out: &Path) -> Result<usize> {
    RunDir::open(&opts.run_dir)?.check_output(out)?;
    let (mut task, loader, _) = load(opts)?;
    let mut parts: IndexMap<String, Vec<Tensor>> = IndexMap::new();
    let mut items: Vec<i64> = Vec::new();
    // Drawn as a validation pass draws: the same predictions as `test`'s.
    task.start_evaluation()?;
    for (k, batch) in loader.epoch(0)?.enumerate() {
        let batch = batch.with_context(|| format!("{} batch {k}", opts.split))?;
        let Some((_, group)) = fullest_group(&batch) else {
            continue;
        };
        items.extend(group.items.iter().map(|&i| i as i64));
        for (name, t) in task.predict(&batch)? {
            let t = t
                .detach()
                .to_dtype(DType::F32)?
                .to_device(&candle_core::Device::Cpu)?;
            parts.entry(name).or_default().push(t);
        }
    }
    task.end_evaluation()?;
    let rows = items.len();
    let mut tensors: IndexMap<String, Tensor> = parts
        .into_iter()
        .map(|(n, ts)| Ok((n, Tensor::cat(&ts, 0)?)))
        .collect::<Result<_>>()?;
    tensors.insert(
        "items".to_string(),
        Tensor::from_vec(items, rows, &candle_core::Device::Cpu)?,
    );
    let tensors: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    // Predictions of data allowed to hold NaN may hold it too.
    checkpoint::write_tensors(out, &tensors, HashMap::new(), false)?;
    Ok(rows)
}

/// Writes the run's weights (`opts.checkpoint`, else its best, else its
/// last) as one safetensors file holding shimmer's state dict (see
/// [`Task::state_dict`]), and returns how many tensors it holds.
///
/// # Errors
/// A run without checkpoint, or an unwritable `out`.
pub fn export(opts: &EvalOptions, out: &Path) -> Result<(usize, PathBuf)> {
    RunDir::open(&opts.run_dir)?.check_output(out)?;
    let (task, _, checkpoint) = load_model(opts)?;
    let state_dict = task.state_dict()?;
    let run = RunDir::open(&opts.run_dir)?;
    let loaded = shimmer_config::load(&run.config_file(), &[])?;
    let metadata = export_metadata(&loaded.config, &loaded.resolved_yaml, &state_dict)?;
    let tensors: HashMap<String, Tensor> = state_dict.into_iter().collect();
    let n = tensors.len();
    checkpoint::write_tensors(out, &tensors, metadata, true)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok((n, checkpoint))
}

/// Metadata key of an export's hyperparameters (JSON).
pub const HPARAMS_KEY: &str = "shimmer.hparams";
/// Metadata key of an export's resolved experiment config (YAML).
pub const CONFIG_KEY: &str = "shimmer.config";

/// What a Python loader needs besides the tensors to build shimmer's
/// modules: the flavour, workspace and encoder/decoder sizes, each domain's
/// model settings and latent size (read from the weights), the loss
/// coefficients (`shimmer.hparams`, JSON), and the whole resolved config
/// (`shimmer.config`). `format: pt` marks a PyTorch state dict, as
/// `safetensors.torch` writes it.
fn export_metadata(
    exp: &shimmer_config::Experiment,
    resolved_yaml: &str,
    state_dict: &IndexMap<String, Tensor>,
) -> Result<HashMap<String, String>> {
    let latent_dim = |d: &str| {
        state_dict
            .get(&format!("gw_mod.gw_encoders.{d}.0.weight"))
            .and_then(|w| w.dims().get(1).copied())
    };
    let domains: serde_json::Map<String, serde_json::Value> = exp
        .domains
        .iter()
        .map(|(d, cfg)| {
            Ok((
                d.clone(),
                serde_json::json!({
                    "model": serde_json::to_value(&cfg.model)?,
                    "latent_dim": latent_dim(d),
                }),
            ))
        })
        .collect::<Result<_>>()?;
    let mut hparams = serde_json::json!({
        "domains": domains,
        "loss_coefs": serde_json::to_value(&exp.loss.coefs)?,
    });
    if let Some(ws) = &exp.workspace {
        hparams["flavour"] = serde_json::to_value(ws.flavour)?;
        hparams["workspace_dim"] = ws.dim.into();
        hparams["encoders"] = serde_json::to_value(ws.encoders)?;
        hparams["decoders"] = serde_json::to_value(ws.decoders)?;
        hparams["selection"] = serde_json::to_value(ws.selection())?;
        hparams["activation"] = serde_json::to_value(ws.activation)?;
        hparams["contrastive"] = serde_json::to_value(ws.contrastive)?;
    }
    if let Some(pretrain) = &exp.pretrain {
        hparams["pretrain"] = serde_json::to_value(pretrain)?;
    }
    Ok(HashMap::from([
        (HPARAMS_KEY.to_string(), hparams.to_string()),
        (CONFIG_KEY.to_string(), resolved_yaml.to_string()),
        ("format".to_string(), "pt".to_string()),
    ]))
}
