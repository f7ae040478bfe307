//! `shimmer replay`: runs training steps on given batches of latents from
//! given initial weights, and writes every step's metrics, so anyone can
//! check this port against the Python library number for number.
//!
//! Batches are a safetensors file with keys `step{k}/{group}/{domain}`
//! (groups written `a+b`), `k = 0..N-1`. safetensors does not keep key order,
//! so groups are ordered by size, then by the model order of their domains
//! (`a`, `b`, `a+b`; `p`, `q+r`, `p+q+r`); a group's domains keep the order
//! written in its name. Domains are taken from the experiment with their
//! `latent_dim` and `loss` (MSE when absent); plugins are not loaded.
//!
//! Each output line is a JSON object: `step`, `lr`, `beta1`, `loss`, then
//! every metric under its shimmer name, in emission order.

use crate::optim::Optimizer;
use crate::{Batch, DomainSpec, GlobalWorkspace, GroupKey, Latents};
use crate::{checkpoint, device};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use shimmer_config::Experiment;
use shimmer_plugin_api::LossSpec;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
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
pub fn run(options: &ReplayOptions) -> Result<()> {
    let exp = shimmer_config::load(&options.experiment, &[])?.config;
    let device = device::resolve(exp.device)?;
    let domains = domain_specs(&exp)?;
    let gw = GlobalWorkspace::with_precision(
        exp.workspace()?,
        &exp.loss,
        &domains,
        &device,
        exp.precision,
        exp.seed,
    )?;
    checkpoint::load_weights(&options.init, gw.params())
        .with_context(|| format!("cannot load initial weights {}", options.init.display()))?;
    let order: Vec<String> = exp.domains.keys().cloned().collect();
    let batches = load_batches(&options.batches, &order, &device)?;
    let mut opt = Optimizer::new(gw.params().params(), &exp.optim, Some(batches.len()))?;

    let file = std::fs::File::create(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (k, batch) in batches.iter().enumerate() {
        let step = gw.step_loss(batch).with_context(|| format!("step {k}"))?;
        let loss = step
            .loss
            .to_dtype(candle_core::DType::F32)?
            .to_scalar::<f32>()?;
        let grads = step
            .loss
            .backward()
            .with_context(|| format!("backward at step {k}"))?;
        let (lr, beta1) = opt.current()?;
        opt.step(&grads)
            .with_context(|| format!("optimizer step {k}"))?;
        writeln!(out, "{}", json_line(k, lr, beta1, loss, &step.metrics)?)?;
    }
    out.flush()?;
    if let Some(path) = &options.final_weights {
        checkpoint::save_weights(path, gw.params())?;
    }
    Ok(())
}

/// The experiment's domains with their latent sizes and loss specs.
pub fn domain_specs(exp: &Experiment) -> Result<Vec<DomainSpec>> {
    exp.domains
        .iter()
        .map(|(name, d)| {
            let latent_dim = d.latent_dim.with_context(|| {
                format!("domain `{name}`: replay needs `latent_dim` (plugins are not loaded)")
            })?;
            let loss = match &d.loss {
                Some(segments) => LossSpec {
                    segments: segments.clone(),
                },
                None => LossSpec::mse(latent_dim),
            };
            Ok(DomainSpec {
                name: name.clone(),
                latent_dim,
                loss,
            })
        })
        .collect()
}

/// Reads `step{k}/{group}/{domain}` tensors into one batch per step.
pub fn load_batches(
    path: &std::path::Path,
    domain_order: &[String],
    device: &Device,
) -> Result<Vec<Batch>> {
    shimmer_formats::file::open_regular(path).map_err(|e| anyhow::anyhow!("cannot read {e}"))?;
    let tensors = candle_core::safetensors::load(path, device)
        .with_context(|| format!("cannot read batches {}", path.display()))?;
    batches_from_tensors(tensors, domain_order)
        .with_context(|| format!("bad batches file {}", path.display()))
}

/// Groups loose `step{k}/{group}/{domain}` tensors into ordered batches.
pub fn batches_from_tensors(
    tensors: HashMap<String, Tensor>,
    domain_order: &[String],
) -> Result<Vec<Batch>> {
    let mut steps: BTreeMap<usize, HashMap<String, HashMap<String, Tensor>>> = BTreeMap::new();
    for (key, t) in tensors {
        let parts: Vec<&str> = key.split('/').collect();
        let [step, group, domain] = parts[..] else {
            bail!("key `{key}` is not `step<k>/<group>/<domain>`");
        };
        let k: usize = step
            .strip_prefix("step")
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("key `{key}`: `{step}` is not `step<k>`"))?;
        let t = t.to_dtype(candle_core::DType::F32)?;
        steps
            .entry(k)
            .or_default()
            .entry(group.to_string())
            .or_default()
            .insert(domain.to_string(), t);
    }
    let mut out = Vec::with_capacity(steps.len());
    for (i, (k, groups)) in steps.into_iter().enumerate() {
        if i != k {
            bail!("batches skip step {i} (next one is step {k})");
        }
        out.push(order_groups(groups, domain_order).with_context(|| format!("step {k}"))?);
    }
    if out.is_empty() {
        bail!("no batch in the file");
    }
    Ok(out)
}

