//! The Slurm launcher: one job-array script whose task `i` runs trial `i`
//! (`shimmer sweep --run-trial <sweep-dir> $SLURM_ARRAY_TASK_ID`, which
//! runs `shimmer run` with the trial's overrides from `sweep.json` and
//! records its state), submitted with `sbatch`; states are read back with
//! `squeue` (and `sacct` where accounting is set up).
//!
//! ```text
//! #!/bin/bash
//! #SBATCH --job-name=shimmer-tutorial
//! #SBATCH --array=0-7%4
//! #SBATCH --output=/home/me/runs/tutorial/sweep-2025-01-01_12-00-00/logs/slurm-%A_%a.out
//! #SBATCH --chdir=/home/me/gw
//! #SBATCH --partition=gpu
//! #SBATCH --gpus=1
//! exec '/home/me/bin/shimmer' sweep --run-trial '/home/me/runs/tutorial/sweep-2025-01-01_12-00-00' "$SLURM_ARRAY_TASK_ID"
//! ```

use super::manifest::{Manifest, SweepDir};
use anyhow::{Context, Result, bail};
use shimmer_config::sweep::SlurmConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `0-3,5,7-9`: indices (sorted, distinct) as a Slurm `--array` list.
pub fn array_spec(indices: &[usize]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        let end = sorted[i];
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Quotes `text` for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The job-array script running trials `indices` of the sweep in `dir`
/// with the `shimmer` executable `exe`.
pub fn script(manifest: &Manifest, dir: &SweepDir, exe: &Path, indices: &[usize]) -> String {
    let s: &SlurmConfig = &manifest.launcher.slurm;
    let root = dir.root().display().to_string();
    let mut array = array_spec(indices);
    if let Some(max) = s.max_parallel {
        array.push_str(&format!("%{max}"));
    }
    let job_name = s
        .job_name
        .clone()
        .unwrap_or_else(|| format!("shimmer-{}", manifest.name));
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!(
            "# Sweep of {} ({} trials): array task i runs trial i.",
            manifest.experiment.display(),
            manifest.trials.len()
        ),
        format!("#SBATCH --job-name={job_name}"),
        format!("#SBATCH --array={array}"),
        format!("#SBATCH --output={root}/logs/slurm-%A_%a.out"),
        format!("#SBATCH --chdir={}", manifest.workdir.display()),
    ];
    let options = [
        ("partition", s.partition.clone()),
        ("time", s.time.clone()),
        ("cpus-per-task", s.cpus.map(|c| c.to_string())),
        ("gpus", s.gpus.map(|g| g.to_string())),
        ("mem", s.mem.clone()),
    ];
    for (name, value) in options {
        if let Some(value) = value {
            lines.push(format!("#SBATCH --{name}={value}"));
        }
    }
    for extra in &s.extra {
        let extra = extra.trim();
        let extra = extra.strip_prefix("#SBATCH").unwrap_or(extra).trim();
        lines.push(format!("#SBATCH {extra}"));
    }
    lines.push("set -eu".to_string());
    lines.extend(s.setup.iter().cloned());
    lines.push(format!(
        "exec {} sweep --run-trial {} \"$SLURM_ARRAY_TASK_ID\"",
        quote(&exe.display().to_string()),
        quote(&root)
    ));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Refuses a job script whose `#SBATCH` header (the lines before its first
/// command) holds anything but directives and comments, or a control
/// character: a Slurm setting with a line break, which would run as shell
/// and make `sbatch` ignore every directive after it. The settings are
/// checked when the experiment is loaded (`SlurmConfig::check`); this
/// holds for the ones given on the command line too.
fn check_header(script: &Path, text: &str) -> Result<()> {
    for (n, line) in text.lines().enumerate().skip(1) {
        if line == "set -eu" {
            return Ok(());
        }
        if !line.starts_with('#') || line.chars().any(|c| c.is_control() && c != '\t') {
            bail!(
                "{}:{}: a Slurm setting breaks the job script's #SBATCH header (`{}`): \
                 write each setting on one line in Slurm's syntax; nothing was submitted",
                script.display(),
                n + 1,
                line.escape_debug()
            );
        }
    }
    Ok(())
}

/// Submits `script` with `sbatch --parsable` and returns the job id,
/// after [`check_header`].
pub fn submit(script: &Path) -> Result<String> {
    let text = std::fs::read_to_string(script)
        .with_context(|| format!("cannot read {}", script.display()))?;
    check_header(script, &text)?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "`sbatch` not found: the Slurm launcher needs Slurm's client \
                     commands on PATH (or use `--launcher local`)"
                )
            } else {
                anyhow::Error::new(e).context("cannot run sbatch")
            }
        })?;
    if !out.status.success() {
        bail!(
            "sbatch refused {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim().split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: {stdout:?}");
    }
    Ok(id.to_string())
}

