//! End-to-end: `shimmer run` on the shipped tutorial through the real
//! plugin and binary; TensorBoard reads back what it logged; a killed run
//! resumes to the same weights; bad input gives one clear error.

use crate::common;

use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn tutorial() -> PathBuf {
    common::workspace_root().join("experiments/tutorial/gw.yaml")
}

/// Pretrains the tutorial's two domain autoencoders (once per test process,
/// into the target folder) and returns the overrides that point the GW
/// experiment at them.
pub(crate) fn pretrained() -> &'static [String] {
    static OVERRIDES: OnceLock<Vec<String>> = OnceLock::new();
    OVERRIDES.get_or_init(|| {
        let dir = common::target_dir().join("e2e-pretrained");
        let _ = std::fs::remove_dir_all(&dir);
        (1..=2)
            .map(|d| {
                let weights = dir.join(format!("domain{d}.safetensors"));
                let exp = common::workspace_root()
                    .join(format!("experiments/tutorial/pretrain_domain{d}.yaml"));
                let out = run(&[
                    exp.to_str().unwrap(),
                    "--run-dir",
                    dir.join(format!("run{d}")).to_str().unwrap(),
                    &format!("pretrain.save_to={}", weights.display()),
                ]);
                assert!(out.status.success(), "{}", stderr(&out));
                assert!(weights.is_file());
                format!("domains.domain{d}.model.checkpoint={}", weights.display())
            })
            .collect()
    })
}

