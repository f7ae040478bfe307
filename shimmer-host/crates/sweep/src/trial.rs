//! Starting one trial as a child `shimmer run` and reading how it ended;
//! shared by the local launcher and the Slurm array tasks.

use super::manifest::{Manifest, SweepDir, TrialRecord, TrialState};
use anyhow::{Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// Testing hook: a program run instead of this `shimmer` executable for
/// every trial, with the same arguments (`run <experiment> <overrides...>
/// --run-dir <dir>`, or `run --resume <dir>`). The sweep tests use a small
/// script here; users never need it.
pub const RUNNER_ENV: &str = "SHIMMER_SWEEP_RUNNER";

/// The program that runs a trial: [`RUNNER_ENV`] if set, else this
/// executable.
pub fn runner() -> Result<PathBuf> {
    match std::env::var_os(RUNNER_ENV) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => std::env::current_exe().context("cannot find the path of this shimmer executable"),
    }
}

/// The arguments of `shimmer run` for trial `index`: its config recorded
/// when the sweep started (for older sweep folders: the experiment and the
/// sweep's overrides, but those of the `sweep` section itself), the
/// trial's overrides and `--run-dir`; or, to continue an interrupted
/// attempt, only `--resume` (a run keeps its own config).
pub fn run_args(manifest: &Manifest, dir: &SweepDir, index: usize, resume: bool) -> Vec<String> {
    let run_dir = dir.run_dir(index).display().to_string();
    if resume {
        return vec!["run".to_string(), "--resume".to_string(), run_dir];
    }
    let recorded = dir.config_file(index);
    let mut args = vec!["run".to_string()];
    if recorded.is_file() {
        // The config recorded at the start holds the sweep's overrides; the
        // trial's own values are given again, for the log and `ps`.
        args.push(recorded.display().to_string());
    } else {
        // A sweep folder from before trial configs were recorded.
        args.push(manifest.experiment.display().to_string());
        let shapes_sweep = |o: &&String| {
            let key = o.split('=').next().unwrap_or("").trim();
            key == "sweep" || key.starts_with("sweep.")
        };
        args.extend(
            manifest
                .overrides
                .iter()
                .filter(|o| !shapes_sweep(o))
                .cloned(),
        );
    }
    if let Some(trial) = manifest.trials.get(index) {
        args.extend(trial.overrides.iter().cloned());
    }
    args.push("--run-dir".to_string());
    args.push(run_dir);
    args
}

/// Readies trial `index`'s run folder for a new attempt: an interrupted
/// run with a last checkpoint is resumed (returns true); any other earlier
/// attempt is moved to `retired/` so nothing is overwritten.
fn prepare(dir: &SweepDir, index: usize, record: &TrialRecord) -> Result<bool> {
    let run_dir = dir.run_dir(index);
    let non_empty = std::fs::read_dir(&run_dir).is_ok_and(|mut d| d.next().is_some());
    if !non_empty {
        return Ok(false);
    }
    let resumable = matches!(record.state, TrialState::Interrupted | TrialState::Running)
        && run_dir.join("checkpoints/last.safetensors").is_file();
    if resumable {
        return Ok(true);
    }
    let mut attempt = record.attempts.max(1);
    let mut retired = dir.retired_dir(index, attempt);
    while retired.exists() {
        attempt += 1;
        retired = dir.retired_dir(index, attempt);
    }
    if let Some(parent) = retired.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::rename(&run_dir, &retired).with_context(|| {
        format!(
            "cannot move the earlier attempt {} to {}",
            run_dir.display(),
            retired.display()
        )
    })?;
    Ok(false)
}

