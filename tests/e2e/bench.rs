//! `shimmer bench` end to end: its JSON report, the fused CPU kernels
//! against candle's composed ops over a whole training run, and the
//! refusal of bf16 on the CPU.

use crate::common;

use serde_json::Value;
use std::path::Path;

/// Runs `shimmer bench` on the W1 workload and returns its JSON report.
fn bench_w1(dir: &Path, kernels: &str, extra: &[&str]) -> Value {
    let json = dir.join(format!("w1-{kernels}.json"));
    let out = common::shimmer()
        .current_dir(common::workspace_root())
        .env("SHIMMER_CPU_KERNELS", kernels)
        .env("RAYON_NUM_THREADS", "2")
        .args([
            "bench",
            "experiments/bench/w1.yaml",
            "--steps",
            "40",
            "--warmup",
            "2",
        ])
        .args(extra)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn fused_kernels_train_like_composed_ops() {
    let dir = tempfile::tempdir().unwrap();
    let fused = bench_w1(dir.path(), "on", &[]);
    let composed = bench_w1(dir.path(), "off", &[]);
    assert_ne!(fused["cpu_kernels"], "off");
    assert_eq!(composed["cpu_kernels"], "off");
    for r in [&fused, &composed] {
        assert_eq!(r["implementation"], "shimmer-rs");
        assert_eq!(r["precision"], "f32");
        assert!(r["cpu_kernels"].is_string());
        assert_eq!(r["samples_per_step"], 96);
        assert_eq!(r["threads"], 2);
        let seconds = r["seconds"].as_f64().unwrap();
        let phases: f64 = ["forward", "backward", "optimizer"]
            .iter()
            .map(|p| r["phases_s"][p].as_f64().unwrap())
            .sum();
        assert!(
            phases > 0.0 && phases <= seconds * 1.001,
            "{phases} vs {seconds}"
        );
    }
    // 42 AdamW steps on the same batches: the losses agree to float32
    // rounding accumulated over the run. (AdamW is blind to a gradient's
    // scale, so this catches wrong directions; the kernels' unit tests
    // compare gradients value by value.)
    let (a, b) = (
        fused["last_loss"].as_f64().unwrap(),
        composed["last_loss"].as_f64().unwrap(),
    );
    assert!(
        a.is_finite() && (a - b).abs() <= 1e-4 * b.abs(),
        "fused {a}, composed {b}"
    );
    assert_ne!(a, 0.0);
}

#[test]
fn bf16_on_the_cpu_is_one_clear_error() {
    let out = common::shimmer()
        .current_dir(common::workspace_root())
        .args([
            "bench",
            "experiments/bench/w1.yaml",
            "precision=bf16",
            "--steps",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("precision: bf16") && err.contains("CUDA"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
