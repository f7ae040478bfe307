//! End-to-end: the trainer's policies as users configure them, on the
//! tutorial through the real plugin: early stopping stops at the patience
//! point with the best checkpoint of what it saw; `save_top_k` keeps
//! exactly the k best, listed in `summary.json`; `keep_every_n_steps`
//! keeps a history.

use crate::run::{logged_scalars, run_args, stderr, summary, tutorial_args};
use safetensors::SafeTensors;
use std::path::Path;

/// `trainer.global_step` stored in a checkpoint.
fn checkpoint_step(path: &Path) -> i64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let t = st
        .tensor("trainer.global_step")
        .expect("a training checkpoint");
    i64::from_le_bytes(t.data()[..8].try_into().expect("an i64"))
}

/// `(step, value)` of every logged `val/loss`, in order.
fn val_losses(dir: &Path) -> Vec<(i64, f32)> {
    logged_scalars(dir)
        .into_iter()
        .filter(|(_, tag, _)| tag == "val/loss")
        .map(|(s, _, v)| (s, v))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

#[test]
fn early_stopping_stops_at_the_patience_point_and_keeps_the_best_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // A `min_delta` no change reaches: the first validation sets the best,
    // the next two do not improve on it, and the run stops at the third.
    let out = run_args(&tutorial_args(
        &dir,
        &[
            "training.max_epochs=null",
            "training.max_steps=60",
            "training.val_every_n_steps=5",
            "training.val_every_n_epochs=0",
            "training.early_stopping={patience: 2, min_delta: 1000}",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&dir);
    assert_eq!(s["status"], "finished", "{s}");
    assert_eq!(s["steps"], 15, "{s}");
    assert_eq!(s["stopped_at_step"], 15, "{s}");
    let reason = s["stop_reason"].as_str().expect("a stop reason");
    assert!(
        reason.contains("early stopping") && reason.contains("val/loss"),
        "{reason}"
    );
    assert!(stderr(&out).contains(reason), "{}", stderr(&out));
    let seen = val_losses(&dir);
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [5, 10, 15],
        "validations at 5, 10 and 15 only"
    );
    let (best_step, best) = seen
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert_eq!(s["best_step"], best_step, "{s}");
    assert!(
        close(s["best_value"].as_f64().unwrap(), f64::from(best)),
        "{s}"
    );
    assert_eq!(
        checkpoint_step(&dir.join("checkpoints/best.safetensors")),
        best_step
    );
    // The best checkpoint was then validated and tested.
    assert!(s["metrics"]["best/val/loss"].is_number(), "{s}");
}

#[test]
fn early_stopping_monitor_must_be_a_validation_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_args(&tutorial_args(
        &tmp.path().join("run"),
        &[
            "training.max_epochs=1",
            "training.early_stopping={monitor: val/nothing}",
        ],
    ));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("val/nothing") && err.contains("val/loss"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn save_top_k_keeps_exactly_the_k_best_and_lists_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = run_args(&tutorial_args(
        &dir,
        &[
            "training.max_epochs=null",
            "training.max_steps=40",
            "training.val_every_n_steps=5",
            "training.val_every_n_epochs=0",
            "training.checkpoints={save_top_k: 3, keep_every_n_steps: 20}",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut seen = val_losses(&dir);
    assert_eq!(seen.len(), 8, "{seen:?}");
    seen.sort_by(|a, b| a.1.total_cmp(&b.1));
    let best3: Vec<i64> = seen[..3].iter().map(|(s, _)| *s).collect();

    let s = summary(&dir);
    let top = s["top_k"].as_array().expect("top_k in summary.json");
    assert_eq!(top.len(), 3, "{s}");
    for (kept, (step, value)) in top.iter().zip(&seen[..3]) {
        assert_eq!(kept["step"], *step, "{s}");
        assert!(
            close(kept["value"].as_f64().unwrap(), f64::from(*value)),
            "{s}"
        );
        let file = dir.join(kept["file"].as_str().unwrap());
        assert_eq!(checkpoint_step(&file), *step, "{}", file.display());
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want: Vec<String> = best3
        .iter()
        .map(|s| format!("top-step{s}.safetensors"))
        .chain(["best.safetensors", "last.safetensors"].map(String::from))
        .chain(["step-20.safetensors", "step-40.safetensors"].map(String::from))
        .collect();
    want.sort();
    assert_eq!(files, want);
    assert_eq!(
        checkpoint_step(&dir.join("checkpoints/best.safetensors")),
        best3[0]
    );
    assert_eq!(s["best_step"], best3[0], "{s}");
}