/// Parses `<job>_<task>|<STATE>` lines into states by task index, for
/// tasks of `job_ids`; other lines (steps like `12_3.batch`, ranges) are
/// skipped.
pub fn parse_states(text: &str, job_ids: &[String]) -> BTreeMap<usize, String> {
    let mut states = BTreeMap::new();
    for line in text.lines() {
        let Some((id, state)) = line.trim().split_once('|') else {
            continue;
        };
        let Some((job, task)) = id.split_once('_') else {
            continue;
        };
        if !job_ids.iter().any(|j| j == job) {
            continue;
        }
        if let Ok(task) = task.parse::<usize>() {
            // `CANCELLED by 0` -> `CANCELLED`.
            let state = state.split_whitespace().next().unwrap_or("").to_string();
            states.insert(task, state);
        }
    }
    states
}

/// Task states of the sweep's jobs as `squeue` knows them (queued,
/// running, and recently ended ones); empty if it knows none.
///
/// # Errors
/// If `squeue` cannot be run.
pub fn squeue(job_ids: &[String]) -> Result<BTreeMap<usize, String>> {
    let mut states = BTreeMap::new();
    // One job at a time, oldest first: a trial resubmitted later wins.
    for job in job_ids {
        let out = Command::new("squeue")
            .args(["--noheader", "--array", "--states=all", "--format=%i|%T"])
            .arg(format!("--jobs={job}"))
            .output()
            .context("cannot run squeue")?;
        // squeue fails for jobs it has already forgotten: nothing to report.
        states.extend(parse_states(
            &String::from_utf8_lossy(&out.stdout),
            std::slice::from_ref(job),
        ));
    }
    Ok(states)
}

/// Task states from Slurm's accounting (`sacct`), or `None` where
/// accounting is not set up.
pub fn sacct(job_ids: &[String]) -> Option<BTreeMap<usize, String>> {
    if job_ids.is_empty() {
        return None;
    }
    let mut states = BTreeMap::new();
    for job in job_ids {
        let out = Command::new("sacct")
            .args(["--noheader", "--parsable2", "--format=JobID,State"])
            .arg(format!("--jobs={job}"))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        states.extend(parse_states(
            &String::from_utf8_lossy(&out.stdout),
            std::slice::from_ref(job),
        ));
    }
    Some(states)
}

/// Whether a Slurm state means the task is queued or running.
pub fn is_active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "REQUEUED"
            | "RESIZING"
            | "SUSPENDED"
    )
}

