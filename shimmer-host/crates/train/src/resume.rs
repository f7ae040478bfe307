//! `shimmer run --resume RUN --set-plugin DOMAIN=PLUGIN`: continue a run
//! with another plugin providing a domain (a fixed build, the same
//! modality from another dataset), recorded in the run's `config.yaml`.
//!
//! The new plugin must provide the domain with the latent size the run was
//! trained with; a changed loss spec is allowed and reported. The run's
//! `config.yaml` is rewritten with the new `plugin:` and keeps, at its top,
//! one comment line per change (`# --set-plugin ...: domains.<d>.plugin:
//! <old> -> <new>`), so the run folder says which plugin produced which
//! part of the training (the TensorBoard log marks the resume step).

use crate::RunDir;
use anyhow::{Context, Result, bail};
use shimmer_config::Experiment;
use shimmer_config::yaml;
use shimmer_data::{ItemSource, open_sources};
use std::path::Path;

/// Marks the comment lines that record plugin changes in `config.yaml`.
pub const CHANGE_MARK: &str = "# --set-plugin";

/// Splits `DOMAIN=PLUGIN`.
pub fn parse_set_plugin(spec: &str) -> Result<(String, String)> {
    match spec.split_once('=') {
        Some((d, p)) if !d.trim().is_empty() && !p.trim().is_empty() => {
            Ok((d.trim().to_string(), p.trim().to_string()))
        }
        _ => bail!("--set-plugin expects DOMAIN=PLUGIN (a name or a library path), got `{spec}`"),
    }
}

/// A `--set-plugin` change: the domain, its plugin before and after.
type Change = (String, String, String);

/// Marks the comment lines that record settings changed on resume.
pub const SETTING_MARK: &str = "# --resume";

/// Settings a resumed run may change, as Lightning allows: how long it
/// trains and how often it validates, logs, checkpoints and draws images.
/// Anything else (model, data, optimiser) would make the run's checkpoints
/// describe another experiment: start a new run for that.
pub const RESUMABLE_KEYS: &[&str] = &[
    "training.max_steps",
    "training.max_epochs",
    "training.log_every_n_steps",
    "training.val_every_n_steps",
    "training.val_every_n_epochs",
    "training.checkpoint_every_n_steps",
    "training.checkpoints.every_n_steps",
    "training.checkpoints.keep_every_n_steps",
    "training.early_stopping.patience",
    "training.images",
];

/// Loads a resumed run's config, applying `set_plugins` (`DOMAIN=PLUGIN`)
/// and `overrides` of [`RESUMABLE_KEYS`] when there are any: checks each
/// new plugin against the one recorded, rewrites the run's `config.yaml`
/// with one comment line per change and prints what changed. Without
/// changes this is the run's config as is.
///
/// # Errors
/// An override of another key, a length change under a learning-rate
/// schedule sized by the length, a bad value (at its key), or a plugin
/// that does not fit.
pub fn load_config(
    run_dir: &RunDir,
    set_plugins: &[String],
    overrides: &[String],
) -> Result<yaml::Loaded<Experiment>> {
    let file = run_dir.config_file();
    let old = shimmer_config::load(&file, &[])?;
    if set_plugins.is_empty() && overrides.is_empty() {
        return Ok(old);
    }
    let changes = set_plugin_changes(&old.config, set_plugins)?;
    let mut all: Vec<String> = changes
        .iter()
        .map(|(domain, _, plugin)| format!("domains.{domain}.plugin={plugin}"))
        .collect();
    let keys = resumable_keys(overrides)?;
    all.extend(overrides.iter().cloned());
    let new = shimmer_config::load(&file, &all)?;
    let settings = setting_changes(&old.config, &new.config, &keys)?;
    let mut notes = Vec::new();
    for change in &changes {
        notes.extend(compare_plugins(&old.config, &new.config, change)?);
    }
    record_changes(run_dir, &changes, &settings, &new.resolved_yaml)?;
    for n in notes {
        eprintln!("{n}");
    }
    Ok(new)
}

/// The key of each `key=value` override, refusing keys a resume may not
/// change.
fn resumable_keys(overrides: &[String]) -> Result<Vec<String>> {
    overrides
        .iter()
        .map(|o| {
            let key = o.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
            if RESUMABLE_KEYS.contains(&key) {
                Ok(key.to_string())
            } else if key.is_empty() {
                bail!("`{o}` is not a `key=value` setting (with --resume, give no experiment file)")
            } else {
                bail!(
                    "`{key}` cannot change on resume: a resumed run keeps its model, data and \
                     optimiser. It may change {} (start a new run for anything else)",
                    RESUMABLE_KEYS.join(", ")
                )
            }
        })
        .collect()
}

/// A setting change: the key, its value before and after (as JSON text).
type SettingChange = (String, String, String);

