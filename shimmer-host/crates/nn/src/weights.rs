//! Weights from whichever file a researcher has: this project's own
//! checkpoints and exports, a state dict shimmer saved as `.safetensors`,
//! and a PyTorch / Lightning checkpoint (`.ckpt`, `.pt`: a zip of a pickle
//! and raw storages, read by [`crate::torch_checkpoint`] without running
//! any of it). Every place that takes a checkpoint reads it through
//! [`read`], and loads it with [`load_strict`], which names every missing,
//! unexpected or misshapen tensor at once, with both shapes.

use crate::params::ParamStore;
use anyhow::{Context, Result, bail};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// What kind of file weights came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsKind {
    /// A `.safetensors` file: this project's checkpoint or export, or a
    /// state dict saved by shimmer (`safetensors.torch.save_file`).
    Safetensors,
    /// A PyTorch zip checkpoint; `lightning` is Lightning's version when it
    /// is a Lightning checkpoint.
    Torch {
        /// `pytorch-lightning_version`, when present.
        lightning: Option<String>,
        /// shimmer's checkpoint migrations that changed it while it was read.
        migrations: Vec<String>,
    },
}

/// Tensors of a weights file, under the names it gives them.
#[derive(Debug)]
pub struct Weights {
    /// Name -> tensor, on the CPU.
    pub tensors: HashMap<String, Tensor>,
    /// A Lightning checkpoint's `hyper_parameters` (as JSON), if any.
    pub hyper_parameters: Option<serde_json::Value>,
    /// What the file is.
    pub kind: WeightsKind,
}

/// Reads `path`, whichever of the kinds of [`WeightsKind`] it is (told by
/// its first bytes, not its name). A file this project wrote is checked
/// against its checksum.
///
/// # Errors
/// An unreadable, corrupt or unknown file, named with the cause.
pub fn read(path: &Path) -> Result<Weights> {
    if crate::torch_checkpoint::is_torch_checkpoint(path)? {
        let ckpt = crate::torch_checkpoint::read(path)?;
        return Ok(Weights {
            tensors: ckpt.tensors.into_iter().collect(),
            hyper_parameters: ckpt.hyper_parameters,
            kind: WeightsKind::Torch {
                lightning: ckpt.lightning_version,
                migrations: ckpt.migrations_applied,
            },
        });
    }
    Ok(Weights {
        tensors: crate::checkpoint::read_tensors(path)?,
        hyper_parameters: None,
        kind: WeightsKind::Safetensors,
    })
}

/// `tensors` under the names this project's models use: a training
/// checkpoint's optimiser and trainer entries dropped, and shimmer's
/// aliases folded into the names they repeat (its loss module holds the
/// GW module as `loss_mod.gw_mod.…` and the domain modules as
/// `loss_mod.domain_mods.…`; a GW's state dict has each tensor twice).
pub fn canonical(tensors: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let mut aliases = Vec::new();
    for (k, t) in tensors {
        if k.starts_with(crate::checkpoint::TRAINER_PREFIX) || k.starts_with("optimizer.") {
            continue;
        }
        let alias = k
            .strip_prefix("loss_mod.")
            .filter(|rest| rest.starts_with("gw_mod.") || rest.starts_with("selection_mod."))
            .map(str::to_string)
            .or_else(|| {
                k.strip_prefix("loss_mod.domain_mods.")
                    .map(|rest| format!("gw_mod.domain_mods.{rest}"))
            });
        match alias {
            Some(name) => aliases.push((name, t.clone())),
            None => {
                out.insert(k.clone(), t.clone());
            }
        }
    }
    for (name, t) in aliases {
        out.entry(name).or_insert(t);
    }
    out
}

/// The weights of domain `domain`'s module in `tensors` (canonical names):
/// those under `gw_mod.domain_mods.<domain>.` when the file is a GW's, else
/// the file's own (a domain module's checkpoint).
pub fn domain_module(tensors: &HashMap<String, Tensor>, domain: &str) -> HashMap<String, Tensor> {
    let prefix = format!("gw_mod.domain_mods.{domain}.");
    if tensors.keys().any(|k| k.starts_with(&prefix)) {
        return under(tensors, &prefix);
    }
    tensors.clone()
}

/// The tensors of `tensors` whose names start with `prefix`, the prefix
/// removed (shimmer names a domain module `gw_mod.domain_mods.<d>.…` in a
/// GW's state dict and `…` in its own).
pub fn under(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_string(), t.clone())))
        .collect()
}

