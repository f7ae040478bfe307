//! Weights from elsewhere where a run's weights are expected (`test`,
//! `predict`, `export --checkpoint`, a warm start): any file
//! [`shimmer_nn::weights::read`] reads, loaded strictly into the run's
//! model, with a note for each of a Lightning checkpoint's
//! `hyper_parameters` that differs from the experiment.

use crate::task::Task;
use anyhow::Result;
use shimmer_config::Experiment;
use shimmer_nn::weights::{self, WeightsKind};
use std::path::Path;

/// Loads the weights file `path` into `task`, printing a note per
/// migration applied and per hyperparameter that differs from `exp`.
///
/// # Errors
/// An unreadable file, or weights that do not fit the model (each named).
pub fn load_into(task: &mut dyn Task, path: &Path, exp: &Experiment) -> Result<()> {
    let read = weights::read(path)?;
    if let WeightsKind::Torch { migrations, .. } = &read.kind
        && !migrations.is_empty()
    {
        eprintln!(
            "note: {}: applied shimmer's checkpoint migrations {}",
            path.display(),
            migrations.join(", ")
        );
    }
    if let Some(hp) = &read.hyper_parameters {
        for note in hparam_notes(hp, exp) {
            eprintln!("note: {}: {note}", path.display());
        }
    }
    task.load_weights(
        &weights::canonical(&read.tensors),
        &path.display().to_string(),
    )
}

/// Loads the GW weights of `workspace.init_from`, when set, into a new
/// run's model (and `validate`'s): its GW module strictly; a domain module the file
/// holds too is left out, the experiment's own (`domains.<d>.model`) are
/// used, and said so.
pub fn warm_start(
    task: &mut dyn Task,
    exp: &Experiment,
    document: &shimmer_config::Document,
) -> Result<()> {
    let Some(file) = exp.workspace.as_ref().and_then(|w| w.init_from.as_ref()) else {
        return Ok(());
    };
    let at_key = |e: anyhow::Error| document.invalid_at("workspace.init_from", format!("{e:#}"));
    let read = weights::read(file).map_err(at_key)?;
    if let Some(hp) = &read.hyper_parameters {
        for note in hparam_notes(hp, exp) {
            eprintln!("note: {}: {note}", file.display());
        }
    }
    let all = weights::canonical(&read.tensors);
    let domains: std::collections::BTreeSet<&str> = all
        .keys()
        .filter_map(|k| k.strip_prefix("gw_mod.domain_mods.")?.split('.').next())
        .collect();
    if !domains.is_empty() {
        eprintln!(
            "note: {} also holds domain modules ({}); the run uses the experiment's own",
            file.display(),
            domains.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let gw: std::collections::HashMap<String, candle_core::Tensor> = all
        .into_iter()
        .filter(|(k, _)| !k.starts_with("gw_mod.domain_mods."))
        .collect();
    task.load_weights(&gw, &file.display().to_string())
        .map_err(at_key)?;
    eprintln!("GW weights from {} (workspace.init_from)", file.display());
    Ok(())
}

/// Each of shimmer's `hyper_parameters` (a Lightning checkpoint's) that
/// differs from the experiment's setting: workspace size, loss
/// coefficients, learning rate, weight decay.
pub fn hparam_notes(hp: &serde_json::Value, exp: &Experiment) -> Vec<String> {
    let mut notes = Vec::new();
    let mut differ = |what: &str, theirs: Option<f64>, ours: f64| {
        if let Some(theirs) = theirs
            && (theirs - ours).abs() > 1e-12 * ours.abs().max(1.0)
        {
            notes.push(format!(
                "its hyper_parameters say {what} {theirs}, the experiment {ours}"
            ));
        }
    };
    if let Some(ws) = &exp.workspace {
        differ("workspace_dim", hp["workspace_dim"].as_f64(), ws.dim as f64);
    }
    differ("optim_lr", hp["optim_lr"].as_f64(), exp.optim.lr);
    differ(
        "optim_weight_decay",
        hp["optim_weight_decay"].as_f64(),
        exp.optim.weight_decay,
    );
    if let Some(coefs) = hp["loss_coefs"].as_object() {
        for (name, theirs) in coefs {
            let ours = exp
                .loss
                .coefs
                .iter()
                .find(|(family, _)| family.name() == name)
                .map_or(0.0, |(_, c)| *c);
            differ(&format!("loss_coefs.{name}"), theirs.as_f64(), ours);
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_hyperparameters_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.yaml");
        std::fs::write(
            &file,
            "name: t\ndomains:\n  a: { plugin: p }\n  b: { plugin: p }\n\
             workspace: { flavour: two_domains, dim: 16 }\n\
             loss: { coefs: { translations: 1.0, demi_cycles: 1.0, cycles: 1.0, contrastives: 0.01 } }\n\
             optim: { lr: 1.0e-3 }\n\
             data: { batch_size: 4, groups: [{ domains: [a, b] }] }\n\
             training: { max_steps: 1 }\n",
        )
        .unwrap();
        let exp = shimmer_config::load(&file, &[]).unwrap().config;
        let same = serde_json::json!({
            "workspace_dim": 16, "optim_lr": 1e-3,
            "loss_coefs": {"translations": 1.0, "demi_cycles": 1.0, "cycles": 1.0, "contrastives": 0.01},
            "fusion_activation_fn": {"__global__": "torch.tanh"}
        });
        assert!(
            hparam_notes(&same, &exp).is_empty(),
            "{:?}",
            hparam_notes(&same, &exp)
        );
        let other = serde_json::json!({
            "workspace_dim": 12, "optim_lr": 1e-3,
            "loss_coefs": {"translations": 1.0, "contrastives": 0.1}
        });
        let notes = hparam_notes(&other, &exp);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("workspace_dim 12, the experiment 16"),
            "{notes:?}"
        );
        assert!(
            notes[1].contains("loss_coefs.contrastives 0.1, the experiment 0.01"),
            "{notes:?}"
        );
    }
}