/// Arguments of a tutorial GW run in `dir`, on the pretrained domains.
pub(crate) fn tutorial_args<'a>(dir: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut args = vec![
        tutorial().display().to_string(),
        "--run-dir".to_string(),
        dir.display().to_string(),
    ];
    args.extend(pretrained().iter().cloned());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub(crate) fn run_args(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

fn run(args: &[&str]) -> Output {
    common::shimmer()
        .arg("run")
        .args(args)
        .current_dir(common::workspace_root())
        .output()
        .expect("run shimmer")
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary is JSON")
}

/// `(step, tag, value)` of every scalar in `scalars.jsonl`.
pub(crate) fn logged_scalars(dir: &Path) -> Vec<(i64, String, f32)> {
    std::fs::read_to_string(dir.join("scalars.jsonl"))
        .expect("scalars.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v.get("tag").is_some())
        .map(|v| {
            (
                v["step"].as_i64().unwrap(),
                v["tag"].as_str().unwrap().to_string(),
                v["value"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

#[test]
fn tutorial_trains_and_tensorboard_reads_every_scalar() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(&dir, &[]));
    assert!(out.status.success(), "{}", stderr(&out));

    let s = summary(&dir);
    assert_eq!(s["status"], "finished");
    assert_eq!(s["steps"], 32);
    assert_eq!(s["epochs"], 4);
    for f in [
        "config.yaml",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(s["metrics"]["test/loss"].as_f64().is_some(), "{s}");

    let logged = logged_scalars(&dir);
    let train_loss: Vec<f32> = logged
        .iter()
        .filter(|(_, t, _)| t == "train/loss")
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(train_loss.len(), 32, "log_every_n_steps is 1");
    let first: f32 = train_loss[..8].iter().sum::<f32>() / 8.0;
    let last: f32 = train_loss[24..].iter().sum::<f32>() / 8.0;
    assert!(
        last < first,
        "train/loss did not decrease: first epoch {first}, last {last}"
    );

    // TensorBoard's own reader sees every scalar, at its step, bit for bit.
    let read = common::read_tensorboard(&dir);
    let scalars = read["scalars"].as_object().expect("scalars");
    let mut expected_tags: Vec<&str> = logged.iter().map(|(_, t, _)| t.as_str()).collect();
    expected_tags.sort();
    expected_tags.dedup();
    let mut read_tags: Vec<&str> = scalars.keys().map(String::as_str).collect();
    read_tags.sort();
    assert_eq!(read_tags, expected_tags);
    for tag in &expected_tags {
        let want: Vec<(i64, f32)> = logged
            .iter()
            .filter(|(_, t, _)| t == tag)
            .map(|(s, _, v)| (*s, *v))
            .collect();
        let got: Vec<(i64, f32)> = scalars[*tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(got, want, "tag {tag}");
    }
    for tag in [
        "train/loss",
        "train/demi_cycles",
        "train/translation_domain1_to_domain2",
        "val/loss",
        "val/contrastive_domain1_and_domain2",
        "lr-AdamW",
    ] {
        assert!(scalars.contains_key(tag), "{tag} not logged");
    }
    assert!(
        read["text"]["config"][0][1][0]
            .as_str()
            .unwrap()
            .contains("name: tutorial")
    );
    let hp = &read["hparams"]["_hparams_/session_start_info"]["session_start_info"]["hparams"];
    assert_eq!(hp["optim.lr"].as_f64(), Some(1e-3));
    assert_eq!(hp["workspace.flavour"].as_str(), Some("two_domains"));
}

fn weights(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        // Wall time and where the logs stood differ between any two runs.
        .filter(|(n, _)| !n.starts_with("trainer.wall_time") && !n.starts_with("trainer.log."))
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    out.sort();
    out
}

/// The last checkpoints of two runs hold the same bits (wall time and log
/// positions aside).
fn assert_same_last_weights(a: &Path, b: &Path, after: &str) {
    let a = weights(&a.join("checkpoints/last.safetensors"));
    let b = weights(&b.join("checkpoints/last.safetensors"));
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(da == db, "tensor {na} differs after {after}");
    }
}

#[test]
fn killed_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let long = [
        "training.max_epochs=150",
        "training.checkpoint_every_n_steps=7",
        "training.val_every_n_epochs=10",
        "training.log_every_n_steps=25",
    ];
    let straight = tmp.path().join("straight");
    let out = run_args(&tutorial_args(&straight, &long));
    assert!(out.status.success(), "{}", stderr(&out));

    let killed = tmp.path().join("killed");
    let mut child = common::shimmer()
        .arg("run")
        .args(tutorial_args(&killed, &long))
        .current_dir(common::workspace_root())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let last = killed.join("checkpoints/last.safetensors");
    let started = Instant::now();
    while !last.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Killed as soon as a periodic checkpoint exists (1 200 steps remain:
    // it cannot have finished), so the resume starts mid-run.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = summary(&killed);
    assert_eq!(
        at_kill["status"], "running",
        "the run ended before it was killed"
    );

    let out = run(&["--resume", killed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming at step"),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary(&killed)["steps"], summary(&straight)["steps"]);

    assert_same_last_weights(&straight, &killed, "kill and resume");
}

/// How often each `(tag, step)` was logged.
type LogCounts = BTreeMap<(String, i64), usize>;

/// `(tag, step)` of every scalar TensorBoard's reader finds in `dir`, and
/// of every line of `scalars.jsonl`, each with how often it appears.
fn logged_once_each(dir: &Path) -> (LogCounts, LogCounts) {
    let mut tb = BTreeMap::new();
    let read = common::read_tensorboard(dir);
    for (tag, points) in read["scalars"].as_object().unwrap() {
        for p in points.as_array().unwrap() {
            *tb.entry((tag.clone(), p[0].as_i64().unwrap())).or_insert(0) += 1;
        }
    }
    let mut jsonl = BTreeMap::new();
    for (step, tag, _) in logged_scalars(dir) {
        *jsonl.entry((tag, step)).or_insert(0) += 1;
    }
    (tb, jsonl)
}

#[test]
fn every_step_is_logged_once_across_kills_and_resumes() {
    // Cadences that mostly miss each other.
    logged_once_across_kills(&[
        "training.max_epochs=150",
        "training.checkpoint_every_n_steps=7",
        "training.val_every_n_epochs=10",
        "training.log_every_n_steps=3",
    ]);
}

#[test]
fn every_step_is_logged_once_across_kills_when_cadences_coincide() {
    // Eight steps an epoch: validation by steps and by epochs, checkpoints
    // and logging all on the same steps.
    logged_once_across_kills(&[
        "training.max_epochs=150",
        "training.checkpoint_every_n_steps=8",
        "training.val_every_n_steps=8",
        "training.val_every_n_epochs=1",
        "training.log_every_n_steps=1",
    ]);
}

/// Trains the tutorial with `long` straight, and again killed three times
/// (each time just after a checkpoint of its own) and resumed: both logs
/// hold every `(tag, step)` once, as the straight run's do.
fn logged_once_across_kills(long: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let out = run_args(&tutorial_args(&straight, long));
    assert!(out.status.success(), "{}", stderr(&out));

    let killed = tmp.path().join("killed");
    let last = killed.join("checkpoints/last.safetensors");
    let k = killed.to_str().unwrap();
    let mut seen = None;
    for attempt in 0..3 {
        let mut cmd = common::shimmer();
        cmd.arg("run");
        if attempt == 0 {
            cmd.args(tutorial_args(&killed, long));
        } else {
            cmd.args(["--resume", k]);
        }
        let mut child = cmd
            .current_dir(common::workspace_root())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed once it has written a checkpoint of its own.
        let started = Instant::now();
        loop {
            let now = std::fs::metadata(&last).and_then(|m| m.modified()).ok();
            if now.is_some() && now != seen {
                seen = now;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint appeared"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(30 * attempt));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            summary(&killed)["status"],
            "running",
            "ended before the kill"
        );
    }
    // A disk that filled mid-line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(killed.join("scalars.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"step\": 12, \"ta").unwrap();
    let out = run(&["--resume", k]);
    assert!(out.status.success(), "{}", stderr(&out));

    for line in std::fs::read_to_string(killed.join("scalars.jsonl"))
        .unwrap()
        .lines()
    {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "{line}"
        );
    }
    let (tb_straight, jsonl_straight) = logged_once_each(&straight);
    let (tb_killed, jsonl_killed) = logged_once_each(&killed);
    assert!(tb_straight.values().all(|&n| n == 1));
    assert_eq!(tb_killed, tb_straight, "TensorBoard's reader");
    assert_eq!(jsonl_killed, jsonl_straight, "scalars.jsonl");
    assert_same_last_weights(&straight, &killed, "three kills and resumes");
}

#[test]
fn sigterm_saves_a_checkpoint_at_the_step_and_resume_matches_a_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let long = [
        "training.max_epochs=60",
        "training.val_every_n_epochs=20",
        "training.log_every_n_steps=1",
    ];
    let straight = tmp.path().join("straight");
    let out = run_args(&tutorial_args(&straight, &long));
    assert!(out.status.success(), "{}", stderr(&out));

    let stopped = tmp.path().join("stopped");
    let child = common::shimmer()
        .arg("run")
        .args(tutorial_args(&stopped, &long))
        .current_dir(common::workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // No checkpoint is due before the end: what is saved comes from the stop.
    let started = Instant::now();
    let scalars = stopped.join("scalars.jsonl");
    while std::fs::read_to_string(&scalars).map_or(true, |s| !s.contains("train/")) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no step was logged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Twice, as under Slurm (from Slurm and from the sweep launcher): the
    // second SIGTERM must not cut the checkpoint short.
    let pid = child.id().to_string();
    for _ in 0..2 {
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }
    let stop_asked = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        stop_asked.elapsed() < Duration::from_secs(10),
        "stops promptly"
    );
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stopped by SIGTERM after step") && err.contains("shimmer run --resume"),
        "{err}"
    );
    let at_stop = summary(&stopped);
    assert_eq!(at_stop["status"], "interrupted", "{at_stop}");
    let steps = at_stop["steps"].as_u64().unwrap();
    assert!(steps > 0 && steps < summary(&straight)["steps"].as_u64().unwrap());
    assert!(stopped.join("checkpoints/last.safetensors").is_file());

    let out = run(&["--resume", stopped.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("resuming at step {steps} ")),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary(&stopped)["status"], "finished");
    assert_same_last_weights(&straight, &stopped, "stop and resume");
    // TensorBoard's HParams tab sees it finished, not failed.
    let read = common::read_tensorboard(&stopped);
    let end = &read["hparams"]["_hparams_/session_end_info"]["session_end_info"];
    assert_eq!(end["status"], "STATUS_SUCCESS", "{read}");
}

pub(crate) fn assert_clear_failure(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "should fail: {err}");
    assert_ne!(out.status.code(), None, "killed by a signal: {err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: "),
        "last line is not the error: {err}"
    );
    for n in needles {
        assert!(last.contains(n), "`{n}` missing from: {last}");
    }
    for noise in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!err.contains(noise), "{err}");
    }
}

fn bad_run(extra: &[&str]) -> (tempfile::TempDir, Output) {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_args(&tutorial_args(&tmp.path().join("run"), extra));
    (tmp, out)
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(tutorial())
        .unwrap()
        .replace("  dim: 16\n", "  dims: 16\n");
    let file = tmp.path().join("typo.yaml");
    std::fs::write(&file, text).unwrap();
    let base = common::workspace_root().join("experiments/tutorial/domains.yaml");
    std::fs::copy(base, tmp.path().join("domains.yaml")).unwrap();
    let out = run(&[
        file.to_str().unwrap(),
        "--run-dir",
        tmp.path().join("r").to_str().unwrap(),
    ]);
    assert_clear_failure(
        &out,
        &[
            "typo.yaml:",
            "workspace.dims",
            "unknown field `dims`",
            "expected one of",
        ],
    );
    assert!(
        !tmp.path().join("r").exists(),
        "no run folder for a bad config"
    );
}

#[test]
fn wrong_type_names_the_override() {
    let (_t, out) = bad_run(&["optim.lr=fast"]);
    assert_clear_failure(&out, &["optim.lr=fast", "invalid type"]);
}

#[test]
fn missing_plugin_is_named() {
    let (_t, out) = bad_run(&["domains.domain1.plugin=no-such-plugin"]);
    assert_clear_failure(
        &out,
        &["domain `domain1`", "plugin `no-such-plugin` not found"],
    );
}

#[test]
fn domain_kind_not_in_plugin_is_named() {
    let (_t, out) = bad_run(&["domains.domain2.kind=images"]);
    assert_clear_failure(
        &out,
        &["domain `domain2`", "no domain kind `images`", "vectors"],
    );
}

#[test]
fn dims_that_do_not_match_are_named() {
    let (_t, out) = bad_run(&["domains.domain1.latent_dim=9"]);
    assert_clear_failure(&out, &["domain `domain1`", "latent_dim: 9", "8"]);
}

#[test]
fn checkpoint_with_other_dims_is_named() {
    // domain2 (16-d) pointed at domain1's (8-d) pretrained autoencoder.
    let d1 = pretrained()[0].split_once('=').unwrap().1.to_string();
    let wrong = format!("domains.domain2.model.checkpoint={d1}");
    let (_t, out) = bad_run(&[&wrong]);
    assert_clear_failure(&out, &["domain `domain2`", "input_dim 8", "input_dim 16"]);
}

#[test]
fn pretraining_exports_the_best_domain_model() {
    pretrained();
    let dir = common::target_dir().join("e2e-pretrained");
    let s = summary(&dir.join("run1"));
    assert_eq!(s["status"], "finished");
    let recon = s["metrics"]["test/reconstruction_loss"].as_f64().unwrap();
    assert!(
        recon < 0.05,
        "the 8-d autoencoder should reconstruct well: {recon}"
    );
    let bytes = std::fs::read(dir.join("domain1.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "decoder.bias",
            "decoder.weight",
            "encoder.bias",
            "encoder.weight"
        ]
    );
    assert_eq!(st.tensor("encoder.weight").unwrap().shape(), [32, 8]);
}

#[test]
fn a_training_set_without_a_full_batch_is_an_error() {
    // 256 items per group, incomplete batches of 512 dropped: no batch at all.
    let (_t, out) = bad_run(&["data.batch_size=512", "training.max_steps=10"]);
    assert_clear_failure(&out, &["yields no batch", "lower batch_size"]);
}

#[test]
fn unwritable_run_folder_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let runs = format!("training.runs_dir={}", file.display());
    let mut args = tutorial_args(tmp.path(), &[&runs]);
    args.drain(1..3); // no --run-dir: the run folder goes under runs_dir
    let out = run_args(&args);
    assert_clear_failure(&out, &["cannot create run folder"]);
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("nan.yaml");
    std::fs::write(
        &exp,
        "name: nan\n\
         domains:\n  \
           a: { plugin: faulty-plugin, config: { dim: 4, items: 64, nan_on: 40 } }\n  \
           b: { plugin: random-vectors, config: { dim: 3, train: 64, val: 64, test: 64 } }\n\
         workspace: { flavour: two_domains, dim: 4 }\n\
         data:\n  batch_size: 8\n  shuffle: false\n  workers: 1\n  \
           groups: [ { domains: [a, b] }, { domains: [a] }, { domains: [b] } ]\n\
         training: { max_epochs: 2, checkpoint_every_n_steps: 1 }\n",
    )
    .unwrap();
    let dir = tmp.path().join("run");
    let out = run(&[exp.to_str().unwrap(), "--run-dir", dir.to_str().unwrap()]);
    assert_clear_failure(
        &out,
        &["loss became NaN at step 5", "last good checkpoint is kept"],
    );
    assert_eq!(out.status.code(), Some(3), "a NaN stop has its own status");
    let s = summary(&dir);
    assert_eq!(s["status"], "failed");
    assert!(s["error"].as_str().unwrap().contains("NaN"));
    // The kept checkpoint is the one after step 5 and holds finite weights.
    let bytes = std::fs::read(dir.join("checkpoints/last.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let step = st.tensor("trainer.global_step").unwrap();
    assert_eq!(i64::from_le_bytes(step.data().try_into().unwrap()), 5);
    for (name, t) in st.tensors() {
        if name.starts_with("gw_mod.") {
            let finite = t
                .data()
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes(b.try_into().unwrap()).is_finite());
            assert!(finite, "{name} is not finite");
        }
    }
}

#[test]
fn fast_dev_run_and_validate_work_on_the_tutorial() {
    let (t, out) = bad_run(&["--fast-dev-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Marked, and out of TensorBoard's sight (no event file, no HParams).
    let run = t.path().join("run");
    assert_eq!(summary(&run)["fast_dev_run"], true);
    let names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("events.out.tfevents")),
        "{names:?}"
    );
    assert!(!logged_scalars(&run).is_empty());
    // Without --run-dir it lands apart from the runs it checks.
    let runs = tempfile::tempdir().unwrap();
    let mut args = vec![
        tutorial().display().to_string(),
        "--fast-dev-run".to_string(),
    ];
    args.extend(pretrained().iter().cloned());
    args.push(format!("training.runs_dir={}", runs.path().display()));
    let out = run_args(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let apart = runs.path().join("tutorial/fast-dev-run");
    assert_eq!(
        std::fs::read_dir(&apart).unwrap().count(),
        1,
        "{}",
        apart.display()
    );
    let out = Command::new(common::build_all().join("shimmer"))
        .args(["validate", tutorial().to_str().unwrap()])
        .args(pretrained())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("8 batches per epoch, 32 steps"), "{text}");
    assert!(text.contains("device       cpu, f32, "), "{text}");
}

#[test]
fn config_prints_every_default_and_a_run_records_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(&dir, &["training.max_epochs=1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut args = vec!["config".to_string(), tutorial().display().to_string()];
    args.extend(pretrained().iter().cloned());
    args.push("training.max_epochs=1".to_string());
    let out = common::shimmer()
        .args(&args)
        .current_dir(common::workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    for default in [
        "drop_last: true",
        "pct_start: 0.3",
        "- 0.999",
        "save_top_k: 1",
    ] {
        assert!(printed.contains(default), "{default} missing:\n{printed}");
    }
    let recorded = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    assert_eq!(recorded, printed);

    // Hydra's habits: delete an inherited key, add a new one.
    let sweep = common::workspace_root().join("experiments/tutorial/sweep.yaml");
    let out = common::shimmer()
        .args(["config", sweep.to_str().unwrap(), "~sweep", "+vars.extra=3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("sweep: null") && printed.contains("extra: 3"),
        "{printed}"
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = common::shimmer()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("shimmer") && script.contains("resume"),
            "{shell}"
        );
    }
}

#[test]
fn export_writes_shimmers_state_dict_that_numpy_recomputes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(&dir, &["training.max_epochs=2"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let d = dir.to_str().unwrap();
    let shimmer = |args: &[&str]| {
        let out = common::shimmer()
            .args(args)
            .current_dir(common::workspace_root())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let said = shimmer(&["export", d]);
    let export = dir.join("shimmer-state-dict.safetensors");
    assert!(said.contains("73 tensors"), "{said}");
    let predictions = dir.join("predictions.safetensors");
    shimmer(&["predict", d, "--out", predictions.to_str().unwrap()]);
    let mut check = Command::new(common::test_python());
    check
        .arg(common::workspace_root().join("tests/export_check.py"))
        .arg(&export)
        .arg(dir.join("checkpoints/best.safetensors"))
        .arg(&predictions);
    for (d, o) in ["domain1", "domain2"].iter().zip(pretrained()) {
        check.arg(format!("{d}={}", o.split_once('=').unwrap().1));
    }
    let out = check.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    // Another checkpoint, another file.
    let last = tmp.path().join("last.safetensors");
    shimmer(&[
        "export",
        d,
        "--checkpoint",
        "last",
        "--out",
        last.to_str().unwrap(),
    ]);
    assert!(last.is_file());
}

/// `(tag, step)` of each line of `scalars.jsonl`'s first `len` bytes.
fn jsonl_entries(text: &str) -> Vec<(String, i64)> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v.get("tag").is_some())
        .map(|v| {
            (
                v["tag"].as_str().unwrap().to_string(),
                v["step"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// One integer entry of a checkpoint.
fn checkpoint_int(path: &Path, name: &str) -> i64 {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let data = t.data();
    match t.dtype() {
        safetensors::Dtype::I64 => i64::from_le_bytes(data[..8].try_into().unwrap()),
        safetensors::Dtype::U32 => i64::from(u32::from_le_bytes(data[..4].try_into().unwrap())),
        other => panic!("{name} in {}: {other:?}", path.display()),
    }
}

/// Whatever the cadences of validation, logging and checkpoints, and
/// whether they fall on the same step or not, every checkpoint (what a
/// kill -9 resumes from) holds every scalar logged before its step, and
/// nothing after; each `(tag, step)` is logged once.
#[test]
fn every_checkpoint_holds_every_step_logged_before_it() {
    let cadences: [&[&str]; 2] = [
        // Eight steps an epoch: validation by steps and by epochs on the
        // same steps, checkpoints on them too, every step logged.
        &[
            "training.val_every_n_steps=8",
            "training.val_every_n_epochs=1",
            "training.checkpoint_every_n_steps=4",
            "training.log_every_n_steps=1",
        ],
        // Cadences that mostly miss each other.
        &[
            "training.val_every_n_steps=5",
            "training.val_every_n_epochs=2",
            "training.checkpoint_every_n_steps=7",
            "training.log_every_n_steps=3",
        ],
    ];
    for cadence in cadences {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let mut extra = vec![
            "training.max_epochs=3",
            "training.checkpoints.save_top_k=50",
            "training.checkpoints.keep_every_n_steps=1",
        ];
        extra.extend_from_slice(cadence);
        let out = run_args(&tutorial_args(&dir, &extra));
        assert!(out.status.success(), "{cadence:?}: {}", stderr(&out));
        let text = std::fs::read_to_string(dir.join("scalars.jsonl")).unwrap();
        let full = jsonl_entries(&text);
        let mut counts = BTreeMap::new();
        for e in &full {
            *counts.entry(e.clone()).or_insert(0) += 1;
        }
        assert!(
            counts.values().all(|&n| n == 1),
            "{cadence:?}: logged twice: {:?}",
            counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
        let mut checked = 0;
        for entry in std::fs::read_dir(dir.join("checkpoints")).unwrap() {
            let path = entry.unwrap().path();
            let step = checkpoint_int(&path, "trainer.global_step");
            let len = checkpoint_int(&path, "trainer.log.jsonl_len") as usize;
            let held = jsonl_entries(&text[..len]);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for e in full.iter().filter(|(_, s)| *s < step) {
                assert!(
                    held.contains(e),
                    "{cadence:?}: {name} (step {step}) lacks {e:?}"
                );
            }
            for (tag, s) in &held {
                assert!(
                    *s < step || (*s == step && tag.starts_with("val/")),
                    "{cadence:?}: {name} (step {step}) holds {tag} at step {s}"
                );
            }
            checked += 1;
        }
        assert!(checked > 20, "{cadence:?}: {checked} checkpoints");
    }
}

/// A finished run resumed again says so and changes nothing: no second
/// final validation in its logs.
#[test]
fn resuming_a_finished_run_says_it_is_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(
        &dir,
        &["training.max_epochs=1", "optim.scheduler.total_steps=16"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(dir.join("scalars.jsonl")).unwrap();
    let last = std::fs::read(dir.join("checkpoints/last.safetensors")).unwrap();
    for _ in 0..2 {
        let out = run(&["--resume", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("is finished (8 of 8 steps): nothing to resume"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read(dir.join("scalars.jsonl")).unwrap(), before);
    assert_eq!(
        std::fs::read(dir.join("checkpoints/last.safetensors")).unwrap(),
        last
    );
    assert_eq!(summary(&dir)["status"], "finished");
    // Trained longer, it goes on.
    let out = run(&["--resume", dir.to_str().unwrap(), "training.max_epochs=2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary(&dir)["steps"], 16);
}

/// A run whose final summary cannot be written has failed after training
/// (exit 1), not been refused as bad input.
#[test]
fn a_final_summary_that_cannot_be_written_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut child = common::shimmer()
        .arg("run")
        .args(tutorial_args(&dir, &["training.max_epochs=400"]))
        .current_dir(common::workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !dir.join("checkpoints/last.safetensors").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Neither a rename nor a write in place can replace a folder.
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    std::fs::create_dir_all(dir.join("summary.json/blocked")).unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error:") && last.contains("cannot write the run summary"),
        "{err}"
    );
}
