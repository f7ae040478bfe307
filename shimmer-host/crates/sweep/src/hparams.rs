//! The HParams experiment of a sweep: one record at the top of the sweep
//! folder naming the swept keys as TensorBoard's columns and, as metrics,
//! the best monitored value (`best/<monitor>`, each trial's best
//! checkpoint evaluated again) and the test metrics. Each trial records
//! only its own values (a session), so the HParams tab compares what the
//! sweep varied, ranked as `shimmer sweep --summary` ranks it.

use super::manifest::{Manifest, SweepDir};
use anyhow::{Context, Result};
use shimmer_tensorboard::{EventWriter, HParam, HParamColumn};
use std::collections::BTreeSet;

/// Writes (or rewrites) the sweep's HParams experiment in its folder, with
/// the test metrics of the trials that have finished so far.
///
/// # Errors
/// When the sweep folder cannot be written.
pub fn write_experiment(manifest: &Manifest, dir: &SweepDir, monitor: &str) -> Result<()> {
    let hparams: Vec<HParamColumn> = manifest
        .params
        .iter()
        .map(|key| {
            let values: BTreeSet<&str> = manifest
                .trials
                .iter()
                .filter_map(|t| t.values.get(key).map(String::as_str))
                .collect();
            HParamColumn {
                name: key.clone(),
                sample: typed(values.first().copied().unwrap_or("")),
                differs: values.len() > 1,
            }
        })
        .collect();
    let mut tests = BTreeSet::new();
    for trial in &manifest.trials {
        if let Some(run) = dir.run_summary(trial.index) {
            tests.extend(
                run.metrics
                    .keys()
                    .filter(|k| k.starts_with("test/"))
                    .cloned(),
            );
        }
    }
    let mut metrics = vec![format!("best/{monitor}")];
    metrics.extend(tests);
    // Only this function writes event files at the top of a sweep folder.
    let root = dir.root();
    for file in shimmer_tensorboard::event_files(root)? {
        std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    }
    let mut tb = EventWriter::create(root)?;
    tb.hparams_experiment(&hparams, &metrics)?;
    tb.flush()
}

/// A swept value's HParams type, from its YAML text (a number, a boolean,
/// else text), as the trials' sessions record it.
fn typed(yaml: &str) -> HParam {
    match serde_norway::from_str::<serde_json::Value>(yaml) {
        Ok(serde_json::Value::Number(n)) => HParam::Number(n.as_f64().unwrap_or(0.0)),
        Ok(serde_json::Value::Bool(b)) => HParam::Bool(b),
        _ => HParam::Text(yaml.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swept_values_keep_their_type() {
        assert_eq!(typed("0.001"), HParam::Number(0.001));
        assert_eq!(typed("16"), HParam::Number(16.0));
        assert_eq!(typed("true"), HParam::Bool(true));
        assert_eq!(
            typed("random-vectors"),
            HParam::Text("random-vectors".into())
        );
    }
}