/// Orders groups by size, then by the model positions of their domains.
fn order_groups(
    groups: HashMap<String, HashMap<String, Tensor>>,
    domain_order: &[String],
) -> Result<Batch> {
    let position = |d: &str| {
        domain_order
            .iter()
            .position(|x| x == d)
            .with_context(|| format!("domain `{d}` is not in the experiment"))
    };
    let mut keyed = Vec::new();
    for (name, mut tensors) in groups {
        let key = GroupKey::parse(&name);
        let mut positions = key
            .domains()
            .iter()
            .map(|d| position(d))
            .collect::<Result<Vec<_>>>()?;
        positions.sort_unstable();
        let mut latents = Latents::new();
        for d in key.domains() {
            let t = tensors
                .remove(d)
                .with_context(|| format!("group `{name}` has no tensor for domain `{d}`"))?;
            latents.insert(d.clone(), t);
        }
        if let Some(extra) = tensors.keys().next() {
            bail!("group `{name}` has a tensor for `{extra}`, which is not in the group");
        }
        keyed.push(((key.len(), positions), key, latents));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(keyed.into_iter().map(|(_, k, l)| (k, l)).collect())
}

/// One output line; metric values are the float32 results as exact doubles.
fn json_line(
    step: usize,
    lr: f64,
    beta1: f64,
    loss: f32,
    metrics: &[(String, f32)],
) -> Result<String> {
    let num = |x: f64| serde_json::to_string(&x);
    let mut s = format!(
        "{{\"step\":{step},\"lr\":{},\"beta1\":{},\"loss\":{}",
        num(lr)?,
        num(beta1)?,
        num(f64::from(loss))?
    );
    for (name, v) in metrics {
        s.push_str(&format!(
            ",{}:{}",
            serde_json::to_string(name)?,
            num(f64::from(*v))?
        ));
    }
    s.push('}');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_ordered_by_size_then_model_order() {
        let z = Tensor::zeros((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let order: Vec<String> = ["p", "q", "r"].map(String::from).to_vec();
        let mut t = HashMap::new();
        for key in [
            "step0/p+q+r/p",
            "step0/p+q+r/q",
            "step0/p+q+r/r",
            "step0/q+r/q",
            "step0/q+r/r",
            "step0/p/p",
            "step0/r/r",
        ] {
            t.insert(key.to_string(), z.clone());
        }
        let b = batches_from_tensors(t, &order).unwrap();
        let names: Vec<String> = b[0].keys().map(ToString::to_string).collect();
        assert_eq!(names, ["p", "r", "q+r", "p+q+r"]);
        let mut bad = HashMap::new();
        bad.insert("step1/p/p".to_string(), z);
        assert!(
            format!("{:#}", batches_from_tensors(bad, &order).unwrap_err()).contains("skip step 0")
        );
    }

    #[test]
    fn json_lines_are_valid_and_ordered() {
        let line = json_line(3, 0.1, 0.9, 1.5, &[("b".into(), 2.0), ("a".into(), 0.25)]).unwrap();
        assert_eq!(
            line,
            r#"{"step":3,"lr":0.1,"beta1":0.9,"loss":1.5,"b":2.0,"a":0.25}"#
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a"], 0.25);
    }
}