/// The Slurm job ids of a sweep.
pub fn job_ids(manifest: &Manifest) -> Vec<String> {
    manifest
        .slurm_jobs
        .iter()
        .map(|j| j.job_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::Trial;
    use shimmer_config::sweep::LauncherConfig;

    fn manifest(slurm: SlurmConfig, n: usize) -> Manifest {
        Manifest {
            version: 1,
            name: "tutorial".into(),
            experiment: "/exp/gw.yaml".into(),
            workdir: "/work dir".into(),
            overrides: vec![],
            params: vec![],
            trials: (0..n)
                .map(|index| Trial {
                    index,
                    overrides: vec![],
                    values: Default::default(),
                })
                .collect(),
            launcher: LauncherConfig {
                slurm,
                ..Default::default()
            },
            slurm_jobs: vec![],
            config_files: vec![],
        }
    }

    #[test]
    fn array_specs_compress_runs() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[7, 1, 3, 2, 9, 8, 5]), "1-3,5,7-9");
        assert_eq!(array_spec(&[4]), "4");
    }

    #[test]
    fn script_has_array_resources_and_runs_the_trial() {
        let slurm = SlurmConfig {
            partition: Some("gpu".into()),
            time: Some("02:00:00".into()),
            cpus: Some(4),
            gpus: Some(1),
            mem: Some("16G".into()),
            max_parallel: Some(2),
            extra: vec!["--account=lab".into(), "#SBATCH --qos=short".into()],
            setup: vec!["module load cuda".into()],
            ..Default::default()
        };
        let m = manifest(slurm, 4);
        let dir = SweepDir::new("/runs/t/sweep-1", 4);
        let text = script(&m, &dir, Path::new("/bin/it's/shimmer"), &[0, 1, 2, 3]);
        for line in [
            "#!/bin/bash",
            "#SBATCH --job-name=shimmer-tutorial",
            "#SBATCH --array=0-3%2",
            "#SBATCH --output=/runs/t/sweep-1/logs/slurm-%A_%a.out",
            "#SBATCH --chdir=/work dir",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=02:00:00",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --gpus=1",
            "#SBATCH --mem=16G",
            "#SBATCH --account=lab",
            "#SBATCH --qos=short",
            "module load cuda",
            r#"exec '/bin/it'\''s/shimmer' sweep --run-trial '/runs/t/sweep-1' "$SLURM_ARRAY_TASK_ID""#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // All #SBATCH lines come before the first command.
        let first_cmd = text.lines().position(|l| l == "set -eu").unwrap();
        assert!(
            text.lines()
                .skip(first_cmd)
                .all(|l| !l.starts_with("#SBATCH"))
        );
    }

    #[test]
    fn a_setting_with_a_line_break_is_refused_before_sbatch() {
        let dir = tempfile::tempdir().unwrap();
        for slurm in [
            SlurmConfig {
                time: Some("00:10:00\ntouch X".into()),
                ..Default::default()
            },
            SlurmConfig {
                partition: Some("gpu\rx".into()),
                ..Default::default()
            },
        ] {
            let text = script(
                &manifest(slurm, 1),
                &SweepDir::new("/s", 1),
                Path::new("/x"),
                &[0],
            );
            let path = dir.path().join("job.sh");
            std::fs::write(&path, &text).unwrap();
            let err = submit(&path).unwrap_err().to_string();
            assert!(err.contains("nothing was submitted"), "{err}");
        }
        let text = script(
            &manifest(SlurmConfig::default(), 1),
            &SweepDir::new("/s", 1),
            Path::new("/x"),
            &[0],
        );
        assert!(check_header(Path::new("job.sh"), &text).is_ok());
    }

    #[test]
    fn script_without_settings_leaves_cluster_defaults() {
        let m = manifest(SlurmConfig::default(), 3);
        let text = script(&m, &SweepDir::new("/s", 3), Path::new("/shimmer"), &[2, 0]);
        assert!(text.contains("#SBATCH --array=0,2\n"), "{text}");
        assert!(!text.contains("--partition") && !text.contains("--gpus"));
    }

    #[test]
    fn states_parse_tasks_of_our_jobs_only() {
        let text = "12_0|COMPLETED\n12_1|RUNNING\n12_[2-3%2]|PENDING\n12_1.batch|RUNNING\n\
                    13_0|PENDING\n12_4|CANCELLED by 0\n";
        let s = parse_states(text, &["12".to_string()]);
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            [
                (0, "COMPLETED".to_string()),
                (1, "RUNNING".to_string()),
                (4, "CANCELLED".to_string())
            ]
        );
    }
}