/// Most problems one error lists (the rest are counted).
const MAX_LISTED: usize = 12;

/// Loads `tensors` into every parameter and buffer of `params`: each
/// parameter must be there with its shape, no tensor may be left over, and
/// a buffer (batch-norm statistics) is taken when given. Every problem is
/// named in one error, each with the shape expected and found, as PyTorch's
/// `load_state_dict(strict=True)` does.
///
/// # Errors
/// Missing, unexpected or misshapen tensors of `origin`.
pub fn load_strict(
    params: &ParamStore,
    tensors: &HashMap<String, Tensor>,
    origin: &str,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, var) in params.params() {
        match tensors.get(name) {
            None => problems.push(format!("missing `{name}` {:?}", var.dims())),
            Some(t) if t.dims() != var.dims() => problems.push(format!(
                "`{name}` has shape {:?} in the file, the model's is {:?}",
                t.dims(),
                var.dims()
            )),
            Some(_) => {}
        }
    }
    for (name, var) in params.buffers() {
        if let Some(t) = tensors.get(name)
            && t.elem_count() != var.elem_count()
        {
            problems.push(format!(
                "`{name}` has shape {:?} in the file, the model's is {:?}",
                t.dims(),
                var.dims()
            ));
        }
    }
    let mut unexpected: Vec<&String> = tensors
        .keys()
        .filter(|k| !params.params().contains_key(*k) && !params.buffers().contains_key(*k))
        .collect();
    unexpected.sort();
    problems.extend(
        unexpected
            .iter()
            .map(|k| format!("unexpected `{k}` {:?}", tensors[*k].dims())),
    );
    if !problems.is_empty() {
        let more = problems.len().saturating_sub(MAX_LISTED);
        problems.truncate(MAX_LISTED);
        if more > 0 {
            problems.push(format!("and {more} more"));
        }
        bail!("{origin} does not fit the model: {}", problems.join("; "));
    }
    for (name, var) in params.params().iter().chain(params.buffers()) {
        if let Some(t) = tensors.get(name) {
            let t = t
                .reshape(var.dims())?
                .to_device(var.device())?
                .to_dtype(var.dtype())?;
            var.set(&t)
                .with_context(|| format!("{origin}: cannot set `{name}`"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn store() -> ParamStore {
        let mut s = ParamStore::new(&Device::Cpu, DType::F32);
        s.add_param(
            "a.weight",
            Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        s.add_param(
            "a.bias",
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        s
    }

    #[test]
    fn every_problem_is_named_with_both_shapes() {
        let s = store();
        let t = |shape: &[usize]| Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap();
        let file: HashMap<String, Tensor> = [
            ("a.weight".to_string(), t(&[3, 2])),
            ("b.extra".to_string(), t(&[4])),
        ]
        .into();
        let err = format!("{:#}", load_strict(&s, &file, "f.ckpt").unwrap_err());
        assert!(err.starts_with("f.ckpt does not fit the model"), "{err}");
        assert!(
            err.contains("`a.weight` has shape [3, 2] in the file, the model's is [2, 3]"),
            "{err}"
        );
        assert!(err.contains("missing `a.bias` [2]"), "{err}");
        assert!(err.contains("unexpected `b.extra` [4]"), "{err}");
        // Nothing was loaded.
        assert_eq!(s.params()["a.bias"].to_vec1::<f32>().unwrap(), [0.0, 0.0]);
    }

    #[test]
    fn a_fitting_file_is_loaded_in_any_dtype() {
        let s = store();
        let file: HashMap<String, Tensor> = [
            (
                "a.weight".to_string(),
                Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap(),
            ),
            (
                "a.bias".to_string(),
                Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap(),
            ),
        ]
        .into();
        load_strict(&s, &file, "f").unwrap();
        assert_eq!(s.params()["a.bias"].to_vec1::<f32>().unwrap(), [1.0, 2.0]);
        let gw: HashMap<String, Tensor> = [
            (
                "loss_mod.domain_mods.v.x".to_string(),
                file["a.bias"].clone(),
            ),
            (
                "loss_mod.gw_mod.gw_encoders.v.0.bias".to_string(),
                file["a.bias"].clone(),
            ),
            ("optimizer.state.a".to_string(), file["a.bias"].clone()),
        ]
        .into();
        let names = canonical(&gw);
        let mut keys: Vec<_> = names.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["gw_mod.domain_mods.v.x", "gw_mod.gw_encoders.v.0.bias"]
        );
        assert!(domain_module(&names, "v").contains_key("x"));
    }
}