/// Starts trial `index` as a child process in its own process group (so a
/// terminal's Ctrl-C reaches only the launcher, which then stops it), its
/// output appended to `logs/<NNN>.log`; marks it running. On Linux the
/// trial also gets SIGTERM when the launcher dies, even from SIGKILL (it
/// then stops at a step boundary, and `--resume` continues it).
/// `threads` sets the trial's CPU threads (`RAYON_NUM_THREADS`).
pub fn spawn(
    manifest: &Manifest,
    dir: &SweepDir,
    index: usize,
    threads: Option<usize>,
) -> Result<(Child, TrialRecord)> {
    let mut record = dir.record(index)?;
    let resume = prepare(dir, index, &record)?;
    let args = run_args(manifest, dir, index, resume);
    let program = runner()?;
    let log_path = dir.log_file(index);
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open trial log {}", log_path.display()))?;
    let with_threads = threads.map_or(String::new(), |n| format!("RAYON_NUM_THREADS={n} "));
    writeln!(
        log,
        "== attempt {}: {with_threads}{} {}",
        record.attempts + 1,
        program.display(),
        args.join(" ")
    )
    .with_context(|| format!("cannot write {}", log_path.display()))?;
    let err_log = log
        .try_clone()
        .with_context(|| format!("cannot open trial log {}", log_path.display()))?;
    let mut command = Command::new(&program);
    command
        .args(&args)
        .current_dir(&manifest.workdir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0);
    if let Some(n) = threads {
        command.env("RAYON_NUM_THREADS", n.to_string());
    }
    shimmer_sys::process::end_with_parent(&mut command);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start trial {index} with {}", program.display()))?;
    record.state = TrialState::Running;
    record.attempts += 1;
    record.error = None;
    record.exit_code = None;
    record.wall_time_s = None;
    dir.save_record(index, &record)?;
    Ok((child, record))
}

/// Records how trial `index` ended.
pub fn finish(
    dir: &SweepDir,
    index: usize,
    record: &mut TrialRecord,
    status: ExitStatus,
    wall_time_s: f64,
) -> Result<()> {
    record.exit_code = status.code();
    record.wall_time_s = Some(wall_time_s);
    if status.success() {
        record.state = TrialState::Finished;
        record.error = None;
    } else {
        record.state = TrialState::Failed;
        let summary_error = dir
            .run_summary(index)
            .filter(|s| s.status == shimmer_train::RunStatus::Failed)
            .and_then(|s| s.error);
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "ended abnormally".to_string(),
        };
        let error = summary_error
            .or_else(|| last_error(&dir.log_file(index)))
            .map(|e| format!("{e} ({how})"))
            .unwrap_or(how);
        record.error = Some(error);
    }
    dir.save_record(index, record)
}

/// Marks trial `index` interrupted (stopped by a signal; resumable).
pub fn interrupt(dir: &SweepDir, index: usize, record: &mut TrialRecord) -> Result<()> {
    record.state = TrialState::Interrupted;
    record.error = Some("interrupted".to_string());
    dir.save_record(index, record)
}

/// The last `error: ...` paragraph of a log (the form `shimmer` prints its
/// errors in), else its last non-empty line, from the last attempt only.
fn last_error(log: &Path) -> Option<String> {
    const TAIL: u64 = 16 * 1024;
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let attempt = text.rsplit("\n== attempt ").next().unwrap_or(&text);
    let lines: Vec<&str> = attempt.lines().skip(1).collect();
    let found = lines
        .iter()
        .rposition(|l| l.starts_with("error: "))
        .map(|at| {
            lines[at..]
                .iter()
                .take_while(|l| !l.trim().is_empty())
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string()
        })
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })?;
    Some(found.chars().take(2000).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_takes_the_last_attempts_error_paragraph() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("000.log");
        std::fs::write(
            &log,
            "== attempt 1: x\nerror: old\n== attempt 2: x\nstep 1\nerror: bad value\n  at a.yaml:3\n\ntrailing\n",
        )
        .unwrap();
        assert_eq!(last_error(&log).unwrap(), "bad value at a.yaml:3");
        std::fs::write(&log, "== attempt 1: x\nstep 1\npanicked here\n").unwrap();
        assert_eq!(last_error(&log).unwrap(), "panicked here");
    }
}
