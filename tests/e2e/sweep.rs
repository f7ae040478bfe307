//! `shimmer sweep` end to end with the local launcher: the tutorial swept
//! for real, a failing trial among good ones, Ctrl-C and `--resume`, and
//! bad sweep sections.
//!
//! The interruption test uses a stand-in for `shimmer run` (a shell script
//! named by `SHIMMER_SWEEP_RUNNER`, the launcher's testing hook) so that a
//! trial is reliably mid-run when the sweep is interrupted.

use crate::common;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tutorial() -> PathBuf {
    common::workspace_root().join("experiments/tutorial/gw.yaml")
}

fn sweep(cwd: &Path) -> Command {
    let mut cmd = common::shimmer();
    cmd.current_dir(cwd).arg("sweep");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn state(dir: &Path, trial: &str) -> String {
    let path = dir.join("state").join(format!("{trial}.json"));
    if !path.exists() {
        return "pending".to_string();
    }
    json(&path)["state"].as_str().unwrap().to_string()
}

/// A finished run folder: resolved config, event file, both checkpoints.
fn assert_finished_run(run: &Path) {
    assert!(run.join("config.yaml").is_file(), "{}", run.display());
    assert!(run.join("checkpoints/best.safetensors").is_file());
    assert!(run.join("checkpoints/last.safetensors").is_file());
    let events = std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .count();
    assert_eq!(events, 1, "one event file in {}", run.display());
    assert_eq!(json(&run.join("summary.json"))["status"], "finished");
}

#[test]
fn tutorial_sweep_runs_every_trial_and_ranks_them() {
    let tmp = tempfile::tempdir().unwrap();
    common::pretrain_tutorial(tmp.path());
    let dir = tmp.path().join("sw");
    let out = sweep(tmp.path())
        .arg(tutorial())
        .args([
            "training.max_epochs=1",
            "sweep.grid.optim.scheduler.max_lr=[1.0e-3, 1.0e-2]",
            "sweep.random.workspace.encoders.hidden={int: [16, 64]}",
            "sweep.samples=2",
            "sweep.seed=3",
            "--jobs",
            "2",
            "--sweep-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let manifest = json(&dir.join("sweep.json"));
    let trials = manifest["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4, "2 grid points x 2 samples");
    assert_eq!(trials[0]["overrides"][0], "optim.scheduler.max_lr=0.001");
    assert_eq!(trials[3]["overrides"][0], "optim.scheduler.max_lr=0.01");
    for (i, t) in trials.iter().enumerate() {
        let run = dir.join(format!("trials/{i:03}"));
        assert_finished_run(&run);
        // Command-line overrides reach every trial, then its own values.
        let summary = json(&run.join("summary.json"));
        assert_eq!(summary["steps"], 8, "one epoch of 8 batches");
        let config = std::fs::read_to_string(run.join("config.yaml")).unwrap();
        let hidden = t["values"]["workspace.encoders.hidden"].as_str().unwrap();
        assert!(config.contains(&format!("hidden: {hidden}")), "{config}");
        let h: u32 = hidden.parse().unwrap();
        assert!((16..=64).contains(&h));
        assert_eq!(state(&dir, &format!("{i:03}")), "finished");
        // Two trials at a time share the cores.
        let log = std::fs::read_to_string(dir.join(format!("logs/{i:03}.log"))).unwrap();
        let cores = std::thread::available_parallelism().unwrap().get();
        let threads = format!("RAYON_NUM_THREADS={} ", (cores / 2).max(1));
        let user_set = std::env::var_os("RAYON_NUM_THREADS").is_some()
            || std::env::var_os("CANDLE_NUM_THREADS").is_some();
        assert_eq!(log.contains(&threads), !user_set, "{log}");
        if !user_set {
            let described = format!("{} thread(s)", (cores / 2).max(1));
            assert!(log.contains(&described), "{log}");
        }
    }

    assert_hparams_tab_shows_the_sweep(&dir, trials);

    // The table (printed at the end, and by --summary) and its CSV rank
    // the trials by val/loss, lowest first.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ranked by val/loss (min)"), "{stdout}");
    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert!(
        lines[0].starts_with("rank,trial,state,val/loss (min)"),
        "{csv}"
    );
    assert!(lines[0].ends_with("optim.scheduler.max_lr,workspace.encoders.hidden,error"));
    let values: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{csv}");
    let ranks: Vec<&str> = lines[1..].iter().map(|l| &l[..1]).collect();
    assert_eq!(ranks, ["1", "2", "3", "4"]);

    // `--summary`, `--status`, and nothing left to `--resume`.
    for (flag, says) in [
        ("--summary", "4 finished"),
        ("--status", "4 trials: 4 finished"),
        ("--resume", "nothing to resume"),
    ] {
        let out = sweep(tmp.path()).arg(flag).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{flag}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(says),
            "{flag}: {}",
            text(&out)
        );
    }
}

#[test]
fn a_failing_trial_is_recorded_and_the_others_finish() {
    let tmp = tempfile::tempdir().unwrap();
    common::pretrain_tutorial(tmp.path());
    let dir = tmp.path().join("sw");
    let out = sweep(tmp.path())
        .arg(tutorial())
        .args([
            "training.max_epochs=1",
            "sweep.grid.domains.domain2.plugin=[no-such-plugin, random-vectors]",
            "sweep.grid.seed=[0, 1]",
            "--jobs=2",
            "--sweep-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 4 trial(s) failed"), "{}", text(&out));
    for trial in ["000", "001"] {
        let record = json(&dir.join(format!("state/{trial}.json")));
        assert_eq!(record["state"], "failed");
        let error = record["error"].as_str().unwrap();
        assert!(error.contains("no-such-plugin"), "{error}");
    }
    for trial in ["002", "003"] {
        assert_eq!(state(&dir, trial), "finished");
        assert_finished_run(&dir.join("trials").join(trial));
    }
    // Failed trials are listed last, with their error.
    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[1].contains(",finished,") && lines[2].contains(",finished,"));
    assert!(lines[3].starts_with("-,000,failed,") || lines[3].starts_with("-,001,failed,"));
    assert!(lines[4].contains("no-such-plugin"), "{csv}");
}

/// A stand-in for `shimmer run`: logs its arguments, writes a run folder
/// with `val/loss = seed / 10`, fails for `seed=$FAKE_FAIL_SEED`, and on a
/// first attempt with a `seed` listed in `$FAKE_SLOW_SEED` hangs until killed.
const FAKE_RUNNER: &str = r#"#!/bin/bash
set -eu
echo "$*" >> "$FAKE_LOG"
dir= seed=0 resume=no
while [ $# -gt 0 ]; do
  case "$1" in
    --run-dir) dir=$2; shift ;;
    --resume) dir=$2; resume=yes; shift ;;
    seed=*) seed=${1#seed=} ;;
  esac
  shift
done
mkdir -p "$dir/checkpoints"
echo $$ > "$dir/runner.pid"
if [ $resume = no ]; then echo "seed: $seed" > "$dir/config.yaml"; fi
seed=$(sed -n 's/^seed: //p' "$dir/config.yaml")
touch "$dir/events.out.tfevents.fake" "$dir/checkpoints/last.safetensors"
if [ "$seed" = "${FAKE_FAIL_SEED:-}" ]; then echo "error: seed $seed is cursed" >&2; exit 2; fi
if [[ " ${FAKE_SLOW_SEED:-} " == *" $seed "* ]] && [ $resume = no ]; then
  sleep 60 & echo $! > "$dir/sleep.pid"; wait
fi
touch "$dir/checkpoints/best.safetensors"
cat > "$dir/summary.json" <<JSON
{"status": "finished", "error": null, "monitor": "val/loss", "mode": "min",
 "best_value": 0.$seed, "best_step": 4, "steps": 4, "wall_time_s": 0.1,
 "metrics": {"val/loss": 0.$seed}}
JSON
"#;

fn fake_runner(dir: &Path) -> PathBuf {
    let path = dir.join("fake-run");
    std::fs::write(&path, FAKE_RUNNER).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process runs (a zombie waiting to be reaped does not).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_killed_sweep_takes_its_running_trials_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sw");
    let log = tmp.path().join("calls.log");
    let runner = fake_runner(tmp.path());
    let mut child = sweep(tmp.path())
        .arg(tutorial())
        .args(["sweep.grid.seed=[1, 2]", "--jobs=2", "--sweep-dir"])
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .env("FAKE_LOG", &log)
        .env("FAKE_SLOW_SEED", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.join("trials/001/sleep.pid");
    wait_for("trial 1 to hang", Duration::from_secs(60), || {
        pid_file.is_file()
    });
    let runner_pid = std::fs::read_to_string(dir.join("trials/001/runner.pid")).unwrap();
    let sleeper = std::fs::read_to_string(&pid_file).unwrap();
    assert!(alive(&runner_pid));
    // While it runs, nobody else may run trials in its folder.
    let out = sweep(tmp.path())
        .arg("--resume")
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .env("FAKE_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let in_use = format!(
        "sweep folder {} is in use (pid {})",
        dir.display(),
        child.id()
    );
    assert!(text(&out).contains(&in_use), "{}", text(&out));
    let out = sweep(tmp.path())
        .arg(tutorial())
        .args(["sweep.grid.seed=[1, 2]", "--sweep-dir"])
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    // SIGKILL: the launcher cannot stop anything itself.
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the orphaned trial to end", Duration::from_secs(5), || {
        !alive(&runner_pid)
    });
    // The stand-in's own `sleep` is not a trial; tidy it up.
    let _ = Command::new("kill").arg(sleeper.trim()).status();
    assert_eq!(state(&dir, "001"), "running", "nobody recorded the end");
    let out = sweep(tmp.path())
        .arg("--resume")
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .env("FAKE_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(state(&dir, "001"), "finished");
}

#[test]
fn a_sweep_resumes_on_the_config_it_started_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sw");
    let log = tmp.path().join("calls.log");
    let runner = fake_runner(tmp.path());
    let exp = tmp.path().join("exp.yaml");
    let yaml = format!(
        "extends: {}\nsweep: {{grid: {{seed: [1, 2]}}}}\ntraining: {{max_epochs: 40}}\n",
        tutorial().display()
    );
    std::fs::write(&exp, &yaml).unwrap();
    let mut child = sweep(tmp.path())
        .arg(&exp)
        .args(["--jobs=1", "--sweep-dir"])
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .env("FAKE_LOG", &log)
        .env("FAKE_SLOW_SEED", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.join("trials/000/sleep.pid");
    wait_for("trial 0 to hang", Duration::from_secs(60), || {
        pid_file.is_file()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let runner_pid = std::fs::read_to_string(dir.join("trials/000/runner.pid")).unwrap();
    wait_for("the orphaned trial to end", Duration::from_secs(5), || {
        !alive(&runner_pid)
    });
    let _ = Command::new("kill")
        .arg(std::fs::read_to_string(&pid_file).unwrap().trim())
        .status();
    // The experiment is edited before the resume: the trials still run
    // the config recorded at the start, and the resume says so.
    std::fs::write(&exp, yaml.replace("max_epochs: 40", "max_epochs: 300")).unwrap();
    let out = sweep(tmp.path())
        .arg("--resume")
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .env("FAKE_LOG", &log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("changed since the sweep started") && said.contains(exp.to_str().unwrap()),
        "{said}"
    );
    assert_eq!(state(&dir, "001"), "finished");
    let recorded = dir.join("configs/001.yaml");
    let config = std::fs::read_to_string(&recorded).unwrap();
    assert!(
        config.contains("max_epochs: 40") && config.contains("seed: 2"),
        "{config}"
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let trial = calls.lines().find(|l| l.contains("trials/001")).unwrap();
    assert!(
        trial.starts_with(&format!("run {} ", recorded.display())),
        "{trial}"
    );
}

#[test]
fn interrupted_sweep_resumes_only_unfinished_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sw");
    let log = tmp.path().join("calls.log");
    let runner = fake_runner(tmp.path());
    let child = sweep(tmp.path())
        .arg(tutorial())
        .args(["sweep.grid.seed=[1, 2, 3, 4, 5]", "--jobs=2", "--sweep-dir"])
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .env("FAKE_LOG", &log)
        .env("FAKE_SLOW_SEED", "3 5")
        .env("FAKE_FAIL_SEED", "4")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Trials 0, 1 finish, 3 fails, 2 and 4 hang: then only 2 and 4 are open.
    wait_for("trials 0, 1, 3 to end", Duration::from_secs(60), || {
        ["000", "001", "003"]
            .iter()
            .all(|t| matches!(state(&dir, t).as_str(), "finished" | "failed"))
            && ["002", "004"]
                .iter()
                .all(|t| dir.join(format!("trials/{t}/sleep.pid")).is_file())
    });
    // Ctrl-C.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "stops promptly");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--resume"),
        "{}",
        text(&out)
    );
    assert_eq!(state(&dir, "000"), "finished");
    assert_eq!(state(&dir, "001"), "finished");
    assert_eq!(state(&dir, "002"), "interrupted");
    assert_eq!(state(&dir, "003"), "failed");
    assert_eq!(state(&dir, "004"), "interrupted");
    // The hanging trial was stopped with everything it started.
    let sleeper = std::fs::read_to_string(dir.join("trials/002/sleep.pid")).unwrap();
    // Dead, or a zombie waiting for init to reap it.
    let running = || alive(&sleeper);
    let start = Instant::now();
    while running() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !running(),
        "the trial's own child {sleeper} is still running"
    );

    // Resume: only the unfinished trials run again, the interrupted one
    // from its run folder; the failed one is retried with its earlier
    // attempt kept aside.
    std::fs::write(&log, "").unwrap();
    let out = sweep(tmp.path())
        .arg("--resume")
        .arg(&dir)
        .env("SHIMMER_SWEEP_RUNNER", &runner)
        .env("FAKE_LOG", &log)
        .env("FAKE_SLOW_SEED", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("run --resume") && c.ends_with("trials/002"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.contains("seed=4") && c.ends_with("trials/003"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("run --resume") && c.ends_with("trials/004"))
    );
    assert!(dir.join("retired/003.1/config.yaml").is_file());
    for t in ["000", "001", "002", "003", "004"] {
        assert_eq!(state(&dir, t), "finished", "trial {t}");
    }
    let attempts = json(&dir.join("state/002.json"))["attempts"].clone();
    assert_eq!(attempts, 2);
    // Ranked by the fake val/loss = seed / 10.
    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let order: Vec<&str> = csv.lines().skip(1).map(|l| &l[2..5]).collect();
    assert_eq!(order, ["000", "001", "002", "003", "004"], "{csv}");
}

#[test]
fn bad_sweeps_fail_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&[], "has no `sweep:` section"),
        (&["sweep.gird.seed=[1]"], "gird"),
        (&["sweep.grid.seed=3"], "sweep.grid.seed"),
        (&["sweep.random.optim.lr={loguniform: [0.0, 1.0]}"], "> 0"),
        (
            &["sweep.grid.workspace.dim=[16, sixteen]"],
            "trial 1 of the sweep (workspace.dim=sixteen) is not a valid experiment",
        ),
    ];
    for (overrides, needle) in cases {
        let out = sweep(tmp.path())
            .arg(tutorial())
            .args(overrides)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{overrides:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(needle), "{overrides:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one paragraph: {stderr}"
        );
    }
    assert!(!tmp.path().join("runs").exists(), "nothing created");

    // An explicit sweep folder is never reused.
    let dir = tmp.path().join("taken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("x"), "").unwrap();
    let out = sweep(tmp.path())
        .arg(tutorial())
        .args(["sweep.grid.seed=[1]", "--sweep-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn dry_runs_print_trials_or_the_slurm_script_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = sweep(tmp.path())
        .arg(tutorial())
        .args(["sweep.grid.seed=[1, 2, 3]", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 trials in"), "{stdout}");
    assert!(stdout.contains("\n002  seed=3\n"), "{stdout}");

    let out = sweep(tmp.path())
        .arg(tutorial())
        .args([
            "sweep.grid.seed=[1, 2, 3, 4]",
            "sweep.launcher.slurm.partition=gpu",
            "--launcher=slurm",
            "--max-parallel=2",
            "--gpus=1",
            "--sbatch=--qos=short",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    for line in [
        "#!/bin/bash",
        "#SBATCH --array=0-3%2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus=1",
        "#SBATCH --qos=short",
    ] {
        assert!(script.lines().any(|l| l == line), "{line} in\n{script}");
    }
    assert!(script.contains("sweep --run-trial '"), "{script}");
    assert!(script.contains("\"$SLURM_ARRAY_TASK_ID\""), "{script}");
    assert!(!tmp.path().join("runs").exists(), "nothing created");
}

/// What TensorBoard's HParams tab shows of the sweep in `dir`, asked
/// through its HTTP API: the swept keys as differing columns, and per
/// trial its values, its best monitored value and test loss as in its
/// `summary.json`.
fn assert_hparams_tab_shows_the_sweep(dir: &Path, trials: &[Value]) {
    let out = Command::new(common::test_python())
        .arg(common::workspace_root().join("tests/tb_hparams_http.py"))
        .arg(dir)
        .arg(trials.len().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let tab: Value = serde_json::from_slice(&out.stdout).unwrap();
    let infos = tab["experiment"]["hparamInfos"].as_array().unwrap();
    let mut names: Vec<&str> = infos.iter().map(|i| i["name"].as_str().unwrap()).collect();
    names.sort();
    let manifest = json(&dir.join("sweep.json"));
    let mut swept: Vec<&str> = manifest["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    swept.sort();
    assert_eq!(names, swept, "the columns are the swept keys");
    assert!(infos.iter().all(|i| i["differs"] == true), "{infos:?}");
    let metrics: Vec<&str> = tab["experiment"]["metricInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"]["tag"].as_str().unwrap())
        .collect();
    assert_eq!(metrics[0], "best/val/loss", "{metrics:?}");
    assert!(metrics.contains(&"test/loss"), "{metrics:?}");
    let groups = tab["session_groups"]["sessionGroups"].as_array().unwrap();
    assert_eq!(groups.len(), trials.len());
    for group in groups {
        let name = group["name"].as_str().unwrap();
        let index: usize = name.trim_start_matches("trials/").parse().unwrap();
        let summary = json(&dir.join(name).join("summary.json"));
        let metric = |tag: &str| {
            group["metricValues"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"]["tag"] == tag)
                .and_then(|m| m["value"].as_f64())
                .unwrap_or_else(|| panic!("{name}: no {tag} in {group}"))
        };
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        let best = summary["best_value"].as_f64().unwrap();
        assert!(
            close(metric("best/val/loss"), best),
            "{name}: {group} vs {best}"
        );
        let test = summary["metrics"]["test/loss"].as_f64().unwrap();
        assert!(
            close(metric("test/loss"), test),
            "{name}: {group} vs {test}"
        );
        for (key, value) in trials[index]["values"].as_object().unwrap() {
            let yaml: f64 = value.as_str().unwrap().parse().unwrap();
            let shown = group["hparams"][key].as_f64().unwrap();
            assert!(close(shown, yaml), "{name}: {key} {shown} vs {yaml}");
        }
        assert_eq!(group["sessions"][0]["status"], "STATUS_SUCCESS");
    }
}

#[test]
fn a_sweep_stopped_by_sigterm_or_sighup_exits_with_that_signal() {
    for (signal, code) in [("-TERM", 143), ("-HUP", 129)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sw");
        let runner = fake_runner(tmp.path());
        let child = sweep(tmp.path())
            .arg(tutorial())
            .args(["sweep.grid.seed=[1]", "--sweep-dir"])
            .arg(&dir)
            .env("SHIMMER_SWEEP_RUNNER", &runner)
            .env("FAKE_LOG", tmp.path().join("calls.log"))
            .env("FAKE_SLOW_SEED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("trial 0 to hang", Duration::from_secs(60), || {
            dir.join("trials/000/sleep.pid").is_file()
        });
        let sleeper = std::fs::read_to_string(dir.join("trials/000/sleep.pid")).unwrap();
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        let out = child.wait_with_output().unwrap();
        let _ = Command::new("kill").arg(sleeper.trim()).status();
        assert_eq!(out.status.code(), Some(code), "{signal}: {}", text(&out));
        assert_eq!(state(&dir, "000"), "interrupted");
    }
}