/// What each changed key was and becomes; refuses a length change when the
/// learning-rate schedule was sized by the training length.
fn setting_changes(
    old: &Experiment,
    new: &Experiment,
    keys: &[String],
) -> Result<Vec<SettingChange>> {
    let before = serde_json::to_value(&old.training)?;
    let after = serde_json::to_value(&new.training)?;
    let value_of = |v: &serde_json::Value, key: &str| -> String {
        let path: String = key
            .trim_start_matches("training")
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|p| format!("/{p}"))
            .collect();
        v.pointer(&path)
            .map_or("null".to_string(), ToString::to_string)
    };
    let mut out = Vec::new();
    for key in keys {
        let (b, a) = (value_of(&before, key), value_of(&after, key));
        if b == a {
            continue;
        }
        let length = key == "training.max_steps" || key == "training.max_epochs";
        if length && new.optim.scheduler.total_steps_from_length() {
            bail!(
                "`{key}` cannot change on resume: this run's learning-rate schedule spans its \
                 training length (max_steps {}, max_epochs {}), so a new length would reshape \
                 the schedule mid-run (give `optim.scheduler.total_steps` to runs you may extend)",
                value_of(&before, "training.max_steps"),
                value_of(&before, "training.max_epochs"),
            );
        }
        out.push((key.clone(), b, a));
    }
    Ok(out)
}

/// Parses the `--set-plugin` specs against the run's domains; a plugin
/// file is recorded by its absolute path (later resumes may run from
/// another folder).
fn set_plugin_changes(old: &Experiment, set_plugins: &[String]) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for spec in set_plugins {
        let (domain, plugin) = parse_set_plugin(spec)?;
        let Some(d) = old.domains.get(&domain) else {
            let names: Vec<String> = old.domains.keys().cloned().collect();
            bail!(
                "--set-plugin {domain}=...: the run has no domain `{domain}` (domains: {})",
                names.join(", ")
            );
        };
        let plugin = match Path::new(&plugin).canonicalize() {
            Ok(p) if p.is_file() => p.display().to_string(),
            _ => plugin,
        };
        let before = d.plugin.clone().unwrap_or_else(|| "(none)".to_string());
        changes.push((domain, before, plugin));
    }
    Ok(changes)
}

/// Opens a changed domain's new plugin (it must work and give latents of
/// the size the run was trained with) and, where it still opens, the old
/// one; returns notes on what else differs.
fn compare_plugins(old: &Experiment, new: &Experiment, change: &Change) -> Result<Vec<String>> {
    let (domain, before, after) = change;
    let open = |exp: &Experiment| -> Result<std::sync::Arc<dyn ItemSource>> {
        let mut only = exp.clone();
        only.domains.retain(|name, _| name == domain);
        let sources = open_sources(&only)?;
        sources
            .get(domain)
            .cloned()
            .with_context(|| format!("domain `{domain}` has no plugin"))
    };
    let new_src = open(new)
        .with_context(|| format!("--set-plugin {domain}={after}: cannot use the new plugin"))?;
    let old_src = match open(old) {
        Ok(s) => s,
        Err(e) => {
            return Ok(vec![format!(
                "note: domain `{domain}`: the previous plugin cannot be opened to compare \
                 ({e:#}); the checkpoint's shapes are checked when it is loaded"
            )]);
        }
    };
    if old_src.latent_dim() != new_src.latent_dim() {
        bail!(
            "--set-plugin {domain}={after}: the new plugin's latents have {} values, \
             the run was trained with {} ({before}); a resumed run keeps its model",
            new_src.latent_dim(),
            old_src.latent_dim()
        );
    }
    Ok(if old_src.loss_spec() != new_src.loss_spec() {
        vec![format!(
            "note: domain `{domain}`: the new plugin's loss spec differs from the old one's"
        )]
    } else {
        Vec::new()
    })
}

/// Rewrites the run's `config.yaml` as `resolved`, headed by the change
/// lines it had and one per new change.
fn record_changes(
    run_dir: &RunDir,
    changes: &[Change],
    settings: &[SettingChange],
    resolved: &str,
) -> Result<()> {
    let file = run_dir.config_file();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut out: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter(|l| l.starts_with(CHANGE_MARK) || l.starts_with(SETTING_MARK))
        .map(|l| format!("{l}\n"))
        .collect();
    for (domain, before, after) in changes {
        out.push_str(&format!(
            "{CHANGE_MARK} on resume (unix time {stamp}): domains.{domain}.plugin: {before} -> {after}\n"
        ));
        eprintln!(
            "domain `{domain}`: plugin {before} -> {after} (recorded in {})",
            file.display()
        );
    }
    for (key, before, after) in settings {
        out.push_str(&format!(
            "{SETTING_MARK} (unix time {stamp}): {key}: {before} -> {after}\n"
        ));
        eprintln!(
            "{key}: {before} -> {after} (recorded in {})",
            file.display()
        );
    }
    out.push_str(resolved);
    run_dir.write_config(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_plugin_specs_are_parsed_or_explained() {
        assert_eq!(
            parse_set_plugin("v = ./libx.so").unwrap(),
            ("v".to_string(), "./libx.so".to_string())
        );
        for bad in ["v", "=x", "v=", ""] {
            let e = parse_set_plugin(bad).unwrap_err().to_string();
            assert!(e.contains("DOMAIN=PLUGIN"), "{e}");
        }
    }
}
