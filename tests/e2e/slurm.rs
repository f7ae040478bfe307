//! `shimmer sweep --launcher slurm` on a real Slurm: a 4-trial tutorial
//! sweep submitted as one job array, followed with `--status` until every
//! trial finished (bounded), then its four run folders checked.
//!
//! Needs a running cluster, e.g. the one-node cluster of
//! `scripts/slurm-local-cluster` (as `.ci/run` starts it). Without `sbatch`
//! or a cluster that answers, the test prints why and passes, unless
//! `SHIMMER_REQUIRE_SLURM=1` (set by `.ci/run`), which turns that into a
//! failure.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bound on the whole array, queueing included (about 3 s measured here).
const TIMEOUT: Duration = Duration::from_secs(180);

/// Why Slurm cannot be used here, if it cannot.
fn slurm_unavailable() -> Option<String> {
    match Command::new("sbatch").arg("--version").output() {
        Err(e) => return Some(format!("`sbatch` cannot run ({e}): Slurm is not installed")),
        Ok(o) if !o.status.success() => return Some("`sbatch --version` fails".to_string()),
        Ok(_) => {}
    }
    let nodes = Command::new("sinfo")
        .args(["--noheader", "--Node", "--format=%T"])
        .output();
    match nodes {
        Ok(o) if o.status.success() => {
            let states = String::from_utf8_lossy(&o.stdout);
            let usable = states.lines().any(|s| {
                ["idle", "mixed", "allocated"]
                    .iter()
                    .any(|u| s.starts_with(u))
            });
            if usable {
                None
            } else {
                Some(format!(
                    "no usable Slurm node (states: {:?}); start one with scripts/slurm-local-cluster",
                    states.trim()
                ))
            }
        }
        Ok(o) => Some(format!(
            "the Slurm cluster is not up (sinfo: {}); start one with scripts/slurm-local-cluster",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`sinfo` cannot run: {e}")),
    }
}

fn status(dir: &Path) -> String {
    let out = common::shimmer()
        .arg("sweep")
        .arg("--status")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn logs(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
        for e in entries.flatten() {
            let body = std::fs::read_to_string(e.path()).unwrap_or_default();
            text.push_str(&format!("--- {}\n{body}\n", e.path().display()));
        }
    }
    text
}

#[test]
fn tutorial_sweep_runs_as_a_slurm_job_array() {
    common::build_all();
    if let Some(reason) = slurm_unavailable() {
        assert!(
            std::env::var_os("SHIMMER_REQUIRE_SLURM").is_none_or(|v| v != "1"),
            "SHIMMER_REQUIRE_SLURM=1 but {reason}"
        );
        eprintln!("skipping the Slurm sweep test: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sweep");
    common::pretrain_tutorial(tmp.path());
    let start = Instant::now();
    let out = common::shimmer()
        .current_dir(tmp.path())
        .args(["sweep"])
        .arg(common::workspace_root().join("experiments/tutorial/gw.yaml"))
        .args([
            "sweep.grid.seed=[1, 2, 3, 4]",
            "--launcher=slurm",
            "--max-parallel=4",
            "--time=00:10:00",
            "--sweep-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "submission failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let script = std::fs::read_to_string(dir.join("sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-3%4\n"), "{script}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap();
    let job = manifest["slurm_jobs"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();

    let last = loop {
        let last = status(&dir);
        if last.contains("4 trials: 4 finished") {
            break last;
        }
        if last.contains("failed") || last.contains("lost") || start.elapsed() > TIMEOUT {
            let _ = Command::new("scancel").arg(&job).status();
            panic!(
                "the Slurm sweep did not finish ({:.0} s):\n{last}\n{}",
                start.elapsed().as_secs_f64(),
                logs(&dir)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "Slurm job array {job}: 4 trials finished in {:.1} s\n{last}",
        start.elapsed().as_secs_f64()
    );
    assert!(
        last.contains("COMPLETED") || last.contains("finished"),
        "{last}"
    );

    for i in 0..4 {
        let run = dir.join(format!("trials/{i:03}"));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["status"], "finished", "{}", run.display());
        assert!(summary["best_value"].as_f64().is_some());
        assert!(run.join("checkpoints/best.safetensors").is_file());
        assert!(run.join("checkpoints/last.safetensors").is_file());
        let events = std::fs::read_dir(&run)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("events.out.tfevents.")
            })
            .count();
        assert_eq!(events, 1, "{}", run.display());
        let config = std::fs::read_to_string(run.join("config.yaml")).unwrap();
        assert!(config.contains(&format!("seed: {}", i + 1)), "{config}");
        // Each trial ran as its own array task.
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("state/{i:03}.json"))).unwrap())
                .unwrap();
        assert_eq!(record["slurm_task"], format!("{job}_{i}"));
        assert!(dir.join(format!("logs/slurm-{job}_{i}.out")).is_file());
    }
    let summary = common::shimmer()
        .arg("sweep")
        .arg("--summary")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(summary.status.success());
    assert!(String::from_utf8_lossy(&summary.stdout).contains("4 finished"));
}

/// A stand-in for `shimmer run` (see `SHIMMER_SWEEP_RUNNER`): a finished
/// run folder with `val/loss = seed / 10`, or an error for
/// `seed=$FAKE_FAIL_SEED`.
const FAKE_RUNNER: &str = r#"#!/bin/bash
set -eu
dir= seed=0
while [ $# -gt 0 ]; do
  case "$1" in --run-dir) dir=$2; shift ;; seed=*) seed=${1#seed=} ;; esac
  shift
done
mkdir -p "$dir/checkpoints"
echo "seed: $seed" > "$dir/config.yaml"
if [ "$seed" = "${FAKE_FAIL_SEED:-}" ]; then echo "error: seed $seed is cursed" >&2; exit 2; fi
touch "$dir/events.out.tfevents.fake" "$dir/checkpoints/best.safetensors" "$dir/checkpoints/last.safetensors"
echo '{"status": "finished", "monitor": "val/loss", "mode": "min", "best_value": 0.'$seed', "steps": 1}' > "$dir/summary.json"
"#;

fn wait_for(dir: &Path, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let last = status(dir);
        if done(&last) {
            return last;
        }
        if last.contains("lost") || start.elapsed() > TIMEOUT {
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).unwrap()).unwrap();
            for job in manifest["slurm_jobs"].as_array().into_iter().flatten() {
                let _ = Command::new("scancel")
                    .arg(job["job_id"].as_str().unwrap_or_default())
                    .status();
            }
            panic!("timed out waiting for {what}:\n{last}\n{}", logs(dir));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn resume_resubmits_only_the_failed_trial() {
    common::build_all();
    if let Some(reason) = slurm_unavailable() {
        eprintln!("skipping the Slurm resume test: {reason}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sweep");
    let runner = tmp.path().join("fake-run");
    std::fs::write(&runner, FAKE_RUNNER).unwrap();
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sweep = |args: &[&str], fail: Option<&str>| {
        let mut cmd = common::shimmer();
        cmd.current_dir(tmp.path())
            .arg("sweep")
            .args(args)
            .env("SHIMMER_SWEEP_RUNNER", &runner);
        if let Some(seed) = fail {
            cmd.env("FAKE_FAIL_SEED", seed);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let tutorial = common::workspace_root().join("experiments/tutorial/gw.yaml");
    sweep(
        &[
            tutorial.to_str().unwrap(),
            "sweep.grid.seed=[1, 2, 3]",
            "--launcher=slurm",
            "--sweep-dir",
            dir.to_str().unwrap(),
        ],
        Some("2"),
    );
    let first = wait_for(&dir, "2 finished, 1 failed", |s| {
        s.contains("3 trials: 1 failed, 2 finished")
    });
    assert!(first.contains("001    failed"), "{first}");
    assert!(first.contains("seed 2 is cursed"), "{first}");

    sweep(&["--resume", dir.to_str().unwrap()], None);
    let second = std::fs::read_to_string(dir.join("sweep.2.sbatch")).unwrap();
    assert!(second.contains("#SBATCH --array=1\n"), "{second}");
    wait_for(&dir, "3 finished", |s| s.contains("3 trials: 3 finished"));
    assert!(dir.join("retired/001.1/config.yaml").is_file());
}
