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

/// Loads a resumed run's config, applying `set_plugins` (`DOMAIN=PLUGIN`)
/// when there are any: checks each new plugin against the one recorded,
/// rewrites the run's `config.yaml` and prints what changed. Without
/// changes this is the run's config as is.
pub fn load_config(run_dir: &RunDir, set_plugins: &[String]) -> Result<yaml::Loaded<Experiment>> {
    let file = run_dir.config_file();
    let old = shimmer_config::load(&file, &[])?;
    if set_plugins.is_empty() {
        return Ok(old);
    }
    let changes = set_plugin_changes(&old.config, set_plugins)?;
    let overrides: Vec<String> = changes
        .iter()
        .map(|(domain, _, plugin)| format!("domains.{domain}.plugin={plugin}"))
        .collect();
    let new = shimmer_config::load(&file, &overrides)?;
    let mut notes = Vec::new();
    for change in &changes {
        notes.extend(compare_plugins(&old.config, &new.config, change)?);
    }
    record_changes(run_dir, &changes, &new.resolved_yaml)?;
    for n in notes {
        eprintln!("{n}");
    }
    Ok(new)
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
fn record_changes(run_dir: &RunDir, changes: &[Change], resolved: &str) -> Result<()> {
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
        .filter(|l| l.starts_with(CHANGE_MARK))
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
